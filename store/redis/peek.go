package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
)

// PeekJobs reads the kind's queue and the jobs' fields without changing
// anything (plain reads of the {jobs} slot), sorted by ID.
func (s *Store) PeekJobs(ctx context.Context, kind string, limit int) ([]grants.Job, error) {
	if err := checkKeys("redisstore: peek jobs", kind); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, fmt.Errorf("redisstore: peek jobs: limit %d: %w", limit, ErrInvalid)
	}
	keys := s.jobKeys(kind)
	ids, err := s.rdb.ZRange(ctx, keys[6], 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("redisstore: peek %s jobs: %w", kind, err)
	}
	slices.Sort(ids)
	ids = ids[:min(len(ids), limit)]
	if len(ids) == 0 {
		return nil, nil
	}
	pipe := s.rdb.Pipeline()
	data := pipe.HMGet(ctx, keys[0], ids...)
	attempts := pipe.HMGet(ctx, keys[1], ids...)
	run := pipe.HMGet(ctx, keys[2], ids...)
	lease := pipe.HMGet(ctx, keys[3], ids...)
	lastErr := pipe.HMGet(ctx, keys[4], ids...)
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("redisstore: peek %s jobs: %w", kind, err)
	}
	out := make([]grants.Job, 0, len(ids))
	for i := range ids {
		raw, _ := data.Val()[i].(string)
		if raw == "" {
			continue // completed between the two reads
		}
		var j grants.Job
		if err := json.Unmarshal([]byte(raw), &j); err != nil {
			return nil, fmt.Errorf("redisstore: peek %s jobs: decode: %w", kind, err)
		}
		a, _ := attempts.Val()[i].(string)
		j.Attempts, _ = strconv.Atoi(a)
		r, _ := run.Val()[i].(string)
		l, _ := lease.Val()[i].(string)
		var err1, err2 error
		j.RunAt, err1 = parseTime(r)
		j.LeaseUntil, err2 = parseTime(l)
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("redisstore: peek %s jobs: decode: %w", kind, err)
		}
		j.LastError, _ = lastErr.Val()[i].(string)
		out = append(out, j)
	}
	slices.SortFunc(out, func(a, b grants.Job) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// GetJob reads one job by ID (ErrNotFound once completed): one pipeline
// over the job hashes every kind shares.
func (s *Store) GetJob(ctx context.Context, id string) (*grants.Job, error) {
	if err := checkKeys("redisstore: get job", id); err != nil {
		return nil, err
	}
	keys := s.jobKeys("")
	pipe := s.rdb.Pipeline()
	data := pipe.HGet(ctx, keys[0], id)
	attempts := pipe.HGet(ctx, keys[1], id)
	run := pipe.HGet(ctx, keys[2], id)
	lease := pipe.HGet(ctx, keys[3], id)
	lastErr := pipe.HGet(ctx, keys[4], id)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("redisstore: get job %s: %w", id, err)
	}
	if data.Val() == "" {
		return nil, fmt.Errorf("redisstore: get job %s: %w", id, grants.ErrNotFound)
	}
	var j grants.Job
	if err := json.Unmarshal([]byte(data.Val()), &j); err != nil {
		return nil, fmt.Errorf("redisstore: get job %s: decode: %w", id, err)
	}
	j.Attempts, _ = strconv.Atoi(attempts.Val())
	var err1, err2 error
	j.RunAt, err1 = parseTime(run.Val())
	j.LeaseUntil, err2 = parseTime(lease.Val())
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("redisstore: get job %s: decode: %w", id, err)
	}
	j.LastError = lastErr.Val()
	return &j, nil
}
