package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
)

// Invitations.
//
//	{prefix}{i:<id>}          "version|status|payload" (recordformat.go) — no TTL: kept for audit
//	{prefix}it:<token hash>   invitation ID (lookup; readers re-check the invitation's TokenHash);
//	                          from v3 a field of {prefix}ib:<bucket>, from v5 a
//	                          shorter one of {prefix}ih:<bucket> (invitations_token.go)
//	{prefix}{x:<external_id>} ID of the pending invitation holding the external_id (dedupe lock)
//	{prefix}inv:t             sorted set of invitation IDs, scored by created_at µs:
//	                          every invitation written below v4 (v4 stops writing it)
//	{prefix}ie:<lower email>, ic:<client_id>, ix:<external_id>, iaw:<user>
//	                          the same, per email (below v3 only: emailSource) /
//	                          client / external_id / user awaiting its
//	                          email's verification
//	{prefix}inv:nc            from v4, the same for invitations without a client
//	{prefix}inv:clients       from v4, a set of the client IDs with an ic: set;
//	                          inv:t, inv:nc and those ic: sets together hold every
//	                          invitation (invitations_union.go)
//	{prefix}inv:se, inv:sx    prefix search by email, external_id; from v5 the
//	                          ID in their members packed (invitations_search.go)
//
// Every change of an invitation is a compare-and-set on its version inside
// Redis (invitationCAS), so it is atomic whatever Go computed in between.
// Index entries live in other slots: they are added before the record that
// needs them and removed after it stopped needing them, and every reader
// re-checks the record, so a crash or a race leaves at worst a stale entry.
//
// Redemption spans two slots (invitation and grant) and cannot be one script
// on a cluster unless grants and invitations shared a slot, which would put
// every user's grant in one. It is three steps:
//  1. a pending-merge entry for the invitation goes into the redeemer's grant
//     slot ({g:user}:p);
//  2. the CAS on the invitation moves it pending → redeemed (the single-winner
//     step: the script refuses unless the status is still pending and the
//     version is the one read);
//  3. the merge script on the grant slot applies roles and claims once per
//     invitation ID (the grant's invitation list is the idempotency record)
//     and clears the pending entry.
//
// A crash between 2 and 3 leaves the pending entry: the next GetGrant of that
// user (every token issuance reads it) or a retried redemption applies the
// merge. Losers of step 2 clear their pending entries; a leftover entry of a
// redemption that never happened is dropped once the invitation is no longer
// pending or is older than pendingMergeAge.

const (
	defaultListLimit = 50
	maxListLimit     = 1000
)

func (s *Store) invKey(id string) string { return s.tagged("i", id) }

// loadInvitation returns the invitation and its version; nil when absent.
func (s *Store) loadInvitation(ctx context.Context, id string) (*grants.Invitation, string, error) {
	inv, version, _, err := s.loadInvitationRecord(ctx, id)
	return inv, version, err
}

// loadInvitationRecord is loadInvitation with the stored record itself
// ("" when absent).
func (s *Store) loadInvitationRecord(ctx context.Context, id string) (*grants.Invitation, string, string, error) {
	raw, err := s.rdb.Get(ctx, s.invKey(id)).Result()
	if errors.Is(err, redis.Nil) {
		return nil, "", "", nil
	}
	if err != nil {
		return nil, "", "", err
	}
	inv, version, err := decodeInvitation(id, raw)
	return inv, version, raw, err
}

// loadInvitations loads several invitations in one pipeline (the cluster
// client splits it by node); missing ones come back nil.
func (s *Store) loadInvitations(ctx context.Context, ids []string) ([]*grants.Invitation, error) {
	invs, _, err := s.loadInvitationVersions(ctx, ids)
	return invs, err
}

// loadInvitationVersions is loadInvitations with each record's version.
func (s *Store) loadInvitationVersions(ctx context.Context, ids []string) ([]*grants.Invitation, []string, error) {
	cmds := make([]*redis.StringCmd, len(ids))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.Get(ctx, s.invKey(id))
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, nil, err
	}
	out, versions := make([]*grants.Invitation, len(ids)), make([]string, len(ids))
	for i, c := range cmds {
		v, err := c.Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		if out[i], versions[i], err = decodeInvitation(ids[i], v); err != nil {
			return nil, nil, fmt.Errorf("invitation %s: %w", ids[i], err)
		}
	}
	return out, versions, nil
}

