package bolt

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/store/errs"
)

const (
	defaultListLimit = 50
	maxListLimit     = 1000
)

// invTimeKey orders invitations by creation, ties broken by ID; it is also
// the opaque list cursor.
func invTimeKey(inv *grants.Invitation) []byte {
	return append(timeKey(inv.CreatedAt), inv.ID...)
}

// putInvitation stores inv and brings every index in line with it, removing
// the entries of old (nil on create) that no longer apply.
func putInvitation(tx *bolt.Tx, old, inv *grants.Invitation) error {
	type entry struct {
		bucket     []byte
		key, value []byte
	}
	entries := func(i *grants.Invitation) []entry {
		es := []entry{
			{bInvByToken, []byte(i.TokenHash), []byte(i.ID)},
			{bInvByTime, invTimeKey(i), nil},
		}
		if i.ExternalID != "" {
			es = append(es, entry{bInvByExt, compositeKey(i.ExternalID, i.ID), nil})
		}
		if e := lower(i.Email); e != "" {
			es = append(es, entry{bInvByEmail, compositeKey(e, i.ID), nil})
		}
		if a := i.AwaitingVerification; a != nil {
			es = append(es, entry{bInvAwaiting, compositeKey(a.UserID, i.ID), nil})
		}
		return es
	}
	next := entries(inv)
	if old != nil {
		for _, o := range entries(old) {
			if !slices.ContainsFunc(next, func(n entry) bool {
				return bytes.Equal(n.bucket, o.bucket) && bytes.Equal(n.key, o.key)
			}) {
				if err := tx.Bucket(o.bucket).Delete(o.key); err != nil {
					return err
				}
			}
		}
	}
	for _, n := range next {
		if err := tx.Bucket(n.bucket).Put(n.key, n.value); err != nil {
			return err
		}
	}
	if err := indexOutbox(tx, inv); err != nil {
		return err
	}
	return putJSON(tx.Bucket(bInvitations), []byte(inv.ID), inv)
}

func loadInvitation(tx *bolt.Tx, id []byte) (*grants.Invitation, error) {
	inv := &grants.Invitation{}
	found, err := getJSON(tx.Bucket(bInvitations), id, inv)
	if err != nil || !found {
		return nil, err
	}
	return inv, nil
}

// CreateInvitation stores a copy of inv (Status defaults to pending). It
// returns ErrConflict with nil for a taken ID or token hash, and ErrConflict
// with the existing invitation for a live duplicate ExternalID.
func (s *Store) CreateInvitation(ctx context.Context, inv *grants.Invitation) (*grants.Invitation, error) {
	if inv == nil {
		return nil, fmt.Errorf("boltstore: create invitation: nil: %w", ErrInvalid)
	}
	if err := checkKeys("boltstore: create invitation", inv.ID, inv.TokenHash); err != nil {
		return nil, err
	}
	if err := checkNoNUL("boltstore: create invitation", inv.ExternalID, inv.Email); err != nil {
		return nil, err
	}
	stored := *inv
	if stored.Status == "" {
		stored.Status = grants.StatusPending
	}
	var existing *grants.Invitation
	err := s.batchRefusable(func(tx *bolt.Tx) (error, error) {
		existing = nil
		if tx.Bucket(bInvitations).Get([]byte(stored.ID)) != nil {
			return fmt.Errorf("id %s: %w", stored.ID, grants.ErrConflict), nil
		}
		if tx.Bucket(bInvByToken).Get([]byte(stored.TokenHash)) != nil {
			return fmt.Errorf("token hash: %w", grants.ErrConflict), nil
		}
		if stored.ExternalID != "" {
			now := s.now()
			prefix := append([]byte(stored.ExternalID), sep)
			for _, k := range prefixKeys(tx.Bucket(bInvByExt), prefix) {
				other, err := loadInvitation(tx, k[len(prefix):])
				if err != nil {
					return nil, err
				}
				if other != nil && other.EffectiveStatus(now) == grants.StatusPending {
					existing = other
					return fmt.Errorf("external_id %s: %w", stored.ExternalID, grants.ErrConflict), nil
				}
			}
		}
		return nil, putInvitation(tx, nil, &stored)
	})
	if err != nil {
		return existing, fmt.Errorf("boltstore: create invitation: %w", err)
	}
	return &stored, nil
}

