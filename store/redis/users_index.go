package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/store"
)

// The admin's user list, sign out everywhere and erase.
//
//	{prefix}users:idx   sorted set, score 0, members grants.UserIndexKey
//	                    (lower(email) NUL userID): ZRANGEBYLEX pages it in
//	                    email order and a prefix of the email is a range.
//
// The index lives in its own slot, apart from the users: it is written
// after the user (every sign-in re-adds the entry) and an email change
// removes the old entry; readers drop entries whose user is gone or carries
// another email. Users stored before the index existed are indexed once,
// by the first listing (ensureUsersIndexed).

func (s *Store) usersIndexKey() string { return s.prefix + "users:idx" }

// usersIndexBuiltKey marks that every user stored before the index existed
// has been indexed.
func (s *Store) usersIndexBuiltKey() string { return s.prefix + "users:idx:built" }

// ensureUsersIndexed indexes, once per store, the users written before the
// index existed: a one-time scan (as export does), never a listing's path
// afterwards. Several replicas doing it at once write the same entries.
// Once this process knows it done, a listing asks Redis no more.
func (s *Store) ensureUsersIndexed(ctx context.Context) error {
	if s.usersIndexed.Load() {
		return nil
	}
	if n, err := s.rdb.Exists(ctx, s.usersIndexBuiltKey()).Result(); err != nil || n == 1 {
		s.usersIndexed.Store(err == nil)
		return err
	}
	err := s.Export(ctx, store.Users, func(rec json.RawMessage) error {
		var u grants.User
		if err := json.Unmarshal(rec, &u); err != nil {
			return err
		}
		return s.indexUser(ctx, &u)
	})
	if err != nil {
		return fmt.Errorf("indexing the users stored before the user list: %w", err)
	}
	if err := s.rdb.Set(ctx, s.usersIndexBuiltKey(), "1", 0).Err(); err != nil {
		return err
	}
	s.usersIndexed.Store(true)
	return nil
}

// indexUser adds u's entry (idempotent).
func (s *Store) indexUser(ctx context.Context, u *grants.User) error {
	return s.rdb.ZAdd(ctx, s.usersIndexKey(), redis.Z{Score: 0, Member: grants.UserIndexKey(u.Email, u.ID)}).Err()
}

// unindexOldEmail removes the entry of userID's previous email after a
// profile refresh changed it from old to cur.
func (s *Store) unindexOldEmail(ctx context.Context, userID, old, cur string) error {
	if lower(old) == lower(cur) {
		return nil
	}
	return s.rdb.ZRem(ctx, s.usersIndexKey(), grants.UserIndexKey(old, userID)).Err()
}

// ListUsers: see grants.UserStore.
func (s *Store) ListUsers(ctx context.Context, f grants.UserFilter) ([]grants.User, string, error) {
	prefix := lower(f.Query)
	lo, hi := "-", "+"
	if prefix != "" {
		lo, hi = "["+prefix, "["+prefix+"\xff" // UTF-8 never holds 0xff
	}
	if f.Cursor != "" {
		after, err := grants.DecodeUserCursor(f.Cursor)
		if err != nil {
			return nil, "", fmt.Errorf("redisstore: list users: %w: %w", err, ErrInvalid)
		}
		lo = "(" + after
	}
	if err := s.ensureUsersIndexed(ctx); err != nil {
		return nil, "", fmt.Errorf("redisstore: list users: %w", err)
	}
	limit := f.PageSize()
	members, err := s.rdb.ZRangeByLex(ctx, s.usersIndexKey(), &redis.ZRangeBy{Min: lo, Max: hi, Count: int64(limit + 1)}).Result()
	if err != nil {
		return nil, "", fmt.Errorf("redisstore: list users: %w", err)
	}
	next := ""
	if len(members) > limit {
		members = members[:limit]
		next = grants.EncodeUserCursor(members[limit-1])
	}
	cmds := make([]*pipedScript, len(members))
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, m := range members {
			cmds[i] = scriptCall{getUser, []string{s.key("u", m[strings.LastIndexByte(m, 0)+1:])}, nil}.queue(ctx, p)
		}
		return nil
	})
	users := []grants.User{}
	for i, c := range cmds {
		res, err := c.reply(ctx, s.rdb)
		if err != nil {
			return nil, "", fmt.Errorf("redisstore: list users: %w", err)
		}
		u, _, err := userFromReply(members[i][strings.LastIndexByte(members[i], 0)+1:], res)
		if err != nil {
			return nil, "", fmt.Errorf("redisstore: list users: %w", err)
		}
		if u == nil {
			continue // erased, or an entry written before a failed creation
		}
		if grants.UserIndexKey(u.Email, u.ID) == members[i] {
			users = append(users, *u)
		}
	}
	return users, next, nil
}

