package redis

import (
	"context"
	"slices"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
)

// stagedIndexes are the index entries an update added before its write.
type stagedIndexes struct {
	listings []string
	search   []searchEntry
}

// stageIndexes adds, before the write that turns old into inv, the listing
// and search entries inv has and old had not — every listing when the
// creation time, their score, moved — in one round trip, and none at all
// when the update changes neither email, client, external ID nor who awaits
// verification (most updates). The entries old had are there already: a
// record is written only after its entries.
func (s *Store) stageIndexes(ctx context.Context, old, inv *grants.Invitation) (stagedIndexes, error) {
	oldKeys := s.indexEntries(old)
	if !old.CreatedAt.Equal(inv.CreatedAt) {
		s.removeIndexEntries(ctx, inv.ID, s.allIndexEntries(old)) // re-scored below
		oldKeys = nil
	}
	keys := without(s.indexEntries(inv), oldKeys)
	if len(keys) > 0 || len(without(s.allIndexEntries(old), s.allIndexEntries(inv))) > 0 {
		// All of them (ZADD NX keeps what is there): old may have been
		// written at another format, in inv:t or not, and dropIndexesLeft
		// takes it out of the sets it leaves, which may be the ones that
		// had it in the full listing (ic:, inv:nc).
		keys = s.indexEntries(inv)
	}
	search := without(s.searchEntries(inv), s.searchEntries(old))
	if len(keys) == 0 && len(search) == 0 {
		return stagedIndexes{}, nil
	}
	var listed queuedAdds[string]
	var searched queuedAdds[searchEntry]
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		listed = s.queueListings(ctx, p, inv, keys)
		searched = queueSearch(ctx, p, search)
		return nil
	})
	staged := stagedIndexes{listings: listed.added(), search: searched.added()}
	if err := listed.err(); err != nil {
		staged.undo(ctx, s, inv.ID)
		return stagedIndexes{}, err
	}
	if err := searched.err(); err != nil {
		staged.undo(ctx, s, inv.ID)
		return stagedIndexes{}, err
	}
	return staged, nil
}

// undo takes back what stageIndexes added (the write did not happen).
func (st stagedIndexes) undo(ctx context.Context, s *Store, id string) {
	s.removeIndexEntries(ctx, id, st.listings)
	s.dropSearchEntries(ctx, st.search)
}

// dropIndexesLeft removes, after the write that turned old into inv, the
// entries old had and inv has not,
// in one round trip, best effort: a leftover entry is stale, and readers
// re-check.
func (s *Store) dropIndexesLeft(ctx context.Context, old, inv *grants.Invitation) {
	keys := without(s.allIndexEntries(old), s.allIndexEntries(inv))
	search := without(s.allSearchEntries(old), s.allSearchEntries(inv))
	if len(keys) == 0 && len(search) == 0 {
		return
	}
	ctx = context.WithoutCancel(ctx)
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range keys {
			p.ZRem(ctx, k, inv.ID)
		}
		for _, e := range search {
			p.ZRem(ctx, e.key, e.member)
		}
		return nil
	})
	if err != nil {
		s.log.Warn("redisstore: removing index entries an invitation left", "invitation_id", inv.ID, "err", err)
	}
}

// without is es less the elements of drop.
func without[E comparable](es, drop []E) []E {
	var out []E
	for _, e := range es {
		if !slices.Contains(drop, e) {
			out = append(out, e)
		}
	}
	return out
}