func (s *Store) GetInvitation(ctx context.Context, id string) (*grants.Invitation, error) {
	if err := checkKeys("boltstore: get invitation", id); err != nil {
		return nil, err
	}
	var inv *grants.Invitation
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		inv, err = loadInvitation(tx, []byte(id))
		return err
	})
	if err == nil && inv == nil {
		err = grants.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("boltstore: get invitation %s: %w", id, err)
	}
	return inv, nil
}

// invitationByHash follows the token index; nil when the hash is unknown.
func invitationByHash(tx *bolt.Tx, hash string) (*grants.Invitation, error) {
	id := tx.Bucket(bInvByToken).Get([]byte(hash))
	if id == nil {
		return nil, nil
	}
	inv, err := loadInvitation(tx, id)
	if err != nil || inv == nil || inv.TokenHash != hash {
		return nil, err
	}
	return inv, nil
}

// GetInvitationByTokenHash returns the invitation whatever its status, so the
// caller can say why it cannot be used.
func (s *Store) GetInvitationByTokenHash(ctx context.Context, hash string) (*grants.Invitation, error) {
	if err := checkKeys("boltstore: get invitation by token", hash); err != nil {
		return nil, err
	}
	var inv *grants.Invitation
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		inv, err = invitationByHash(tx, hash)
		return err
	})
	if err == nil && inv == nil {
		err = grants.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("boltstore: get invitation by token: %w", err)
	}
	return inv, nil
}

// ListInvitations walks the time index backwards from the cursor, or, when
// filtering by email or external_id, reads that (small) index and sorts.
func (s *Store) ListInvitations(ctx context.Context, f grants.InvitationFilter, now time.Time) ([]grants.Invitation, string, error) {
	limit := listLimit(f.Limit)
	if field, prefix := f.SearchIndex(); field != "" {
		return s.searchInvitations(f, field, prefix, limit, now)
	}
	var before []byte // results have time keys strictly below this
	if f.Cursor != "" {
		c, err := base64.RawURLEncoding.DecodeString(f.Cursor)
		if err != nil || len(c) <= 12 {
			return nil, "", fmt.Errorf("boltstore: list invitations: %w: %w", errs.ErrBadCursor, ErrInvalid)
		}
		before = c
	}
	before, since := createdBounds(f, before)
	var page []listedInvitation
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		if idx, prefix := invFilterIndex(f); idx != nil {
			page, err = invPageByIndex(tx, f, idx, prefix, before, limit, now)
		} else {
			page, err = invPageByTime(tx, f, before, since, limit, now)
		}
		return err
	})
	if err != nil {
		return nil, "", fmt.Errorf("boltstore: list invitations: %w", err)
	}
	out, next := cutInvPage(page, limit)
	return out, next, nil
}

// listLimit is a list's page size: the default for none, capped at the maximum.
func listLimit(limit int) int {
	if limit <= 0 {
		limit = defaultListLimit
	}
	return min(limit, maxListLimit)
}

// listedInvitation is an invitation on a list page with its time-index key
// (invTimeKey), which the next page's cursor is made of.
type listedInvitation struct {
	key []byte
	inv *grants.Invitation
}

// invFilterIndex is the index that an exact email or external_id filter reads
// and the key prefix of that value there; nil when the filter has neither.
func invFilterIndex(f grants.InvitationFilter) (idx, prefix []byte) {
	switch {
	case f.Email != "":
		return bInvByEmail, append([]byte(lower(f.Email)), sep)
	case f.ExternalID != "":
		return bInvByExt, append([]byte(f.ExternalID), sep)
	}
	return nil, nil
}