// grantSignOut sets the grant's sign-out instant and records its events.
// KEYS: the grant's four keys; ARGV: events ("id TAB JSON" lines), at.
var grantSignOut = redis.NewScript(`
for line in string.gmatch(ARGV[1], '[^\n]+') do
  local tab = string.find(line, '\t', 1, true)
  redis.call('HSET', KEYS[1], 'o:' .. string.sub(line, 1, tab - 1), string.sub(line, tab + 1))
end
redis.call('HSET', KEYS[1], 'so', ARGV[2], 'u', ARGV[2])
return {'ok'}
`)

// grantErase is the erase's deciding write: it empties the grant down to its
// sign-out instant, an erased marker ('e') and the events it records. The
// events and the instant are written first, so the hash never empties
// (a key emptied during a script must not be touched again). A repeated
// erase (completing one that stopped half way) records nothing.
var grantErase = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], 'e') == 1 then return {'again'} end
for line in string.gmatch(ARGV[1], '[^\n]+') do
  local tab = string.find(line, '\t', 1, true)
  redis.call('HSET', KEYS[1], 'o:' .. string.sub(line, 1, tab - 1), string.sub(line, tab + 1))
end
redis.call('HSET', KEYS[1], 'so', ARGV[2], 'u', ARGV[2], 'e', ARGV[2])
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(f, 1, 2) == 'c:' or f == 'r' then redis.call('HDEL', KEYS[1], f) end
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
return {'ok'}
`)

// grantScript runs a grant script that records events, with the outbox
// index entry made due before and after it (as grantOpRecording does).
func (s *Store) grantScript(ctx context.Context, sc *redis.Script, userID string, at time.Time, events []grants.OutboxEvent) (string, error) {
	var lines strings.Builder
	for _, e := range events {
		raw, err := json.Marshal(e)
		if err != nil {
			return "", err
		}
		if e.ID == "" || strings.ContainsAny(e.ID, "\t\n") {
			return "", fmt.Errorf("event id %q: %w", e.ID, ErrInvalid)
		}
		lines.WriteString(e.ID + "\t" + string(raw) + "\n")
	}
	due := func(ctx context.Context) error {
		if len(events) == 0 {
			return nil
		}
		return s.rdb.ZAdd(ctx, s.outboxKey(), redis.Z{Score: 0, Member: grants.UserOutboxID(userID)}).Err()
	}
	if err := due(ctx); err != nil {
		return "", err
	}
	res, err := s.runScript(ctx, sc, s.grantKeys(userID), lines.String(), fmtTime(at))
	if err != nil {
		return "", err
	}
	if err := due(context.WithoutCancel(ctx)); err != nil {
		s.log.Error("redisstore: marking a grant's events due after its write", "user_id", userID, "err", err)
	}
	return str(res, 0), nil
}

// SignOutUser: see grants.UserStore.
func (s *Store) SignOutUser(ctx context.Context, userID string, at time.Time, events ...grants.OutboxEvent) (*grants.Grant, error) {
	if err := checkKeys("redisstore: sign out user", userID); err != nil {
		return nil, err
	}
	if _, err := s.grantScript(ctx, grantSignOut, userID, at, events); err != nil {
		return nil, fmt.Errorf("redisstore: sign out user %s: %w", userID, err)
	}
	return s.GetGrant(ctx, userID)
}

// EraseUser: see grants.UserStore. The grant script decides and records;
// then the identities, indexes and the user record go, the user last, so
// that a call that stopped half way is completed by the next one (the user
// is still found, the script records nothing twice).
func (s *Store) EraseUser(ctx context.Context, userID string, at time.Time, events ...grants.OutboxEvent) error {
	if err := checkKeys("redisstore: erase user", userID); err != nil {
		return err
	}
	err := func() error {
		u, err := s.loadUser(ctx, userID)
		if err != nil {
			return err
		}
		if u == nil {
			return grants.ErrNotFound
		}
		if _, err := s.grantScript(ctx, grantErase, userID, at, events); err != nil {
			return err
		}
		suffixes, err := s.identitySuffixes(ctx, userID)
		if err != nil {
			return err
		}
		for _, suf := range suffixes {
			key := s.prefix + "id:" + suf
			raw, err := s.rdb.Get(ctx, key).Result()
			if errors.Is(err, redis.Nil) {
				continue
			}
			if err != nil {
				return err
			}
			if id, err := decodeIdentityAt(suf, []byte(raw)); err == nil && id.UserID == userID {
				if err := delIfEq.Run(ctx, s.rdb, []string{key}, raw).Err(); err != nil {
					return err
				}
			}
		}
		if err := s.rdb.Del(ctx, s.key("ui", userID)).Err(); err != nil {
			return err
		}
		if u.Email != "" {
			if err := s.rdb.SRem(ctx, s.key("ue", lower(u.Email)), userID).Err(); err != nil {
				return err
			}
		}
		if err := s.rdb.ZRem(ctx, s.usersIndexKey(), grants.UserIndexKey(u.Email, userID)).Err(); err != nil {
			return err
		}
		return s.rdb.Del(ctx, s.key("u", userID)).Err()
	}()
	if err != nil {
		return fmt.Errorf("redisstore: erase user %s: %w", userID, err)
	}
	return nil
}
