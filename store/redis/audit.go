package redis

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/store/errs"
)

// The audit log: {prefix}{audit}:d (hash ID → JSON) and {prefix}{audit}:t
// (sorted set of IDs scored by At µs), written together in one MULTI (one
// slot). Like bbolt's, it is kept forever.
func (s *Store) auditKeys() (data, byTime string) {
	return s.prefix + "{audit}:d", s.prefix + "{audit}:t"
}

// AppendAudit stores an audit record (ID and At set by the caller).
func (s *Store) AppendAudit(ctx context.Context, rec *grants.AuditRecord) error {
	if rec == nil || rec.ID == "" || rec.Action == "" || rec.At.IsZero() {
		return fmt.Errorf("redisstore: append audit: id, action and time are required: %w", ErrInvalid)
	}
	raw, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("redisstore: append audit: %w", err)
	}
	data, byTime := s.auditKeys()
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, data, rec.ID, raw)
		p.ZAdd(ctx, byTime, redis.Z{Score: float64(micros(rec.At)), Member: rec.ID})
		return nil
	})
	if err != nil {
		return fmt.Errorf("redisstore: append audit: %w", err)
	}
	return nil
}

// ListAudit returns records newest first (ties by ID) and the next cursor.
func (s *Store) ListAudit(ctx context.Context, f grants.AuditFilter) ([]grants.AuditRecord, string, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = defaultListLimit
	}
	limit = min(limit, maxListLimit)
	var after *listCursor
	if f.Cursor != "" {
		c, err := decodeCursor(f.Cursor)
		if err != nil {
			return nil, "", fmt.Errorf("redisstore: list audit: %w: %w", errs.ErrBadCursor, ErrInvalid)
		}
		after = c
	}
	start, stop := auditScoreRange(f, after)
	page, err := s.scanAudit(ctx, f, after, start, stop, limit)
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(page) > limit {
		page = page[:limit]
		next = page[limit-1].pos.encode()
	}
	out := make([]grants.AuditRecord, len(page))
	for i, it := range page {
		out[i] = it.rec
	}
	return out, next, nil
}

// auditScoreRange is the time index's score range to walk, newest first:
// from the cursor or f.Until, whichever is older, down to f.Since.
func auditScoreRange(f grants.AuditFilter, after *listCursor) (start, stop string) {
	start, stop = "+inf", "-inf"
	if !f.Until.IsZero() {
		start = strconv.FormatInt(micros(f.Until), 10)
	}
	if after != nil && (f.Until.IsZero() || after.score < float64(micros(f.Until))) {
		start = strconv.FormatFloat(after.score, 'f', -1, 64)
	}
	if !f.Since.IsZero() {
		stop = strconv.FormatInt(micros(f.Since), 10)
	}
	return start, stop
}

// auditItem is a listed record and its position in the time index.
type auditItem struct {
	pos listCursor
	rec grants.AuditRecord
}

// scanAudit walks the time index from start to stop in batches and keeps
// the records after the cursor that match f, up to limit+1: the one past
// the page tells that there is a next page.
func (s *Store) scanAudit(ctx context.Context, f grants.AuditFilter, after *listCursor, start, stop string, limit int) ([]auditItem, error) {
	_, byTime := s.auditKeys()
	var page []auditItem
	batch := int64(min(2*(limit+1), 1000))
	for offset := int64(0); len(page) <= limit; {
		zs, err := s.rdb.ZRangeArgsWithScores(ctx, redis.ZRangeArgs{
			Key: byTime, Start: start, Stop: stop, ByScore: true, Rev: true, Offset: offset, Count: batch,
		}).Result()
		if err != nil {
			return nil, fmt.Errorf("redisstore: list audit: %w", err)
		}
		if len(zs) == 0 {
			break
		}
		offset += int64(len(zs))
		if page, err = s.appendAuditBatch(ctx, page, zs, f, after, limit); err != nil {
			return nil, err
		}
		if int64(len(zs)) < batch {
			break
		}
	}
	return page, nil
}

// appendAuditBatch loads the records of one batch of the time index and
// appends those after the cursor that match f to page, up to limit+1 in all.
func (s *Store) appendAuditBatch(ctx context.Context, page []auditItem, zs []redis.Z, f grants.AuditFilter, after *listCursor, limit int) ([]auditItem, error) {
	data, _ := s.auditKeys()
	var ids []string
	var pos []listCursor
	for _, z := range zs {
		id, _ := z.Member.(string)
		if after != nil && (z.Score > after.score || (z.Score == after.score && id >= after.id)) {
			continue
		}
		ids = append(ids, id)
		pos = append(pos, listCursor{z.Score, id})
	}
	if len(ids) == 0 {
		return page, nil
	}
	raws, err := s.rdb.HMGet(ctx, data, ids...).Result()
	if err != nil {
		return nil, fmt.Errorf("redisstore: list audit: %w", err)
	}
	for i := range raws {
		if raws[i] == nil || len(page) > limit {
			continue
		}
		var rec grants.AuditRecord
		if err := json.Unmarshal([]byte(str(raws, i)), &rec); err != nil {
			return nil, fmt.Errorf("redisstore: list audit: decode: %w", err)
		}
		if !f.Matches(&rec) {
			continue
		}
		page = append(page, auditItem{pos[i], rec})
	}
	return page, nil
}