// invPageByIndex reads every invitation under prefix in idx that matches f and
// lies below before, newest first, and keeps up to limit+1 of them (the one
// past the limit tells that there is a next page).
func invPageByIndex(tx *bolt.Tx, f grants.InvitationFilter, idx, prefix, before []byte, limit int, now time.Time) ([]listedInvitation, error) {
	var page []listedInvitation
	for _, k := range prefixKeys(tx.Bucket(idx), prefix) {
		inv, err := loadInvitation(tx, k[len(prefix):])
		if err != nil {
			return nil, err
		}
		if inv == nil || !f.Matches(inv, now) {
			continue
		}
		key := invTimeKey(inv)
		if before != nil && bytes.Compare(key, before) >= 0 {
			continue
		}
		page = append(page, listedInvitation{key, inv})
	}
	slices.SortFunc(page, func(a, b listedInvitation) int { return bytes.Compare(b.key, a.key) })
	return page[:min(len(page), limit+1)], nil
}

// invPageByTime walks the time index backwards from just below before (the
// newest key when nil) down to since (nil: open), and collects up to
// limit+1 invitations that match f.
func invPageByTime(tx *bolt.Tx, f grants.InvitationFilter, before, since []byte, limit int, now time.Time) ([]listedInvitation, error) {
	var page []listedInvitation
	c := tx.Bucket(bInvByTime).Cursor()
	var k []byte
	if before == nil {
		k, _ = c.Last()
	} else if k, _ = c.Seek(before); k == nil {
		k, _ = c.Last()
	} else {
		k, _ = c.Prev()
	}
	for ; k != nil && len(page) <= limit; k, _ = c.Prev() {
		if before != nil && bytes.Compare(k, before) >= 0 {
			continue
		}
		if since != nil && bytes.Compare(k, since) < 0 {
			break
		}
		inv, err := loadInvitation(tx, k[12:])
		if err != nil {
			return nil, err
		}
		if inv == nil || !f.Matches(inv, now) {
			continue
		}
		page = append(page, listedInvitation{bytes.Clone(k), inv})
	}
	return page, nil
}

// cutInvPage trims page to limit invitations; when it held more, next is the
// cursor of the page after (the time key of the last one kept).
func cutInvPage(page []listedInvitation, limit int) (out []grants.Invitation, next string) {
	if len(page) > limit {
		page = page[:limit]
		next = base64.RawURLEncoding.EncodeToString(page[limit-1].key)
	}
	out = make([]grants.Invitation, len(page))
	for i, it := range page {
		out[i] = *it.inv
	}
	return out, next
}

func (s *Store) RedeemInvitation(ctx context.Context, tokenHash string, r grants.Redemption) (*grants.Invitation, *grants.Grant, error) {
	if err := checkKeys("boltstore: redeem invitation", tokenHash, r.UserID); err != nil {
		return nil, nil, err
	}
	if r.At.IsZero() {
		r.At = s.now()
	}
	var (
		inv *grants.Invitation
		g   *grants.Grant
	)
	err := s.batchRefusable(func(tx *bolt.Tx) (error, error) {
		inv, g = nil, nil
		var err error
		if inv, err = invitationByHash(tx, tokenHash); err != nil {
			return nil, err
		}
		if inv == nil {
			return grants.ErrNotFound, nil
		}
		old := *inv
		if refusal := inv.ApplyRedemption(r); refusal != nil {
			return refusal, nil
		}
		if g, err = loadGrant(tx, r.UserID); err != nil {
			return nil, err
		}
		g.MergeRedemption(inv, r.Claims, r.At)
		if err := putGrant(tx, g); err != nil {
			return nil, err
		}
		return nil, putInvitation(tx, &old, inv)
	})
	if err != nil {
		// The invitation comes back with refusals so the caller can explain them.
		return inv, nil, fmt.Errorf("boltstore: redeem invitation: %w", err)
	}
	return inv, g, nil
}

// RevokeInvitation keeps the token index entry, so presenting the token later
// says "revoked" rather than "unknown".
func (s *Store) RevokeInvitation(ctx context.Context, id string, at time.Time, events ...grants.OutboxEvent) (*grants.Invitation, error) {
	return s.transition("revoke invitation", id, func(inv *grants.Invitation) (bool, error) {
		return inv.ApplyRevocation(at, events)
	})
}

// DeclineInvitation keeps the token lookup too, so the link later says
// "declined".
func (s *Store) DeclineInvitation(ctx context.Context, id, userID string, at time.Time, events ...grants.OutboxEvent) (*grants.Invitation, error) {
	return s.transition("decline invitation", id, func(inv *grants.Invitation) (bool, error) {
		return inv.ApplyDecline(userID, at, events)
	})
}