// casInvitation writes inv if the stored version is still version (and, when
// required is set, the stored status is required). It answers "ok", "retry",
// "notfound" or "status".
func (s *Store) casInvitation(ctx context.Context, inv *grants.Invitation, version string, required grants.Status, before ...redis.Cmder) (string, error) {
	raw, err := s.encodeInvitation(inv)
	if err != nil {
		return "", err
	}
	// The writes that must precede the record's (the caller's, then the
	// outbox entry) are confirmed before it is sent; the record's write and
	// the second mark then share a round trip (casThenMark): two round
	// trips where there were up to four.
	if len(inv.Outbox) > 0 {
		before = append(before, s.outboxDue(ctx, inv.ID))
	}
	if err := s.processConfirmed(ctx, before); err != nil {
		return "", err
	}
	res, err := s.casThenMark(ctx, inv, "update", version, raw, string(inv.Status), string(required))
	if err != nil {
		return "", err
	}
	return str(res, 0), nil
}

// markOutboxAgain marks inv's events due once more, after the write that
// stored them. The entry went in before the write, so that a crash cannot
// leave events without one; but a runner that claimed it in between read
// the record as it was, found nothing to deliver (no record yet, or not
// these events) and dropped the entry. A runner that already has the
// events delivers them; the next claim finds nothing left and drops it.
func (s *Store) markOutboxAgain(ctx context.Context, inv *grants.Invitation) {
	if err := s.markOutbox(ctx, inv); err != nil {
		s.log.Error("redisstore: marking an invitation's events due after its write", "invitation_id", inv.ID, "err", err)
	}
}

// indexEntries are the listing sorted sets s puts inv in. From v3 on that
// leaves out the per-email set ie:, which only older versions read: listing
// by email reads the search index (emailSource). From v4 on it leaves out
// inv:t: an invitation goes to its client's set, or to inv:nc without one,
// and every version reads their union as the full listing (unionKeys).
func (s *Store) indexEntries(inv *grants.Invitation) []string {
	keys := s.listingKeys(inv, !s.formatV3())
	switch {
	case !s.formatV4():
		keys = append(keys, s.allInvKey())
	case inv.ClientID == "":
		keys = append(keys, s.noClientKey())
	}
	return keys
}

// allIndexEntries are the listing sets inv may be in, whichever version
// wrote it: what a removal takes it out of.
func (s *Store) allIndexEntries(inv *grants.Invitation) []string {
	keys := append(s.listingKeys(inv, true), s.allInvKey())
	if inv.ClientID == "" {
		keys = append(keys, s.noClientKey())
	}
	return keys
}

// listingKeys are the per-field listing sets of inv.
func (s *Store) listingKeys(inv *grants.Invitation, perEmail bool) []string {
	var keys []string
	if e := lower(inv.Email); e != "" && perEmail {
		keys = append(keys, s.key("ie", e))
	}
	if inv.ClientID != "" {
		keys = append(keys, s.key("ic", inv.ClientID))
	}
	if inv.ExternalID != "" {
		keys = append(keys, s.key("ix", inv.ExternalID))
	}
	if a := inv.AwaitingVerification; a != nil {
		// Left behind when a redemption clears the record: readers re-check.
		keys = append(keys, s.key("iaw", a.UserID))
	}
	return keys
}

// queueListings queues, in p, inv's addition to each listing key, scored by
// its creation time (never moving an existing member).
// From v4, adding it to its client's set also records the client in
// inv:clients (never taken back: an empty ic: set costs a read, not a miss).
func (s *Store) queueListings(ctx context.Context, p redis.Pipeliner, inv *grants.Invitation, keys []string) queuedAdds[string] {
	q := queuedAdds[string]{entries: keys, cmds: make([]*redis.IntCmd, len(keys))}
	score := float64(micros(inv.CreatedAt))
	for i, k := range keys {
		q.cmds[i] = p.ZAddNX(ctx, k, redis.Z{Score: score, Member: inv.ID})
		if s.formatV4() && inv.ClientID != "" && k == s.key("ic", inv.ClientID) {
			q.also = append(q.also, p.SAdd(ctx, s.clientsKey(), inv.ClientID))
		}
	}
	return q
}

// queuedAdds are ZADDs of entries queued in a pipeline (and also, more
// whose answers only count for errors: the outbox mark of a create, the
// client's entry in inv:clients). Once it ran, added lists the entries each
// ZADD added: what an undo may take back without taking another writer's.
type queuedAdds[E any] struct {
	entries []E
	cmds    []*redis.IntCmd
	also    []*redis.IntCmd
}

