package bolt

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/usher-oidc/usher/grants"
)

// jobDueKey indexes a job under the instant it may next be claimed: its RunAt,
// or the end of its lease if that is later. ClaimJobs then only reads the
// prefix of due keys instead of every queued job.
func jobDueKey(j *grants.Job) []byte {
	visible := j.RunAt
	if j.LeaseUntil.After(visible) {
		visible = j.LeaseUntil
	}
	k := append([]byte(j.Kind), sep)
	k = append(k, timeKey(visible)...)
	return append(k, j.ID...)
}

func (s *Store) EnqueueJob(ctx context.Context, j *grants.Job) error {
	if j == nil {
		return fmt.Errorf("boltstore: enqueue job: nil: %w", ErrInvalid)
	}
	if err := checkKeys("boltstore: enqueue job", j.ID, j.Kind); err != nil {
		return err
	}
	job := *j
	if job.CreatedAt.IsZero() {
		job.CreatedAt = s.now()
	}
	err := s.batchRefusable(func(tx *bolt.Tx) (error, error) {
		if tx.Bucket(bJobs).Get([]byte(job.ID)) != nil {
			return grants.ErrConflict, nil
		}
		if err := tx.Bucket(bJobsDue).Put(jobDueKey(&job), []byte(job.ID)); err != nil {
			return nil, err
		}
		return nil, putJSON(tx.Bucket(bJobs), []byte(job.ID), &job)
	})
	if err != nil {
		return fmt.Errorf("boltstore: enqueue job %s: %w", j.ID, err)
	}
	return nil
}

