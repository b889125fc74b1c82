package redis

import (
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/store/errs"
)

// listCursor is a position in an index: (score, id), exclusive.
type listCursor struct {
	score float64
	id    string
}

func (c listCursor) encode() string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatFloat(c.score, 'f', -1, 64) + "|" + c.id))
}

// before reports whether c comes after after in a newest-first walk (ties
// by ID, descending, as bbolt orders them).
func (c listCursor) before(after *listCursor) bool {
	return after == nil || c.score < after.score || c.score == after.score && c.id < after.id
}

func decodeCursor(s string) (*listCursor, error) {
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, err
	}
	score, id, ok := strings.Cut(string(raw), "|")
	if !ok || id == "" {
		return nil, errors.New("malformed")
	}
	f, err := strconv.ParseFloat(score, 64)
	if err != nil {
		return nil, err
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil, errors.New("score out of range")
	}
	return &listCursor{f, id}, nil
}

// listSource yields a listing's next candidates, in listing order, and
// whether more may follow.
type listSource func(ctx context.Context) ([]listCursor, bool, error)

// ListInvitations walks the narrowest index newest first (ties by ID, as
// bbolt orders them), loading invitations in batches and re-checking every
// filter on the record, so stale index entries never show.
func (s *Store) ListInvitations(ctx context.Context, f grants.InvitationFilter, now time.Time) ([]grants.Invitation, string, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = defaultListLimit
	}
	limit = min(limit, maxListLimit)
	if field, prefix := f.SearchIndex(); field != "" {
		return s.searchInvitations(ctx, f, field, prefix, limit, now)
	}
	var after *listCursor
	if f.Cursor != "" {
		c, err := decodeCursor(f.Cursor)
		if err != nil {
			return nil, "", fmt.Errorf("redisstore: list invitations: %w: %w", errs.ErrBadCursor, ErrInvalid)
		}
		after = c
	}
	batch := min(2*(limit+1), 1000)
	var next listSource
	switch {
	case f.Email != "" && f.ExternalID == "":
		next = s.emailSource(f, after, batch)
	case f.ExternalID != "":
		next = s.scoreSource(s.key("ix", f.ExternalID), f, after, batch)
	case f.ClientID != "":
		next = s.scoreSource(s.key("ic", f.ClientID), f, after, batch)
	default:
		next = s.mergedSource(s.unionKeys, f, after, batch)
	}
	out, cursor, err := s.listPage(ctx, f, limit, now, next)
	if err != nil {
		return nil, "", fmt.Errorf("redisstore: list invitations: %w", err)
	}
	return out, cursor, nil
}

// listPage loads next's candidates batch by batch and keeps those that
// match f, up to limit; the cursor is the last one's when more matched.
func (s *Store) listPage(ctx context.Context, f grants.InvitationFilter, limit int, now time.Time, next listSource) ([]grants.Invitation, string, error) {
	var out []grants.Invitation
	var last []listCursor
	for len(out) <= limit {
		cands, more, err := next(ctx)
		if err != nil {
			return nil, "", err
		}
		ids := make([]string, len(cands))
		for i, c := range cands {
			ids[i] = c.id
		}
		invs, err := s.loadInvitations(ctx, ids)
		if err != nil {
			return nil, "", err
		}
		for i, inv := range invs {
			if inv != nil && f.Matches(inv, now) && len(out) <= limit {
				out, last = append(out, *inv), append(last, cands[i])
			}
		}
		if !more {
			break
		}
	}
	if len(out) <= limit {
		return out, "", nil
	}
	return out[:limit], last[limit-1].encode(), nil
}

// scoreSource walks a creation-time sorted set newest first, from just after
// the cursor, within the filter's creation window.
func (s *Store) scoreSource(key string, f grants.InvitationFilter, after *listCursor, batch int) listSource {
	return s.mergedSource(func(context.Context) ([]string, error) { return []string{key}, nil }, f, after, batch)
}

