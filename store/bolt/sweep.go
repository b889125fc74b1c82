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

// Sweep deletes expired ephemeral records (auth requests, codes, refresh
// tokens, revocation markers, browser sessions, idempotency records). Reads
// already treat them as absent; this only reclaims space.
func (s *Store) Sweep(ctx context.Context) (int, error) {
	type expiring struct {
		ExpiresAt       time.Time `json:"expires_at"`
		FamilyExpiresAt time.Time `json:"family_expires_at"`
		Until           time.Time `json:"until"`
	}
	isExpired := map[string]func(e *expiring, now time.Time) bool{
		string(bAuthReqs):    func(e *expiring, now time.Time) bool { return expired(e.ExpiresAt, now) },
		string(bCodes):       func(e *expiring, now time.Time) bool { return expired(e.ExpiresAt, now) },
		string(bBrowser):     func(e *expiring, now time.Time) bool { return expired(e.ExpiresAt, now) },
		string(bBrowserFlow): func(e *expiring, now time.Time) bool { return expired(e.ExpiresAt, now) },
		string(bIdempotency): func(e *expiring, now time.Time) bool { return expired(e.ExpiresAt, now) },
		string(bRefresh): func(e *expiring, now time.Time) bool {
			return refreshExpired(e.ExpiresAt, e.FamilyExpiresAt, now)
		},
		string(bRevFamily): func(e *expiring, now time.Time) bool { return expired(e.Until, now) },
		string(bRevJTI):    func(e *expiring, now time.Time) bool { return expired(e.Until, now) },
		// A session's link to a family is useless once the family is dead.
		string(bSessionFams): func(e *expiring, now time.Time) bool { return expired(e.Until, now) },
	}
	total := 0
	for _, name := range [][]byte{bAuthReqs, bCodes, bBrowserFlow, bRefresh, bRevFamily, bRevJTI, bSessionFams, bBrowser, bIdempotency} {
		check := isExpired[string(name)]
		db := s.db
		if slices.ContainsFunc(flowBuckets, func(b []byte) bool { return bytes.Equal(b, name) }) {
			db = s.flow
		}
		var from []byte
		for {
			if err := ctx.Err(); err != nil {
				return total, err
			}
			var next []byte
			removed := 0
			err := db.Update(func(tx *bolt.Tx) error {
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
			if err != nil {
				return total, fmt.Errorf("boltstore: sweep %s: %w", name, err)
			}
			total += removed
			if next == nil {
				break
			}
			from = next
		}
	}
	return total, nil
}
