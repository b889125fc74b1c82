package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
)

// Jobs all live in the {jobs} slot: six hashes keyed by job ID and one sorted
// set per kind scored by the instant the job may next be claimed. One slot
// makes enqueue, claim, retry and complete single scripts on a cluster too;
// job traffic (mail, webhooks, mirror) is small next to token traffic, so the
// one node serving that slot is not a hot spot.
func (s *Store) jobKeys(kind string) []string {
	j := s.prefix + "{jobs}:"
	return []string{j + "data", j + "attempts", j + "run", j + "lease", j + "err", j + "kind", j + "q:" + esc(kind)}
}

// jobVisible is when a job may next be claimed: its RunAt, or the end of its
// lease if that is later.
func jobVisible(runAt, leaseUntil time.Time) time.Time {
	if leaseUntil.After(runAt) {
		return leaseUntil
	}
	return runAt
}

func (s *Store) EnqueueJob(ctx context.Context, j *grants.Job) error {
	if j == nil {
		return fmt.Errorf("redisstore: enqueue job: nil: %w", ErrInvalid)
	}
	if err := checkKeys("redisstore: enqueue job", j.ID, j.Kind); err != nil {
		return err
	}
	job := *j
	if job.CreatedAt.IsZero() {
		job.CreatedAt = s.now()
	}
	raw, err := json.Marshal(&job)
	if err == nil {
		var res []any
		res, err = s.runScript(ctx, enqueueJob, s.jobKeys(job.Kind),
			job.ID, raw, job.Attempts, fmtTime(job.RunAt), fmtTime(job.LeaseUntil), job.LastError, job.Kind,
			micros(jobVisible(job.RunAt, job.LeaseUntil)))
		if err == nil {
			err = outcome(str(res, 0), map[string]error{"conflict": grants.ErrConflict})
		}
	}
	if err != nil {
		return fmt.Errorf("redisstore: enqueue job %s: %w", j.ID, err)
	}
	return nil
}

// ClaimJobs hands out due jobs oldest-due first, in one script.
func (s *Store) ClaimJobs(ctx context.Context, kind string, now time.Time, limit int, lease time.Duration) ([]grants.Job, error) {
	if err := checkKeys("redisstore: claim jobs", kind); err != nil {
		return nil, err
	}
	if limit <= 0 || lease < 0 {
		return nil, fmt.Errorf("redisstore: claim jobs: limit %d, lease %s: %w", limit, lease, ErrInvalid)
	}
	until := now.Add(lease)
	res, err := s.runScript(ctx, claimJobs, s.jobKeys(kind), micros(now), limit, micros(until), fmtTime(until))
	if err != nil {
		return nil, fmt.Errorf("redisstore: claim %s jobs: %w", kind, err)
	}
	jobs := make([]grants.Job, 0, len(res))
	for _, r := range res {
		f, _ := r.([]any)
		var j grants.Job
		if err := json.Unmarshal([]byte(str(f, 0)), &j); err != nil {
			return nil, fmt.Errorf("redisstore: claim %s jobs: decode: %w", kind, err)
		}
		j.Attempts, _ = strconv.Atoi(str(f, 1))
		var err1, err2 error
		j.RunAt, err1 = parseTime(str(f, 2))
		j.LeaseUntil, err2 = parseTime(str(f, 3))
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("redisstore: claim %s jobs: decode: %w", kind, err)
		}
		j.LastError = str(f, 4)
		jobs = append(jobs, j)
	}
	return jobs, nil
}

// changeJob reads the job's kind (to name its queue), then runs the script,
// which re-checks the kind.
func (s *Store) changeJob(ctx context.Context, what, id string, args func(kind string) []any) error {
	if err := checkKeys("redisstore: "+what, id); err != nil {
		return err
	}
	err := func() error {
		for range casRetries {
			kind, err := s.rdb.HGet(ctx, s.jobKeys("")[5], id).Result()
			if errors.Is(err, redis.Nil) {
				return grants.ErrNotFound
			}
			if err != nil {
				return err
			}
			res, err := s.runScript(ctx, changeJob, s.jobKeys(kind), args(kind)...)
			if err != nil {
				return err
			}
			if st := str(res, 0); st != "retry" {
				return outcome(st, map[string]error{"notfound": grants.ErrNotFound, "leaselost": grants.ErrLeaseLost})
			}
		}
		return errors.New("job contended")
	}()
	if err != nil {
		return fmt.Errorf("redisstore: %s %s: %w", what, id, err)
	}
	return nil
}

func (s *Store) CompleteJob(ctx context.Context, id string) error {
	return s.changeJob(ctx, "complete job", id, func(kind string) []any {
		return []any{id, "complete", kind, "", 0, "", "", 0}
	})
}

// RetryJob clears the lease and schedules the job again at runAt.
func (s *Store) RetryJob(ctx context.Context, id string, runAt time.Time, lastErr string) error {
	return s.changeJob(ctx, "retry job", id, func(kind string) []any {
		return []any{id, "retry", kind, fmtTime(runAt), micros(runAt), lastErr, "", 0}
	})
}

