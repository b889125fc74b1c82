package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/usher-oidc/usher/grants"
)

// The funnel counters: bFunnel holds day sep clientID sep field → uint64
// (big endian); bFunnelEvents marks the events counted (event ID → day), so
// a repeated hand-over counts once. Both are written in one transaction.
// Markers are kept (like the audit log); they are a few dozen bytes each.

// AddFunnel counts one event unless its ID was counted already.
func (s *Store) AddFunnel(ctx context.Context, eventID string, day time.Time, clientID, stage string, redeemSeconds int64) error {
	if eventID == "" || day.IsZero() || !grants.ValidFunnelStage(stage) {
		return fmt.Errorf("boltstore: add funnel: event id, day and a known stage are required: %w", ErrInvalid)
	}
	if err := checkKeys("boltstore: add funnel", eventID); err != nil {
		return err
	}
	if err := checkNoNUL("boltstore: add funnel", clientID); err != nil {
		return err
	}
	return s.batch(func(tx *bolt.Tx) error {
		return addFunnelTx(tx, eventID, grants.FunnelDayKey(day), clientID, grants.FunnelIncrements(stage, redeemSeconds))
	})
}

// addFunnelTx counts one event in tx unless its marker says it was counted.
func addFunnelTx(tx *bolt.Tx, eventID, dk, clientID string, inc map[string]int64) error {
	marks := tx.Bucket(bFunnelEvents)
	if marks.Get([]byte(eventID)) != nil {
		return nil
	}
	if err := marks.Put([]byte(eventID), []byte(dk)); err != nil {
		return err
	}
	b := tx.Bucket(bFunnel)
	for field, delta := range inc {
		key := funnelKey(dk, clientID, field)
		var n uint64
		if v := b.Get(key); len(v) == 8 {
			n = binary.BigEndian.Uint64(v)
		}
		var out [8]byte
		binary.BigEndian.PutUint64(out[:], uint64(int64(n)+delta))
		if err := b.Put(key, out[:]); err != nil {
			return err
		}
	}
	return nil
}

func funnelKey(day, clientID, field string) []byte {
	k := make([]byte, 0, len(day)+len(clientID)+len(field)+2)
	k = append(k, day...)
	k = append(k, sep)
	k = append(k, clientID...)
	k = append(k, sep)
	return append(k, field...)
}

// Funnel reads the counters of from..to: one cursor range over the days.
func (s *Store) Funnel(ctx context.Context, from, to time.Time, clientID string) ([]grants.FunnelDay, error) {
	days, ok := grants.FunnelDays(from, to)
	if !ok {
		return nil, fmt.Errorf("boltstore: funnel: bad range %s..%s: %w", from, to, ErrInvalid)
	}
	first, last := []byte(days[0]), []byte(days[len(days)-1])
	var out []grants.FunnelDay
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bFunnel).Cursor()
		idx := map[string]int{}
		for k, v := c.Seek(first); k != nil; k, v = c.Next() {
			parts := bytes.SplitN(k, []byte{sep}, 3)
			if len(parts) != 3 || len(v) != 8 {
				continue
			}
			if bytes.Compare(parts[0], last) > 0 {
				break
			}
			client := string(parts[1])
			if clientID != "" && client != clientID {
				continue
			}
			id := string(parts[0]) + "\x00" + client
			i, seen := idx[id]
			if !seen {
				d, err := time.Parse("2006-01-02", string(parts[0]))
				if err != nil {
					continue
				}
				out = append(out, grants.FunnelDay{Day: d, ClientID: client})
				i = len(out) - 1
				idx[id] = i
			}
			out[i].Add(string(parts[2]), int64(binary.BigEndian.Uint64(v)))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: funnel: %w", err)
	}
	grants.SortFunnel(out)
	return out, nil
}
