package bolt

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// sweeper runs Sweep every interval until Close.
func (s *Store) sweeper(interval time.Duration) {
	defer close(s.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithCancel(context.Background())
			go func() {
				select {
				case <-s.stop:
				case <-ctx.Done():
				}
				cancel()
			}()
			n, err := s.Sweep(ctx)
			cancel()
			if err != nil && !errors.Is(err, context.Canceled) {
				s.log.Error("boltstore: sweep failed", "err", err)
			} else if n > 0 {
				s.log.Debug("boltstore: swept expired records", "removed", n)
			}
		}
	}
}

// sweepChunk bounds how many records one sweep transaction looks at, so the
// sweeper never holds the single writer lock for long.
const sweepChunk = 2000

// expiring holds the expiry fields of the records Sweep looks at; each
// bucket's records carry the ones its rule reads.
type expiring struct {
	ExpiresAt       time.Time `json:"expires_at"`
	FamilyExpiresAt time.Time `json:"family_expires_at"`
	Until           time.Time `json:"until"`
}

// sweepRules lists, in sweep order, the buckets Sweep empties of expired
// records and when a record there has expired.
var sweepRules = []struct {
	bucket  []byte
	expired func(e *expiring, now time.Time) bool
}{
	{bAuthReqs, func(e *expiring, now time.Time) bool { return expired(e.ExpiresAt, now) }},
	{bCodes, func(e *expiring, now time.Time) bool { return expired(e.ExpiresAt, now) }},
	{bBrowserFlow, func(e *expiring, now time.Time) bool { return expired(e.ExpiresAt, now) }},
	{bRefresh, func(e *expiring, now time.Time) bool {
		return refreshExpired(e.ExpiresAt, e.FamilyExpiresAt, now)
	}},
	{bRevFamily, func(e *expiring, now time.Time) bool { return expired(e.Until, now) }},
	{bRevJTI, func(e *expiring, now time.Time) bool { return expired(e.Until, now) }},
	// A session's link to a family is useless once the family is dead.
	{bSessionFams, func(e *expiring, now time.Time) bool { return expired(e.Until, now) }},
	{bBrowser, func(e *expiring, now time.Time) bool { return expired(e.ExpiresAt, now) }},
	{bIdempotency, func(e *expiring, now time.Time) bool { return expired(e.ExpiresAt, now) }},
}

// Sweep deletes expired ephemeral records (auth requests, codes, refresh
// tokens, revocation markers, browser sessions, idempotency records). Reads
// already treat them as absent; this only reclaims space.
func (s *Store) Sweep(ctx context.Context) (int, error) {
	total := 0
	for _, r := range sweepRules {
		removed, err := s.sweepBucket(ctx, r.bucket, r.expired)
		total += removed
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// sweepBucket deletes the expired records of bucket name (in the flow file
// or the main one) one chunk per transaction, and counts them.
func (s *Store) sweepBucket(ctx context.Context, name []byte, check func(e *expiring, now time.Time) bool) (int, error) {
	db := s.db
	if slices.ContainsFunc(flowBuckets, func(b []byte) bool { return bytes.Equal(b, name) }) {
		db = s.flow
	}
	total := 0
	var from []byte
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		removed, next, err := s.sweepChunkFrom(db, name, from, check)
		if err != nil {
			return total, fmt.Errorf("boltstore: sweep %s: %w", name, err)
		}
		total += removed
		if next == nil {
			return total, nil
		}
		from = next
	}
}

// sweepChunkFrom looks at up to sweepChunk records of bucket name from key
// from on (nil: the first) in one write transaction and deletes the expired
// ones; next is the key to resume at, nil once the bucket is done.
func (s *Store) sweepChunkFrom(db *bolt.DB, name, from []byte, check func(e *expiring, now time.Time) bool) (removed int, next []byte, err error) {
	err = db.Update(func(tx *bolt.Tx) error {
		next, removed = nil, 0
		now := s.now()
		b := tx.Bucket(name)
		c := b.Cursor()
		var doomed [][]byte
		k, v := c.First()
		if from != nil {
			k, v = c.Seek(from)
		}
		for seen := 0; k != nil; k, v = c.Next() {
			if seen == sweepChunk {
				next = bytes.Clone(k)
				break
			}
			seen++
			var e expiring
			if err := json.Unmarshal(v, &e); err != nil {
				// A record we cannot read is useless to every reader too.
				doomed = append(doomed, bytes.Clone(k))
				continue
			}
			if check(&e, now) {
				doomed = append(doomed, bytes.Clone(k))
			}
		}
		// Deleting after the scan: bbolt cursors may skip a key when
		// the bucket changes under them.
		for _, k := range doomed {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		removed = len(doomed)
		return nil
	})
	return removed, next, err
}