// emailSource lists the invitations of one email, newest first, from the
// search index's range for it ("email\x00" up to "email\x02") merged with
// the per-email set ie: that stores below v3 write, and that holds the
// invitations written before the search index existed (until its backfill
// ran). The creation times, which order the listing, are the invitations'
// scores in inv:t, or their records' (creationScores). One email has few
// invitations: this reads all of their IDs for every page (and, from v4,
// their records, which inv:t no longer scores).
func (s *Store) emailSource(f grants.InvitationFilter, after *listCursor, batch int) listSource {
	var all []listCursor
	read := false
	return func(ctx context.Context) ([]listCursor, bool, error) {
		if !read {
			var err error
			if all, err = s.emailCandidates(ctx, f, after); err != nil {
				return nil, false, err
			}
			read = true
		}
		n := min(batch, len(all))
		page := all[:n]
		all = all[n:]
		return page, len(all) > 0, nil
	}
}

// emailCandidates are emailSource's positions, sorted, after the cursor.
func (s *Store) emailCandidates(ctx context.Context, f grants.InvitationFilter, after *listCursor) ([]listCursor, error) {
	email := lower(f.Email)
	var se *redis.StringSliceCmd
	var ie *redis.ZSliceCmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		se = p.ZRangeByLex(ctx, s.searchSetKey(grants.SearchEmail), &redis.ZRangeBy{Min: "[" + email + "\x00", Max: "(" + email + "\x02"})
		ie = p.ZRangeWithScores(ctx, s.key("ie", email), 0, -1)
		return nil
	})
	if err != nil {
		return nil, err
	}
	scores := make(map[string]float64, len(ie.Val())+len(se.Val()))
	for _, z := range ie.Val() {
		id, _ := z.Member.(string)
		scores[id] = z.Score
	}
	var unscored []string
	for _, m := range se.Val() {
		if id := memberID(m); id != "" {
			if _, ok := scores[id]; !ok {
				unscored = append(unscored, id)
			}
		}
	}
	if err := s.creationScores(ctx, unscored, scores); err != nil {
		return nil, err
	}
	lo, hi := creationWindow(f)
	out := make([]listCursor, 0, len(scores))
	for id, score := range scores {
		if c := (listCursor{score, id}); c.before(after) && score >= lo && score <= hi {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b listCursor) int {
		if a.score != b.score {
			return cmp.Compare(b.score, a.score)
		}
		return strings.Compare(b.id, a.id)
	})
	return out, nil
}

// creationScores adds to scores the creation-time score of each of ids:
// its score in inv:t, which stores below v4 wrote, or else its record's
// creation time (v4 writes no inv:t entry), both read in one pipeline. One
// whose record is gone is left out.
func (s *Store) creationScores(ctx context.Context, ids []string, scores map[string]float64) error {
	if len(ids) == 0 {
		return nil
	}
	args := make([]any, 0, len(ids)+2)
	args = append(args, "zmscore", s.allInvKey())
	for _, id := range ids {
		args = append(args, id)
	}
	var zm *redis.Cmd
	recs := make([]*redis.StringCmd, len(ids))
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		zm = p.Do(ctx, args...)
		for i, id := range ids {
			recs[i] = p.Get(ctx, s.invKey(id))
		}
		return nil
	})
	res, err := zm.Slice()
	if err != nil {
		return err
	}
	for i, v := range res {
		switch v := v.(type) {
		case float64:
			scores[ids[i]] = v
			continue
		case string: // RESP2
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				scores[ids[i]] = f
				continue
			}
		}
		raw, err := recs[i].Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			return err
		}
		inv, _, err := decodeInvitation(ids[i], raw)
		if err != nil {
			return fmt.Errorf("invitation %s: %w", ids[i], err)
		}
		scores[ids[i]] = float64(micros(inv.CreatedAt))
	}
	return nil
}

// creationWindow is the filter's creation-time window in scores, inclusive
// (as createdScores; Matches draws the exact line).
func creationWindow(f grants.InvitationFilter) (float64, float64) {
	lo, hi := math.Inf(-1), math.Inf(1)
	if !f.CreatedSince.IsZero() {
		lo = float64(micros(f.CreatedSince))
	}
	if !f.CreatedUntil.IsZero() {
		hi = float64(micros(f.CreatedUntil))
	}
	return lo, hi
}
