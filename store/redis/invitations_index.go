package redis

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
)

// newIndexes is what indexNewInvitation wrote, for an undo to take back.
type newIndexes struct {
	tokenCreated *lookupEntry  // the token lookup entry this create made
	added        []string      // listing sets that did not hold the ID
	searchAdded  []searchEntry // search entries that were new
	written      bool          // the record too, in the same pipeline
}

// indexNewInvitation writes, before the record, every index entry a new
// invitation needs — its token lookup, the listing sets, its outbox entry
// and its search entries — in one pipeline (on a cluster, split by master
// and sent at once), and, when checkID, asks whether the ID is taken in
// the same round trip. A token lookup held by another invitation is
// settled as claimToken settles it; a taken ID is idTakenError, with what
// was written already reported for the undo. With raw (one master only) the
// record follows in the same pipeline (invitations_onetrip.go), and
// ix.written says it was stored.
func (s *Store) indexNewInvitation(ctx context.Context, inv *grants.Invitation, checkID bool, raw []byte) (newIndexes, error) {
	var ix newIndexes
	var create *queuedCreate
	var exists *redis.IntCmd
	var claim *pipedScript
	var holders []*redis.StringCmd
	forms, mine := s.tokenWrite(inv.TokenHash, inv.ID)
	var listed queuedAdds[string]
	var searched queuedAdds[searchEntry]
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		if checkID {
			exists = p.Exists(ctx, s.invKey(inv.ID))
		}
		claim = forms[mine].claimCall([]any{forms[mine].value(inv.ID), "0"}).queue(ctx, p)
		holders = queueHolders(ctx, p, forms, mine)
		listed = s.queueListings(ctx, p, inv, s.indexEntries(inv))
		if len(inv.Outbox) > 0 { // markOutbox, in the same round trip
			listed.also = append(listed.also, p.ZAdd(ctx, s.outboxKey(), redis.Z{Score: 0, Member: inv.ID}))
		}
		searched = queueSearch(ctx, p, s.searchEntries(inv))
		if raw != nil {
			create = s.queueCreate(ctx, p, inv, raw, forms, mine)
		}
		return nil
	})
	ix.added, ix.searchAdded = listed.added(), searched.added()
	first, err := claim.reply(ctx, s.rdb)
	if err != nil {
		first = nil // a redirect, TRYAGAIN: claimTokenFrom runs it again
	}
	switch done, err := s.createOutcome(ctx, inv, create); {
	case err != nil:
		return ix, err
	case done != createLeft:
		return s.createdInPipeline(ctx, ix, inv, create.record, done == createWritten, forms, mine, first, listed, searched)
	}
	if exists != nil {
		n, err := exists.Result()
		if err != nil {
			return ix, fmt.Errorf("exists: %w", err)
		}
		if n > 0 {
			if first != nil && str(first, 0) == "created" {
				ix.tokenCreated = &forms[mine]
			}
			return ix, idTakenError{inv.ID}
		}
	}
	held, err := holdersOf(forms, holders)
	if err != nil {
		held = nil // read again by claimTokenFrom
	}
	if ix.tokenCreated, err = s.claimTokenFrom(ctx, inv.TokenHash, inv.ID, first, held); err != nil {
		return ix, err
	}
	if err := listed.err(); err != nil {
		return ix, err
	}
	return ix, searched.err()
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

// createdInPipeline finishes a create whose guarded record write in the
// index pipeline answered: written, or refused for a taken ID. A failed
// index write takes the record back, so the create fails whole.
func (s *Store) createdInPipeline(ctx context.Context, ix newIndexes, inv *grants.Invitation, record string, written bool,
	forms []lookupEntry, mine int, first []any, listed queuedAdds[string], searched queuedAdds[searchEntry]) (newIndexes, error) {
	if str(first, 0) == "created" {
		ix.tokenCreated = &forms[mine]
	}
	if !written {
		return ix, idTakenError{inv.ID}
	}
	err := listed.err()
	if err == nil {
		err = searched.err()
	}
	if err != nil {
		s.unwrite(ctx, inv.ID, record)
		return ix, err
	}
	ix.written = true
	return ix, nil
}
