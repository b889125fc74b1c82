package bolt

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/usher-oidc/usher/grants"
)

// PeekJobs reads the kind's queued jobs through the due index, sorted by ID.
func (s *Store) PeekJobs(ctx context.Context, kind string, limit int) ([]grants.Job, error) {
	if err := checkKeys("boltstore: peek jobs", kind); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, fmt.Errorf("boltstore: peek jobs: limit %d: %w", limit, ErrInvalid)
	}
	var out []grants.Job
	err := s.db.View(func(tx *bolt.Tx) error {
		prefix := append([]byte(kind), sep)
		c := tx.Bucket(bJobsDue).Cursor()
		for k, id := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, id = c.Next() {
			var j grants.Job
			found, err := getJSON(tx.Bucket(bJobs), id, &j)
			if err != nil {
				return err
			}
			if found {
				out = append(out, j)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: peek %s jobs: %w", kind, err)
	}
	slices.SortFunc(out, func(a, b grants.Job) int { return strings.Compare(a.ID, b.ID) })
	return out[:min(len(out), limit)], nil
}

// GetJob reads one job by ID (ErrNotFound once completed).
func (s *Store) GetJob(ctx context.Context, id string) (*grants.Job, error) {
	if err := checkKeys("boltstore: get job", id); err != nil {
		return nil, err
	}
	var j grants.Job
	var found bool
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		found, err = getJSON(tx.Bucket(bJobs), []byte(id), &j)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: get job %s: %w", id, err)
	}
	if !found {
		return nil, fmt.Errorf("boltstore: get job %s: %w", id, grants.ErrNotFound)
	}
	return &j, nil
}
