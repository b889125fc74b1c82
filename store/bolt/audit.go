package bolt

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/store/errs"
)

// AppendAudit keys records by time then ID, so the log reads newest first
// by walking the bucket backwards.
func (s *Store) AppendAudit(ctx context.Context, rec *grants.AuditRecord) error {
	if rec == nil || rec.ID == "" || rec.Action == "" || rec.At.IsZero() {
		return fmt.Errorf("boltstore: append audit: id, action and time are required: %w", ErrInvalid)
	}
	if err := checkKeys("boltstore: append audit", rec.ID); err != nil {
		return err
	}
	key := append(timeKey(rec.At), rec.ID...)
	return s.batch(func(tx *bolt.Tx) error {
		return putJSON(tx.Bucket(bAudit), key, rec)
	})
}

func (s *Store) ListAudit(ctx context.Context, f grants.AuditFilter) ([]grants.AuditRecord, string, error) {
	limit := listLimit(f.Limit)
	var before []byte
	if f.Cursor != "" {
		c, err := base64.RawURLEncoding.DecodeString(f.Cursor)
		if err != nil || len(c) <= 12 {
			return nil, "", fmt.Errorf("boltstore: list audit: %w: %w", errs.ErrBadCursor, ErrInvalid)
		}
		before = c
	}
	var out []grants.AuditRecord
	var keys [][]byte
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bAudit).Cursor()
		var k, v []byte
		if before == nil {
			k, v = c.Last()
		} else if k, v = c.Seek(before); k == nil {
			k, v = c.Last()
		} else {
			k, v = c.Prev()
		}
		for ; k != nil && len(out) <= limit; k, v = c.Prev() {
			if before != nil && bytes.Compare(k, before) >= 0 {
				continue
			}
			at := decodeTimeKey(k)
			if !f.Until.IsZero() && at.After(f.Until) {
				continue
			}
			if !f.Since.IsZero() && at.Before(f.Since) {
				break // older from here on
			}
			var rec grants.AuditRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return err
			}
			if !f.Matches(&rec) {
				continue
			}
			out = append(out, rec)
			keys = append(keys, bytes.Clone(k))
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("boltstore: list audit: %w", err)
	}
	next := ""
	if len(out) > limit {
		out = out[:limit]
		next = base64.RawURLEncoding.EncodeToString(keys[limit-1])
	}
	return out, next, nil
}
