package redis

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/store/errs"
)

// Prefix search (grants/search.go).
//
//	{prefix}inv:se         sorted set, every score 0: "lower(email)\x00id", or
//	                       from v5 "lower(email)\x01", the ID packed
//	                       (idpack.go) and its length, a byte (searchMembers)
//	{prefix}inv:sx         the same for external_id
//	{prefix}inv:s:ready    searchIndexVersion once the backfill has run
//
// With equal scores a sorted set orders its members bytewise, so a prefix
// is one ZRANGEBYLEX range and a page costs what it returns. Each set is
// one key, alone in its slot on a cluster: entries are added and removed by
// plain pipelined commands beside the invitation's other index entries
// (added before the record needs them, removed after it stopped needing
// them), and readers re-check the record, as for every index here.
//
// Invitations written before these sets existed are added once by
// BackfillInvitationSearch, which Open starts and the first prefix search
// waits for; the marker key makes later runs (other replicas, restarts) a
// single GET.

const searchIndexVersion = "1"

// searchState remembers, per Store, that the backfill is known done.
type searchState struct {
	mu    sync.Mutex
	ready atomic.Bool
}

type searchEntry struct{ key, member string }

func (s *Store) searchSetKey(field grants.SearchField) string {
	if field == grants.SearchEmail {
		return s.prefix + "inv:se"
	}
	return s.prefix + "inv:sx"
}

// searchEntries are inv's members in the prefix indexes, in the form s
// writes.
func (s *Store) searchEntries(inv *grants.Invitation) []searchEntry {
	return s.searchEntriesOf(inv, false)
}

// allSearchEntries are inv's members in either form: what a removal takes.
func (s *Store) allSearchEntries(inv *grants.Invitation) []searchEntry {
	return s.searchEntriesOf(inv, true)
}

func (s *Store) searchEntriesOf(inv *grants.Invitation, both bool) []searchEntry {
	var out []searchEntry
	for _, field := range []grants.SearchField{grants.SearchEmail, grants.SearchExternalID} {
		v := grants.SearchKey(inv, field)
		if v == "" {
			continue
		}
		text, packed := searchMembers(v, inv.ID)
		if packed == "" || both || !s.formatV5() {
			out = append(out, searchEntry{s.searchSetKey(field), text})
		}
		if packed != "" && (both || s.formatV5()) {
			out = append(out, searchEntry{s.searchSetKey(field), packed})
		}
	}
	return out
}

// searchMembers are the members of value and id in a prefix index: as text
// ("value\x00id", every version) and packed ("value\x01", the packed ID
// and its length; "" when id does not pack). The packed ID's bytes may be
// any: its length, last, finds its start. 18 + 2 bytes rather than 26 + 1
// for an ID like inv_ and 22 characters: at 38 bytes of email, 57 rather
// than 65, in the allocator's 64-byte class rather than the 80-byte one.
func searchMembers(value, id string) (text, packed string) {
	text = value + "\x00" + id
	if p, ok := packID(id); ok && len(p) <= 0xff {
		packed = value + "\x01" + p + string([]byte{byte(len(p))})
	}
	return text, packed
}

// memberID is the ID a member of a prefix index names (either form; the
// caller re-checks the record against searchMembers).
func memberID(m string) string {
	if n := len(m); n > 0 {
		start := n - 1 - int(m[n-1])
		if start >= 1 && m[start-1] == '\x01' && m[start] >= packMarker {
			return unpackID(m[start : n-1])
		}
	}
	return m[strings.LastIndexByte(m, 0)+1:]
}

// isMember reports whether m is one of inv's members for value.
func isMember(m, value, id string) bool {
	text, packed := searchMembers(value, id)
	return m == text || packed != "" && m == packed
}

// addSearchEntries adds entries and returns those that were new (what an
// undo may remove without taking another writer's entry).
func (s *Store) addSearchEntries(ctx context.Context, entries []searchEntry) ([]searchEntry, error) {
	var q queuedAdds[searchEntry]
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		q = queueSearch(ctx, p, entries)
		return nil
	})
	return q.added(), err
}

