package redis

import (
	"cmp"
	"context"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
)

// The full invitation listing. Below v4 every invitation is in inv:t; from
// v4 on one is only in its client's set ic:<client> (the client recorded in
// inv:clients) or, without a client, in inv:nc. Every version reads the
// union of all of them, deduplicated by ID: an invitation written below v4
// is in inv:t and in its client's set, and a rollout may go either way.

func (s *Store) allInvKey() string   { return s.prefix + "inv:t" }
func (s *Store) noClientKey() string { return s.prefix + "inv:nc" }
func (s *Store) clientsKey() string  { return s.prefix + "inv:clients" }

// unionKeys are the sets whose union holds every invitation: one small read
// (the client set) before the listing's first pipeline.
func (s *Store) unionKeys(ctx context.Context) ([]string, error) {
	clients, err := s.rdb.SMembers(ctx, s.clientsKey()).Result()
	if err != nil {
		return nil, err
	}
	slices.Sort(clients)
	keys := []string{s.allInvKey(), s.noClientKey()}
	for _, c := range clients {
		keys = append(keys, s.key("ic", c))
	}
	return keys, nil
}

// zwalk is one creation-time set walked newest first: what it read and
// has not handed out yet, and whether more may follow.
type zwalk struct {
	key    string
	offset int64
	buf    []listCursor
	more   bool
	cmd    *redis.ZSliceCmd
}

// walkRange is the part of the sets a listing walks: scores from start down
// to stop, positions after the cursor, batch members per read.
type walkRange struct {
	start, stop string
	after       *listCursor
	batch       int
}

func (w *zwalk) queue(ctx context.Context, p redis.Pipeliner, r walkRange) {
	w.cmd = p.ZRangeArgsWithScores(ctx, redis.ZRangeArgs{
		Key: w.key, Start: r.start, Stop: r.stop, ByScore: true, Rev: true, Offset: w.offset, Count: int64(r.batch),
	})
}

func (w *zwalk) read(r walkRange) error {
	zs, err := w.cmd.Result()
	if err != nil {
		return err
	}
	w.offset += int64(len(zs))
	for _, z := range zs {
		id, _ := z.Member.(string)
		if c := (listCursor{z.Score, id}); c.before(r.after) {
			w.buf = append(w.buf, c)
		}
	}
	w.more = len(zs) == r.batch
	return nil
}

// mergedSource walks the sets keysOf names (read once, on the first call)
// as one, newest first (ties by ID, descending), each ID once: a k-way
// merge by (score, id). The sets that ran dry are read again together, in
// one pipeline (split by master on a cluster: one command per key).
func (s *Store) mergedSource(keysOf func(context.Context) ([]string, error), f grants.InvitationFilter, after *listCursor, batch int) listSource {
	start := "+inf"
	if after != nil {
		start = strconv.FormatFloat(after.score, 'f', -1, 64)
	}
	r := walkRange{after: after, batch: batch}
	r.start, r.stop = createdScores(f, start)
	var walks []*zwalk
	seen := map[string]bool{}
	return func(ctx context.Context) ([]listCursor, bool, error) {
		if walks == nil {
			keys, err := keysOf(ctx)
			if err != nil {
				return nil, false, err
			}
			walks = make([]*zwalk, len(keys))
			for i, k := range keys {
				walks[i] = &zwalk{key: k, more: true}
			}
		}
		for {
			if err := s.refill(ctx, walks, r); err != nil {
				return nil, false, err
			}
			out, stalled := mergeWalks(walks, seen, batch)
			if len(out) > 0 || !stalled {
				return out, slices.ContainsFunc(walks, func(w *zwalk) bool { return len(w.buf) > 0 || w.more }), nil
			}
		}
	}
}

// refill reads the next batch of every walk that ran dry and may have more.
func (s *Store) refill(ctx context.Context, walks []*zwalk, r walkRange) error {
	var dry []*zwalk
	for _, w := range walks {
		if len(w.buf) == 0 && w.more {
			dry = append(dry, w)
		}
	}
	if len(dry) == 0 {
		return nil
	}
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, w := range dry {
			w.queue(ctx, p, r)
		}
		return nil
	})
	for _, w := range dry {
		if err := w.read(r); err != nil {
			return err
		}
	}
	return nil
}

// mergeWalks hands out up to batch positions, newest first, skipping IDs
// already handed out; stalled: it stopped at a walk that must be read
// again before the order is known.
func mergeWalks(walks []*zwalk, seen map[string]bool, batch int) (out []listCursor, stalled bool) {
	for len(out) < batch {
		var best *zwalk
		for _, w := range walks {
			if len(w.buf) == 0 {
				if w.more {
					return out, true
				}
				continue
			}
			if best == nil || best.buf[0].before(&w.buf[0]) {
				best = w
			}
		}
		if best == nil {
			return out, false
		}
		c := best.buf[0]
		best.buf = best.buf[1:]
		if !seen[c.id] {
			seen[c.id] = true
			out = append(out, c)
		}
	}
	return out, false
}

// allInvitationIDs are the IDs of every invitation, oldest first (ties by
// ID): the union of the sets unionKeys names, read in one pipeline.
func (s *Store) allInvitationIDs(ctx context.Context) ([]string, error) {
	keys, err := s.unionKeys(ctx)
	if err != nil {
		return nil, err
	}
	cmds := make([]*redis.ZSliceCmd, len(keys))
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			cmds[i] = p.ZRangeWithScores(ctx, k, 0, -1)
		}
		return nil
	})
	scores := map[string]float64{}
	for _, c := range cmds {
		zs, err := c.Result()
		if err != nil {
			return nil, err
		}
		for _, z := range zs {
			id, _ := z.Member.(string)
			if old, ok := scores[id]; !ok || z.Score > old {
				scores[id] = z.Score
			}
		}
	}
	all := make([]listCursor, 0, len(scores))
	for id, score := range scores {
		all = append(all, listCursor{score, id})
	}
	slices.SortFunc(all, func(a, b listCursor) int {
		return cmp.Or(cmp.Compare(a.score, b.score), strings.Compare(a.id, b.id))
	})
	ids := make([]string, len(all))
	for i, c := range all {
		ids[i] = c.id
	}
	return ids, nil
}