// ClaimJobs hands out due jobs oldest-due first.
func (s *Store) ClaimJobs(ctx context.Context, kind string, now time.Time, limit int, lease time.Duration) ([]grants.Job, error) {
	if err := checkKeys("boltstore: claim jobs", kind); err != nil {
		return nil, err
	}
	if limit <= 0 || lease < 0 {
		return nil, fmt.Errorf("boltstore: claim jobs: limit %d, lease %s: %w", limit, lease, ErrInvalid)
	}
	var claimed []grants.Job
	err := s.batch(func(tx *bolt.Tx) error {
		claimed = nil
		due := tx.Bucket(bJobsDue)
		prefix := append([]byte(kind), sep)
		horizon := timeKey(now)
		var keys, ids [][]byte
		c := due.Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && len(keys) < limit; k, v = c.Next() {
			if bytes.Compare(k[len(prefix):len(prefix)+12], horizon) > 0 {
				break
			}
			keys, ids = append(keys, bytes.Clone(k)), append(ids, bytes.Clone(v))
		}
		for i, id := range ids {
			var j grants.Job
			found, err := getJSON(tx.Bucket(bJobs), id, &j)
			if err != nil {
				return err
			}
			if err := due.Delete(keys[i]); err != nil {
				return err
			}
			if !found {
				continue // dangling index entry
			}
			j.Attempts++
			j.LeaseUntil = now.Add(lease)
			if err := due.Put(jobDueKey(&j), id); err != nil {
				return err
			}
			if err := putJSON(tx.Bucket(bJobs), id, &j); err != nil {
				return err
			}
			claimed = append(claimed, j)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: claim %s jobs: %w", kind, err)
	}
	return claimed, nil
}

// changeJob loads job id, lets change edit it (nil job: delete) and keeps the
// due index in step.
// changeJob applies change to the stored job. With fence set, it refuses
// (ErrLeaseLost) unless the stored claim is still the fence's: the same
// lease and the same attempt count (two claims at one instant have the same
// lease but not the same count).
func (s *Store) changeJob(what, id string, fence *grants.Job, change func(j *grants.Job) *grants.Job) error {
	if err := checkKeys("boltstore: "+what, id); err != nil {
		return err
	}
	err := s.batchRefusable(func(tx *bolt.Tx) (error, error) {
		var j grants.Job
		found, err := getJSON(tx.Bucket(bJobs), []byte(id), &j)
		if err != nil {
			return nil, err
		}
		if !found {
			return grants.ErrNotFound, nil
		}
		if fence != nil && (fence.LeaseUntil.IsZero() || !j.LeaseUntil.Equal(fence.LeaseUntil) || j.Attempts != fence.Attempts) {
			return grants.ErrLeaseLost, nil
		}
		if err := tx.Bucket(bJobsDue).Delete(jobDueKey(&j)); err != nil {
			return nil, err
		}
		next := change(&j)
		if next == nil {
			return nil, tx.Bucket(bJobs).Delete([]byte(id))
		}
		if err := tx.Bucket(bJobsDue).Put(jobDueKey(next), []byte(id)); err != nil {
			return nil, err
		}
		return nil, putJSON(tx.Bucket(bJobs), []byte(id), next)
	})
	if err != nil {
		return fmt.Errorf("boltstore: %s %s: %w", what, id, err)
	}
	return nil
}

func (s *Store) CompleteJob(ctx context.Context, id string) error {
	return s.changeJob("complete job", id, nil, completeJob)
}

func (s *Store) RetryJob(ctx context.Context, id string, runAt time.Time, lastErr string) error {
	return s.changeJob("retry job", id, nil, retryJob(runAt, lastErr))
}

func (s *Store) CompleteClaimedJob(ctx context.Context, claimed *grants.Job) error {
	return s.changeJob("complete claimed job", claimed.ID, claimed, completeJob)
}

func (s *Store) RetryClaimedJob(ctx context.Context, claimed *grants.Job, runAt time.Time, lastErr string) error {
	return s.changeJob("retry claimed job", claimed.ID, claimed, retryJob(runAt, lastErr))
}

func completeJob(*grants.Job) *grants.Job { return nil }

func retryJob(runAt time.Time, lastErr string) func(j *grants.Job) *grants.Job {
	return func(j *grants.Job) *grants.Job {
		j.RunAt, j.LeaseUntil, j.LastError = runAt, time.Time{}, lastErr
		return j
	}
}

func (s *Store) JobCount(ctx context.Context, kind string) (int, error) {
	if err := checkKeys("boltstore: job count", kind); err != nil {
		return 0, err
	}
	n := 0
	err := s.db.View(func(tx *bolt.Tx) error {
		prefix := append([]byte(kind), sep)
		c := tx.Bucket(bJobsDue).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			n++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("boltstore: job count %s: %w", kind, err)
	}
	return n, nil
}

func (s *Store) ReserveIdempotencyKey(ctx context.Context, rec *grants.IdempotencyRecord) (*grants.IdempotencyRecord, error) {
	if rec == nil {
		return nil, fmt.Errorf("boltstore: reserve idempotency key: nil: %w", ErrInvalid)
	}
	if err := checkKeys("boltstore: reserve idempotency key", rec.Key, rec.RequestHash); err != nil {
		return nil, err
	}
	if rec.ExpiresAt.IsZero() {
		return nil, fmt.Errorf("boltstore: reserve idempotency key: no expiry: %w", ErrInvalid)
	}
	var existing *grants.IdempotencyRecord
	err := s.batchRefusable(func(tx *bolt.Tx) (error, error) {
		existing = nil
		b := tx.Bucket(bIdempotency)
		var old grants.IdempotencyRecord
		found, err := getJSON(b, []byte(rec.Key), &old)
		if err != nil {
			return nil, err
		}
		if found && !expired(old.ExpiresAt, s.now()) {
			existing = &old
			switch {
			case old.RequestHash != rec.RequestHash:
				return grants.ErrIdempotencyMismatch, nil
			case old.Status == 0:
				return grants.ErrIdempotencyInProgress, nil
			}
			return nil, nil
		}
		stored := *rec
		stored.Status, stored.Response = 0, nil
		return nil, putJSON(b, []byte(rec.Key), &stored)
	})
	if err != nil {
		return existing, fmt.Errorf("boltstore: reserve idempotency key: %w", err)
	}
	return existing, nil
}

func (s *Store) CompleteIdempotencyKey(ctx context.Context, key string, status int, response json.RawMessage) error {
	if err := checkKeys("boltstore: complete idempotency key", key); err != nil {
		return err
	}
	if status <= 0 {
		return fmt.Errorf("boltstore: complete idempotency key: status %d: %w", status, ErrInvalid)
	}
	err := s.batchRefusable(func(tx *bolt.Tx) (error, error) {
		b := tx.Bucket(bIdempotency)
		var rec grants.IdempotencyRecord
		found, err := getJSON(b, []byte(key), &rec)
		if err != nil {
			return nil, err
		}
		if !found || expired(rec.ExpiresAt, s.now()) {
			return grants.ErrNotFound, nil
		}
		rec.Status, rec.Response = status, response
		return nil, putJSON(b, []byte(key), &rec)
	})
	if err != nil {
		return fmt.Errorf("boltstore: complete idempotency key: %w", err)
	}
	return nil
}

// ReleaseIdempotencyKey forgets only an in-progress reservation: a stray
// release after completion must not reopen the key to a second execution.
func (s *Store) ReleaseIdempotencyKey(ctx context.Context, key string) error {
	if err := checkKeys("boltstore: release idempotency key", key); err != nil {
		return err
	}
	err := s.batch(func(tx *bolt.Tx) error {
		b := tx.Bucket(bIdempotency)
		var rec grants.IdempotencyRecord
		found, err := getJSON(b, []byte(key), &rec)
		if err != nil || !found {
			return err
		}
		if rec.Status != 0 && !expired(rec.ExpiresAt, s.now()) {
			return nil
		}
		return b.Delete([]byte(key))
	})
	if err != nil {
		return fmt.Errorf("boltstore: release idempotency key: %w", err)
	}
	return nil
}
