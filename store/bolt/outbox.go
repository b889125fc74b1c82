package bolt

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/usher-oidc/usher/grants"
)

// The outbox index: one entry per invitation whose record holds events not
// yet acknowledged, written by putInvitation in the same transaction as the
// record, so the index and the events never disagree.

// indexOutbox brings inv's outbox entry in line with its record: due now
// when it holds events (a write that adds events makes them due again), gone
// when it holds none.
func indexOutbox(tx *bolt.Tx, inv *grants.Invitation) error {
	return indexOutboxEntry(tx, inv.ID, len(inv.Outbox) > 0)
}

// indexOutboxEntry makes id due (holding events) or drops it.
func indexOutboxEntry(tx *bolt.Tx, id string, holds bool) error {
	b := tx.Bucket(bOutbox)
	if !holds {
		return b.Delete([]byte(id))
	}
	return b.Put([]byte(id), leaseValue(time.Time{}))
}

func leaseValue(until time.Time) []byte {
	v := make([]byte, 8)
	if !until.IsZero() {
		binary.BigEndian.PutUint64(v, uint64(until.UnixMicro()))
	}
	return v
}

func leaseOf(v []byte) time.Time {
	if len(v) != 8 {
		return time.Time{}
	}
	n := binary.BigEndian.Uint64(v)
	if n == 0 {
		return time.Time{}
	}
	return time.UnixMicro(int64(n))
}

// ClaimOutbox leases up to limit invitations whose events are due.
func (s *Store) ClaimOutbox(ctx context.Context, now time.Time, limit int, lease time.Duration) ([]string, error) {
	if limit <= 0 {
		return nil, nil
	}
	var ids []string
	err := s.batch(func(tx *bolt.Tx) error {
		ids = ids[:0]
		b := tx.Bucket(bOutbox)
		c := b.Cursor()
		var claimed [][]byte
		for k, v := c.First(); k != nil && len(claimed) < limit; k, v = c.Next() {
			if until := leaseOf(v); until.IsZero() || !until.After(now) {
				claimed = append(claimed, append([]byte(nil), k...))
			}
		}
		for _, k := range claimed {
			if err := b.Put(k, leaseValue(now.Add(lease))); err != nil {
				return err
			}
			ids = append(ids, string(k))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: claim outbox: %w", err)
	}
	return ids, nil
}

// AckOutbox drops the acknowledged events from the invitation's record;
// putInvitation keeps the index in step.
func (s *Store) AckOutbox(ctx context.Context, invitationID string, eventIDs []string) error {
	if userID, ok := grants.OutboxUser(invitationID); ok {
		return s.ackGrantOutbox(userID, eventIDs)
	}
	if err := checkKeys("boltstore: ack outbox", invitationID); err != nil {
		return err
	}
	err := s.batch(func(tx *bolt.Tx) error {
		inv, err := loadInvitation(tx, []byte(invitationID))
		if err != nil {
			return err
		}
		if inv == nil {
			return tx.Bucket(bOutbox).Delete([]byte(invitationID))
		}
		old := *inv
		if !inv.AckEvents(eventIDs) && len(inv.Outbox) > 0 {
			return nil // nothing acknowledged; keep the lease
		}
		return putInvitation(tx, &old, inv)
	})
	if err != nil {
		return fmt.Errorf("boltstore: ack outbox %s: %w", invitationID, err)
	}
	return nil
}

// ackGrantOutbox is AckOutbox for a user's grant events.
func (s *Store) ackGrantOutbox(userID string, eventIDs []string) error {
	if err := checkKeys("boltstore: ack grant outbox", userID); err != nil {
		return err
	}
	err := s.batch(func(tx *bolt.Tx) error {
		g, err := loadGrant(tx, userID)
		if err != nil {
			return err
		}
		if !g.AckEvents(eventIDs) && len(g.Outbox) > 0 {
			return nil // nothing acknowledged; keep the lease
		}
		if len(g.Outbox) == 0 && tx.Bucket(bGrants).Get([]byte(userID)) == nil {
			return tx.Bucket(bOutbox).Delete([]byte(grants.UserOutboxID(userID)))
		}
		return putGrant(tx, g)
	})
	if err != nil {
		return fmt.Errorf("boltstore: ack grant outbox of %s: %w", userID, err)
	}
	return nil
}

var _ grants.OutboxBatcher = (*Store)(nil)

// GetInvitations reads a claim's invitations in one read transaction.
func (s *Store) GetInvitations(ctx context.Context, ids []string) ([]*grants.Invitation, error) {
	if err := checkKeys("boltstore: get invitations", ids...); err != nil {
		return nil, err
	}
	out := make([]*grants.Invitation, len(ids))
	err := s.db.View(func(tx *bolt.Tx) error {
		for i, id := range ids {
			inv, err := loadInvitation(tx, []byte(id))
			if err != nil {
				return err
			}
			out[i] = inv
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: get invitations: %w", err)
	}
	return out, nil
}

// AckOutboxBatch acknowledges a claim's events in one transaction (one
// commit instead of one per invitation).
func (s *Store) AckOutboxBatch(ctx context.Context, acks map[string][]string) error {
	for id, events := range acks {
		if _, isUser := grants.OutboxUser(id); isUser {
			if err := s.AckOutbox(ctx, id, events); err != nil {
				return err
			}
			delete(acks, id)
		}
	}
	for id := range acks {
		if err := checkKeys("boltstore: ack outbox", id); err != nil {
			return err
		}
	}
	err := s.batch(func(tx *bolt.Tx) error {
		for id, events := range acks {
			inv, err := loadInvitation(tx, []byte(id))
			if err != nil {
				return err
			}
			if inv == nil {
				if err := tx.Bucket(bOutbox).Delete([]byte(id)); err != nil {
					return err
				}
				continue
			}
			old := *inv
			if !inv.AckEvents(events) && len(inv.Outbox) > 0 {
				continue // nothing acknowledged; keep the lease
			}
			if err := putInvitation(tx, &old, inv); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("boltstore: ack outbox: %w", err)
	}
	return nil
}
