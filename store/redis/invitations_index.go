package redis

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
)

// newIndexes is what indexNewInvitation wrote, for an undo to take back.
type newIndexes struct {
	tokenCreated bool          // the token lookup entry is this create's
	added        []string      // listing sets that did not hold the ID
	searchAdded  []searchEntry // search entries that were new
}

// indexNewInvitation writes, before the record, every index entry a new
// invitation needs — its token lookup, the listing sets, its outbox entry
// and its search entries — in one pipeline (on a cluster, split by master
// and sent at once), and, when checkID, asks whether the ID is taken in
// the same round trip. A token lookup held by another invitation is
// settled as claimToken settles it; a taken ID is idTakenError, with what
// was written already reported for the undo.
func (s *Store) indexNewInvitation(ctx context.Context, inv *grants.Invitation, checkID bool) (newIndexes, error) {
	var ix newIndexes
	keys, search := s.indexEntries(inv), s.searchEntries(inv)
	var exists, outbox *redis.IntCmd
	claim := evalSha(ctx, claimIndex, []string{s.key("it", inv.TokenHash)}, inv.ID, "0")
	listed := make([]*redis.IntCmd, len(keys))
	searched := make([]*redis.IntCmd, len(search))
	score := float64(micros(inv.CreatedAt))
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		if checkID {
			exists = p.Exists(ctx, s.invKey(inv.ID))
		}
		_ = p.Process(ctx, claim)
		for i, k := range keys {
			listed[i] = p.ZAddNX(ctx, k, redis.Z{Score: score, Member: inv.ID})
		}
		if len(inv.Outbox) > 0 {
			outbox = p.ZAdd(ctx, s.outboxKey(), redis.Z{Score: 0, Member: inv.ID})
		}
		for i, e := range search {
			searched[i] = p.ZAdd(ctx, e.key, redis.Z{Member: e.member})
		}
		return nil
	})
	for i, c := range listed {
		if c.Val() > 0 {
			ix.added = append(ix.added, keys[i])
		}
	}
	for i, c := range searched {
		if c.Val() > 0 {
			ix.searchAdded = append(ix.searchAdded, search[i])
		}
	}
	first, err := claim.Slice()
	if err != nil {
		first = nil // NOSCRIPT, a redirect: claimTokenFrom runs it again
	}
	if exists != nil {
		n, err := exists.Result()
		if err != nil {
			return ix, fmt.Errorf("exists: %w", err)
		}
		if n > 0 {
			ix.tokenCreated = first != nil && str(first, 0) == "created"
			return ix, idTakenError{inv.ID}
		}
	}
	if ix.tokenCreated, err = s.claimTokenFrom(ctx, inv.TokenHash, inv.ID, first); err != nil {
		return ix, err
	}
	written := append(cmdsOf(listed), cmdsOf(searched)...)
	if outbox != nil {
		written = append(written, outbox)
	}
	return ix, firstErr(written)
}

func cmdsOf(cmds []*redis.IntCmd) []redis.Cmder {
	out := make([]redis.Cmder, len(cmds))
	for i, c := range cmds {
		out[i] = c
	}
	return out
}

// idFree is idTakenError when an invitation with this ID is stored (the
// create script checks again; this is the early, cheap answer).
func (s *Store) idFree(ctx context.Context, id string) error {
	n, err := s.rdb.Exists(ctx, s.invKey(id)).Result()
	if err != nil {
		return err
	}
	if n > 0 {
		return idTakenError{id}
	}
	return nil
}