func (q queuedAdds[E]) added() []E {
	var out []E
	for i, c := range q.cmds {
		if c.Val() > 0 {
			out = append(out, q.entries[i])
		}
	}
	return out
}

func (q queuedAdds[E]) err() error {
	cmds := make([]redis.Cmder, 0, len(q.cmds)+len(q.also))
	for _, c := range q.cmds {
		cmds = append(cmds, c)
	}
	for _, c := range q.also {
		cmds = append(cmds, c)
	}
	return firstErr(cmds)
}

func (s *Store) removeIndexEntries(ctx context.Context, id string, keys []string) {
	if len(keys) == 0 {
		return
	}
	ctx = context.WithoutCancel(ctx)
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range keys {
			p.ZRem(ctx, k, id)
		}
		return nil
	})
	if err != nil {
		s.log.Warn("redisstore: removing invitation index entries", "invitation_id", id, "err", err)
	}
}

// claimToken points the token lookup of hash (tokenWrite: the form s
// writes) at id. It returns the entry it created (nil: it was there);
// ErrConflict when another invitation holds that hash, in any form.
func (s *Store) claimToken(ctx context.Context, hash, id string) (*lookupEntry, error) {
	return s.claimTokenFrom(ctx, hash, id, nil, nil)
}

// claimTokenFrom is claimToken given the reply of its first claimIndex run
// on the form tokenWrite names, if it ran already (nil: not yet), and what
// the other forms held then (nil: not read; tokenHolders' order).
func (s *Store) claimTokenFrom(ctx context.Context, hash, id string, first []any, holders []string) (*lookupEntry, error) {
	forms, mine := s.tokenWrite(hash, id)
	collided := false
	held := func(raw string) (bool, error) {
		inv, _, err := s.loadInvitation(ctx, forms[mine].id(raw))
		if err != nil || inv == nil || inv.TokenHash == hash {
			return inv != nil, err
		}
		// Another hash with the same short field: live, but not this one's.
		collided = forms[mine].short && s.tokenForms(inv.TokenHash)[0] == forms[mine]
		return collided, nil
	}
	created, err := s.claimEntry(ctx, forms[mine], []any{forms[mine].value(id), "0"}, first, held)
	if collided && errors.Is(err, errLookupHeld) {
		mine, holders = 1, nil // the exact form; what the others hold is read again
		created, err = s.claimEntry(ctx, forms[mine], []any{id, "0"}, nil, held)
	}
	if errors.Is(err, errLookupHeld) {
		err = fmt.Errorf("token hash: %w", grants.ErrConflict)
	}
	if err != nil {
		return nil, err
	}
	var mineCreated *lookupEntry
	if created {
		mineCreated = &forms[mine]
	}
	if holders == nil {
		if holders, err = s.tokenHolders(ctx, hash); err != nil {
			return mineCreated, err
		}
	}
	for i, other := range holders {
		if i == mine {
			continue
		}
		if err := s.heldElsewhere(ctx, hash, id, other); err != nil {
			if created {
				s.releaseEntry(ctx, forms[mine], id)
			}
			return nil, err
		}
	}
	return mineCreated, nil
}

// claimExternalID makes id the pending holder of ext. If a live pending
// invitation holds it, that one comes back with ErrConflict.
func (s *Store) claimExternalID(ctx context.Context, ext, id string) (*grants.Invitation, error) {
	k := s.tagged("x", ext)
	expected := ""
	for range casRetries {
		res, err := s.runScript(ctx, claimHolder, []string{k}, id, expected)
		if err != nil {
			return nil, err
		}
		if str(res, 0) == "ok" {
			return nil, nil
		}
		holder := str(res, 1)
		if holder != "" {
			other, _, err := s.loadInvitation(ctx, holder)
			if err != nil {
				return nil, err
			}
			if other != nil && other.ExternalID == ext && other.EffectiveStatus(s.now()) == grants.StatusPending {
				return other, fmt.Errorf("external_id %s: %w", ext, grants.ErrConflict)
			}
		}
		expected = holder // stale: replace it, unless it changes meanwhile
	}
	return nil, fmt.Errorf("external_id %s: contended: %w", ext, grants.ErrConflict)
}