// queueSearch queues addSearchEntries' commands in p.
func queueSearch(ctx context.Context, p redis.Pipeliner, entries []searchEntry) queuedAdds[searchEntry] {
	q := queuedAdds[searchEntry]{entries: entries, cmds: make([]*redis.IntCmd, len(entries))}
	for i, e := range entries {
		q.cmds[i] = p.ZAdd(ctx, e.key, redis.Z{Member: e.member})
	}
	return q
}

// dropSearchEntries removes entries, best effort: a leftover entry is
// stale, and readers skip it.
func (s *Store) dropSearchEntries(ctx context.Context, entries []searchEntry) {
	if len(entries) == 0 {
		return
	}
	ctx = context.WithoutCancel(ctx)
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, e := range entries {
			p.ZRem(ctx, e.key, e.member)
		}
		return nil
	})
	if err != nil {
		s.log.Warn("redisstore: removing invitation search entries", "err", err)
	}
}

// BackfillInvitationSearch adds every stored invitation to the prefix
// indexes unless the marker says that was done, and returns how many it
// read. It walks the creation-time sets (mergedSource) in batches (never
// SCAN, which on a cluster would have to visit every master); ZADD of an
// existing member is a no-op, so replicas running it at once, or a run cut
// short, are harmless.
func (s *Store) BackfillInvitationSearch(ctx context.Context) (int, error) {
	if s.search.ready.Load() {
		return 0, nil
	}
	s.search.mu.Lock()
	defer s.search.mu.Unlock()
	if s.search.ready.Load() {
		return 0, nil
	}
	v, err := s.rdb.Get(ctx, s.prefix+"inv:s:ready").Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return 0, fmt.Errorf("redisstore: search backfill: %w", err)
	}
	if v == searchIndexVersion {
		s.search.ready.Store(true)
		return 0, nil
	}
	const batch = 500
	n := 0
	next := s.mergedSource(s.unionKeys, grants.InvitationFilter{}, nil, batch)
	for more := true; more; {
		cands, m, err := next(ctx)
		if err != nil {
			return n, fmt.Errorf("redisstore: search backfill: %w", err)
		}
		more = m
		ids := make([]string, len(cands))
		for i, c := range cands {
			ids[i] = c.id
		}
		invs, err := s.loadInvitations(ctx, ids)
		if err != nil {
			return n, fmt.Errorf("redisstore: search backfill: %w", err)
		}
		var entries []searchEntry
		for _, inv := range invs {
			if inv != nil {
				entries = append(entries, s.searchEntries(inv)...)
				n++
			}
		}
		if entries, err = s.notIndexed(ctx, invs, entries); err != nil {
			return n, fmt.Errorf("redisstore: search backfill: %w", err)
		}
		if _, err := s.addSearchEntries(ctx, entries); err != nil {
			return n, fmt.Errorf("redisstore: search backfill: %w", err)
		}
	}
	if err := s.rdb.Set(ctx, s.prefix+"inv:s:ready", searchIndexVersion, 0).Err(); err != nil {
		return n, fmt.Errorf("redisstore: search backfill: %w", err)
	}
	s.search.ready.Store(true)
	return n, nil
}

// notIndexed are the entries of invs (entries: in searchEntries' order)
// whose invitation has no member for that field in either form yet: one
// written in the other form stays the only one.
func (s *Store) notIndexed(ctx context.Context, invs []*grants.Invitation, entries []searchEntry) ([]searchEntry, error) {
	var all []searchEntry
	for _, inv := range invs {
		if inv != nil {
			all = append(all, s.allSearchEntries(inv)...)
		}
	}
	cmds := make([]*redis.FloatCmd, len(all))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, e := range all {
			cmds[i] = p.ZScore(ctx, e.key, e.member)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	present := map[string]bool{} // key and ID
	for i, c := range cmds {
		if c.Err() == nil {
			present[all[i].key+"\x00"+memberID(all[i].member)] = true
		}
	}
	var out []searchEntry
	for _, e := range entries {
		if !present[e.key+"\x00"+memberID(e.member)] {
			out = append(out, e)
		}
	}
	return out, nil
}

// backfillSearch runs BackfillInvitationSearch for Open, in the background.
func (s *Store) backfillSearch() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	n, err := s.BackfillInvitationSearch(ctx)
	switch {
	case errors.Is(err, redis.ErrClosed):
	case err != nil:
		s.log.Error("redisstore: indexing invitations for search (the first search retries)", "err", err)
	case n > 0:
		s.log.Info("redisstore: indexed existing invitations for search", "invitations", n, "took", time.Since(start))
	}
}