func (s *Store) ReplaceInvitationToken(ctx context.Context, id, newHash string, expiresAt, at time.Time, events ...grants.OutboxEvent) (*grants.Invitation, error) {
	if err := checkKeys("boltstore: replace invitation token", newHash); err != nil {
		return nil, err
	}
	// putInvitation drops the old hash from the index: the old link dies.
	return s.transition("replace invitation token", id, func(inv *grants.Invitation) (bool, error) {
		return true, inv.ApplyNewToken(newHash, expiresAt, at, events)
	})
}

// transition runs change on the stored invitation in a batch; change returns
// whether to store it and a refusal, which is returned with the invitation.
func (s *Store) transition(what, id string, change func(inv *grants.Invitation) (bool, error)) (*grants.Invitation, error) {
	if err := checkKeys("boltstore: "+what, id); err != nil {
		return nil, err
	}
	var inv *grants.Invitation
	err := s.batchRefusable(func(tx *bolt.Tx) (error, error) {
		inv = nil
		var err error
		if inv, err = loadInvitation(tx, []byte(id)); err != nil {
			return nil, err
		}
		if inv == nil {
			return grants.ErrNotFound, nil
		}
		old := *inv
		write, refusal := change(inv)
		if refusal != nil {
			return refusal, nil
		}
		if !write {
			return nil, nil
		}
		if old.TokenHash != inv.TokenHash {
			if owner := tx.Bucket(bInvByToken).Get([]byte(inv.TokenHash)); owner != nil && string(owner) != inv.ID {
				*inv = old
				return fmt.Errorf("token hash: %w", grants.ErrConflict), nil
			}
		}
		return nil, putInvitation(tx, &old, inv)
	})
	if err != nil {
		return inv, fmt.Errorf("boltstore: %s %s: %w", what, id, err)
	}
	return inv, nil
}

// UpdateInvitation uses a plain Update, not a batch: fn is the caller's code
// and may have side effects that must not run twice.
func (s *Store) UpdateInvitation(ctx context.Context, id string, fn func(*grants.Invitation) error) (*grants.Invitation, error) {
	if err := checkKeys("boltstore: update invitation", id); err != nil {
		return nil, err
	}
	if fn == nil {
		return nil, fmt.Errorf("boltstore: update invitation %s: nil fn: %w", id, ErrInvalid)
	}
	var inv *grants.Invitation
	err := s.db.Update(func(tx *bolt.Tx) error {
		var err error
		if inv, err = loadInvitation(tx, []byte(id)); err != nil {
			return err
		}
		if inv == nil {
			return grants.ErrNotFound
		}
		old := *inv
		if err := fn(inv); err != nil {
			return err
		}
		if inv.ID != old.ID || inv.TokenHash != old.TokenHash || inv.Status != old.Status {
			return fmt.Errorf("fn changed id, token hash or status: %w", ErrInvalid)
		}
		if err := checkNoNUL("fn result", inv.ExternalID, inv.Email); err != nil {
			return err
		}
		return putInvitation(tx, &old, inv)
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: update invitation %s: %w", id, err)
	}
	return inv, nil
}

// AwaitingVerification: see grants.InvitationStore. The per-user index
// (bInvAwaiting), every entry re-checked.
func (s *Store) AwaitingVerification(ctx context.Context, userID string, now time.Time) ([]grants.Invitation, error) {
	if err := checkKeys("boltstore: awaiting verification", userID); err != nil {
		return nil, err
	}
	var out []grants.Invitation
	err := s.db.View(func(tx *bolt.Tx) error {
		p := append([]byte(userID), sep)
		c := tx.Bucket(bInvAwaiting).Cursor()
		for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
			inv, err := loadInvitation(tx, k[len(p):])
			if err != nil {
				return err
			}
			if inv != nil && inv.AwaitsVerificationBy(userID, now) {
				out = append(out, *inv)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: awaiting verification of %s: %w", userID, err)
	}
	slices.SortFunc(out, func(a, b grants.Invitation) int { return b.CreatedAt.Compare(a.CreatedAt) })
	return out, nil
}