// CreateInvitation stores a copy of inv (Status defaults to pending). It
// returns ErrConflict with nil for a taken ID or token hash, and ErrConflict
// with the existing invitation for a live duplicate ExternalID: the
// external_id's holder key is claimed by a script first, so of concurrent
// creates with one external_id exactly one succeeds.
func (s *Store) CreateInvitation(ctx context.Context, inv *grants.Invitation) (*grants.Invitation, error) {
	if inv == nil {
		return nil, fmt.Errorf("redisstore: create invitation: nil: %w", ErrInvalid)
	}
	if err := checkKeys("redisstore: create invitation", inv.ID, inv.TokenHash); err != nil {
		return nil, err
	}
	stored := *inv
	if stored.Status == "" {
		stored.Status = grants.StatusPending
	}
	existing, err := s.createInvitation(ctx, &stored, true)
	if err != nil {
		return existing, fmt.Errorf("redisstore: create invitation: %w", err)
	}
	return &stored, nil
}

// idTakenError is createInvitation's ErrConflict for an ID already stored, as
// opposed to a token hash or external_id another invitation holds: import
// skips the first and fails on the others.
type idTakenError struct{ id string }

func (e idTakenError) Error() string { return "id " + e.id + ": " + grants.ErrConflict.Error() }
func (e idTakenError) Unwrap() error { return grants.ErrConflict }

// createInvitation stores inv with its indexes; claimExt makes it the holder
// of its external_id (import leaves that to the pending one).
func (s *Store) createInvitation(ctx context.Context, inv *grants.Invitation, claimExt bool) (*grants.Invitation, error) {
	raw, err := s.encodeInvitation(inv)
	if err != nil {
		return nil, err
	}
	var undo []func()
	rollback := func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	checked := false
	if inv.ExternalID != "" && claimExt {
		// A taken ID is answered before the external_id is claimed: its
		// holder may be that very invitation, whose claim an undo would take.
		if err := s.idFree(ctx, inv.ID); err != nil {
			return nil, err
		}
		checked = true
		if existing, err := s.claimExternalID(ctx, inv.ExternalID, inv.ID); err != nil {
			return existing, err
		}
		undo = append(undo, func() { s.release(ctx, s.tagged("x", inv.ExternalID), inv.ID) })
	}
	var inPipeline []byte
	if s.oneMaster() {
		inPipeline = raw
	}
	ix, err := s.indexNewInvitation(ctx, inv, !checked, inPipeline)
	if e := ix.tokenCreated; e != nil {
		undo = append(undo, func() { s.releaseEntry(ctx, *e, inv.ID) })
	}
	undo = append(undo, func() { s.removeIndexEntries(ctx, inv.ID, ix.added) }, func() { s.dropSearchEntries(ctx, ix.searchAdded) })
	if err != nil {
		rollback()
		return nil, err
	}
	if ix.written {
		return nil, nil
	}
	res, err := s.casThenMark(ctx, inv, "create", "", raw, string(inv.Status), "")
	if err == nil && str(res, 0) == "conflict" {
		err = idTakenError{inv.ID}
	}
	if err != nil {
		rollback()
		return nil, err
	}
	return nil, nil
}

func (s *Store) GetInvitation(ctx context.Context, id string) (*grants.Invitation, error) {
	if err := checkKeys("redisstore: get invitation", id); err != nil {
		return nil, err
	}
	inv, _, err := s.loadInvitation(ctx, id)
	if err == nil && inv == nil {
		err = grants.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("redisstore: get invitation %s: %w", id, err)
	}
	return inv, nil
}

// GetInvitationByTokenHash returns the invitation whatever its status, so the
// caller can say why it cannot be used.
func (s *Store) GetInvitationByTokenHash(ctx context.Context, hash string) (*grants.Invitation, error) {
	if err := checkKeys("redisstore: get invitation by token", hash); err != nil {
		return nil, err
	}
	inv, _, err := s.invitationByHash(ctx, hash)
	if err == nil && inv == nil {
		err = grants.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("redisstore: get invitation by token: %w", err)
	}
	return inv, nil
}

// loadInvitationCopy deep-copies inv through JSON (fn may alias its slices and maps).
func (s *Store) loadInvitationCopy(inv *grants.Invitation) (*grants.Invitation, string, error) {
	raw, err := json.Marshal(inv)
	if err != nil {
		return nil, "", err
	}
	cp := &grants.Invitation{}
	if err := json.Unmarshal(raw, cp); err != nil {
		return nil, "", err
	}
	return cp, "", nil
}
