package redis

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
)

// A user's identities are listed in its ui: set (v1 users, and every user
// below v3) and in a v2 user record's identity list; readers take both and
// re-check each identity's owner.

// Identities returns the user's identities, oldest first; none is not an
// error. They are those of the ui: set and of a v2 record's list, each
// re-checked.
func (s *Store) Identities(ctx context.Context, userID string) ([]grants.Identity, error) {
	if err := checkKeys("redisstore: identities", userID); err != nil {
		return nil, err
	}
	suffixes, err := s.identitySuffixes(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("redisstore: identities of %s: %w", userID, err)
	}
	ids := []grants.Identity{}
	for _, suf := range suffixes {
		raw, err := s.rdb.Get(ctx, s.prefix+"id:"+suf).Bytes()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("redisstore: identities of %s: %w", userID, err)
		}
		id, err := decodeIdentityAt(suf, raw)
		if err != nil {
			return nil, fmt.Errorf("redisstore: identities of %s: %w", userID, err)
		}
		if id.UserID == userID {
			ids = append(ids, *id)
		}
	}
	slices.SortStableFunc(ids, func(a, b grants.Identity) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return ids, nil
}

// identitySuffixes are the identities listed for the user: its ui: set and
// a v2 record's list, without repeats (unchecked: entries may be stale).
func (s *Store) identitySuffixes(ctx context.Context, userID string) ([]string, error) {
	var set *redis.StringSliceCmd
	var rec *pipedScript
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		set = p.SMembers(ctx, s.key("ui", userID))
		rec = scriptCall{getUser, []string{s.key("u", userID)}, nil}.queue(ctx, p)
		return nil
	})
	if err := set.Err(); err != nil {
		return nil, err
	}
	res, err := rec.reply(ctx, s.rdb)
	if err != nil {
		return nil, err
	}
	_, listed, err := userFromReply(userID, res)
	if err != nil {
		return nil, err
	}
	out := set.Val()
	for _, suf := range listed {
		if !slices.Contains(out, suf) {
			out = append(out, suf)
		}
	}
	return out, nil
}

// listIdentity lists the identity for the user: in a v2 record's list, and
// in the ui: set below v3 or for a v1 user (at v3 the record's form is
// known only from the script's answer, so the set waits for it there).
func (s *Store) listIdentity(ctx context.Context, userID, suffix string) error {
	call := scriptCall{userIdentity, []string{s.key("u", userID)}, []any{"add", suffix}}
	sadd := redis.NewIntCmd(ctx, "sadd", s.key("ui", userID), suffix)
	if !s.formatV3() {
		return s.both(ctx, call, sadd)
	}
	res, err := s.runScript(ctx, call.sc, call.keys, call.args...)
	if err != nil || str(res, 0) != "hash" {
		return err
	}
	return s.rdb.Process(ctx, sadd)
}

// unlistIdentity takes the identity off the user's lists (best effort: a
// stale entry is filtered by its readers).
func (s *Store) unlistIdentity(ctx context.Context, userID, suffix string) {
	call := scriptCall{userIdentity, []string{s.key("u", userID)}, []any{"rm", suffix}}
	if err := s.both(ctx, call, redis.NewIntCmd(ctx, "srem", s.key("ui", userID), suffix)); err != nil {
		s.log.Warn("redisstore: unlisting an identity", "user_id", userID, "err", err)
	}
}

// both runs a script and a command (two keys, in no particular order) in
// one pipeline on one master, one by one on a cluster (as aroundScript).
func (s *Store) both(ctx context.Context, call scriptCall, cmd redis.Cmder) error {
	if !s.oneMaster() {
		_, err := s.runScript(ctx, call.sc, call.keys, call.args...)
		return errors.Join(err, s.rdb.Process(ctx, cmd))
	}
	var piped *pipedScript
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		piped = call.queue(ctx, p)
		return p.Process(ctx, cmd)
	})
	_, err := piped.reply(ctx, s.rdb)
	return errors.Join(err, cmd.Err())
}