// CompleteClaimedJob and RetryClaimedJob pass the claim's lease and attempt
// count as the fence: the script compares them with the stored ones, as
// ClaimJobs wrote them (two claims at one instant differ in the count).
func (s *Store) CompleteClaimedJob(ctx context.Context, claimed *grants.Job) error {
	return s.changeJob(ctx, "complete claimed job", claimed.ID, func(kind string) []any {
		return []any{claimed.ID, "complete", kind, "", 0, "", leaseFence(claimed), claimed.Attempts}
	})
}

func (s *Store) RetryClaimedJob(ctx context.Context, claimed *grants.Job, runAt time.Time, lastErr string) error {
	return s.changeJob(ctx, "retry claimed job", claimed.ID, func(kind string) []any {
		return []any{claimed.ID, "retry", kind, fmtTime(runAt), micros(runAt), lastErr, leaseFence(claimed), claimed.Attempts}
	})
}

// leaseFence is the stored form of the claim's lease ("-" for a job never
// claimed, which no stored lease equals: a fenced change needs a claim).
func leaseFence(claimed *grants.Job) string {
	if claimed.LeaseUntil.IsZero() {
		return "-"
	}
	return fmtTime(claimed.LeaseUntil)
}

func (s *Store) JobCount(ctx context.Context, kind string) (int, error) {
	if err := checkKeys("redisstore: job count", kind); err != nil {
		return 0, err
	}
	n, err := s.rdb.ZCard(ctx, s.jobKeys(kind)[6]).Result()
	if err != nil {
		return 0, fmt.Errorf("redisstore: job count %s: %w", kind, err)
	}
	return int(n), nil
}

// --- idempotency: {prefix}idem:<key> = {e, d, s (status), r (response)} ---

func (s *Store) ReserveIdempotencyKey(ctx context.Context, rec *grants.IdempotencyRecord) (*grants.IdempotencyRecord, error) {
	if rec == nil {
		return nil, fmt.Errorf("redisstore: reserve idempotency key: nil: %w", ErrInvalid)
	}
	if err := checkKeys("redisstore: reserve idempotency key", rec.Key, rec.RequestHash); err != nil {
		return nil, err
	}
	if rec.ExpiresAt.IsZero() {
		return nil, fmt.Errorf("redisstore: reserve idempotency key: no expiry: %w", ErrInvalid)
	}
	stored := *rec
	stored.Status, stored.Response = 0, nil
	raw, err := json.Marshal(&stored)
	if err != nil {
		return nil, fmt.Errorf("redisstore: reserve idempotency key: %w", err)
	}
	res, err := s.runScript(ctx, reserveIdem, []string{s.key("idem", rec.Key)},
		microsStr(s.now()), microsStr(rec.ExpiresAt), expireAtMS(rec.ExpiresAt), raw)
	if err != nil {
		return nil, fmt.Errorf("redisstore: reserve idempotency key: %w", err)
	}
	if str(res, 0) == "ok" {
		return nil, nil
	}
	var old grants.IdempotencyRecord
	if err := json.Unmarshal([]byte(str(res, 1)), &old); err != nil {
		return nil, fmt.Errorf("redisstore: reserve idempotency key: decode: %w", err)
	}
	old.Status, _ = strconv.Atoi(str(res, 2))
	if r := str(res, 3); r != "" {
		old.Response = json.RawMessage(r)
	}
	switch {
	case old.RequestHash != rec.RequestHash:
		return &old, fmt.Errorf("redisstore: reserve idempotency key: %w", grants.ErrIdempotencyMismatch)
	case old.Status == 0:
		return &old, fmt.Errorf("redisstore: reserve idempotency key: %w", grants.ErrIdempotencyInProgress)
	}
	return &old, nil
}

func (s *Store) CompleteIdempotencyKey(ctx context.Context, key string, status int, response json.RawMessage) error {
	if err := checkKeys("redisstore: complete idempotency key", key); err != nil {
		return err
	}
	if status <= 0 {
		return fmt.Errorf("redisstore: complete idempotency key: status %d: %w", status, ErrInvalid)
	}
	res, err := s.runScript(ctx, completeIdem, []string{s.key("idem", key)}, microsStr(s.now()), status, []byte(response))
	if err == nil {
		err = outcome(str(res, 0), map[string]error{"notfound": grants.ErrNotFound})
	}
	if err != nil {
		return fmt.Errorf("redisstore: complete idempotency key: %w", err)
	}
	return nil
}

// ReleaseIdempotencyKey forgets only an in-progress reservation: a stray
// release after completion must not reopen the key to a second execution.
func (s *Store) ReleaseIdempotencyKey(ctx context.Context, key string) error {
	if err := checkKeys("redisstore: release idempotency key", key); err != nil {
		return err
	}
	if err := releaseIdem.Run(ctx, s.rdb, []string{s.key("idem", key)}, microsStr(s.now())).Err(); err != nil {
		return fmt.Errorf("redisstore: release idempotency key: %w", err)
	}
	return nil
}