// createdScores narrows a newest-first walk of a creation-time set to the
// filter's window: from start (the cursor's score or "+inf") down to stop.
// CreatedUntil is exclusive, but scores are whole microseconds: the bound
// is inclusive here and Matches draws the exact line.
func createdScores(f grants.InvitationFilter, start string) (string, string) {
	stop := "-inf"
	if !f.CreatedUntil.IsZero() {
		u := micros(f.CreatedUntil)
		if cur, err := strconv.ParseFloat(start, 64); err != nil || float64(u) < cur {
			start = strconv.FormatInt(u, 10)
		}
	}
	if !f.CreatedSince.IsZero() {
		stop = strconv.FormatInt(micros(f.CreatedSince), 10)
	}
	return start, stop
}

// searchInvitations lists the invitations whose field starts with prefix,
// in index order, from just after the cursor (a member of the same prefix).
func (s *Store) searchInvitations(ctx context.Context, f grants.InvitationFilter, field grants.SearchField, prefix string, limit int, now time.Time) ([]grants.Invitation, string, error) {
	page, next, _, err := s.searchPage(ctx, f, field, prefix, limit, now)
	if err != nil {
		return nil, "", fmt.Errorf("redisstore: list invitations: %w", err)
	}
	return page, next, nil
}

// searchPage is searchInvitations that also counts the members it read, so
// a test can tell a range read from a scan.
func (s *Store) searchPage(ctx context.Context, f grants.InvitationFilter, field grants.SearchField, prefix string, limit int, now time.Time) (page []grants.Invitation, next string, visited int, err error) {
	lo := "[" + prefix
	if f.Cursor != "" {
		c, err := base64.RawURLEncoding.DecodeString(f.Cursor)
		if err != nil || !strings.HasPrefix(string(c), prefix) || !strings.ContainsAny(string(c[len(prefix):]), "\x00\x01") {
			return nil, "", 0, fmt.Errorf("%w: %w", errs.ErrBadCursor, ErrInvalid)
		}
		lo = "(" + string(c)
	}
	if _, err := s.BackfillInvitationSearch(ctx); err != nil {
		return nil, "", 0, err
	}
	// No UTF-8 text holds the byte 0xff: every member with the prefix is below.
	hi, key := "("+prefix+"\xff", s.searchSetKey(field)
	batch := int64(min(2*(limit+1), 1000))
	var last string
	for {
		members, err := s.rdb.ZRangeByLex(ctx, key, &redis.ZRangeBy{Min: lo, Max: hi, Count: batch}).Result()
		if err != nil {
			return nil, "", visited, err
		}
		visited += len(members)
		ids := make([]string, len(members))
		for i, m := range members {
			ids[i] = memberID(m)
		}
		invs, err := s.loadInvitations(ctx, ids)
		if err != nil {
			return nil, "", visited, err
		}
		for i, inv := range invs {
			// The record decides: a stale entry never shows.
			if inv == nil || !isMember(members[i], grants.SearchKey(inv, field), inv.ID) || !f.Matches(inv, now) {
				continue
			}
			if len(page) == limit {
				return page, base64.RawURLEncoding.EncodeToString([]byte(last)), visited, nil
			}
			page = append(page, *inv)
			last = members[i]
		}
		if int64(len(members)) < batch {
			return page, "", visited, nil
		}
		lo = "(" + members[len(members)-1]
	}
}
