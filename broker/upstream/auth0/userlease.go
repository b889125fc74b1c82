package auth0

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/usher-oidc/usher/grants"
)

// A mirror job reads app_metadata.usher, merges and writes it back, and
// Auth0 offers no conditional write; two replicas working one Auth0 user at
// once would lose one update. So a job first takes the user's lease through
// the store: a lock job of the user's own kind, claimed like any job (so a
// crashed holder's lease lapses), completed, fenced by the claim, once the
// job is done. A job that finds the user busy waits userBusyRetry and tries
// again; within one replica, jobs already run one at a time.

// jobKindUserLease prefixes the per-user lock job's kind.
const jobKindUserLease = "auth0-user-lease:"

// userBusyRetry is how soon a job whose user is busy elsewhere tries again.
const userBusyRetry = 250 * time.Millisecond

// errUserBusy: another worker holds the user's lease.
var errUserBusy = errors.New("another worker is updating this Auth0 user")

// userLeaseJob is the lock job of one Auth0 user (hashed: the user ID has
// characters store keys may not, and its length is unbounded).
func userLeaseJob(upstreamUser string, now time.Time) *grants.Job {
	sum := sha256.Sum256([]byte(upstreamUser))
	h := hex.EncodeToString(sum[:16])
	return &grants.Job{ID: "auth0lease_" + h, Kind: jobKindUserLease + h, Payload: []byte(`{}`), RunAt: now, CreatedAt: now}
}

// leaseUser takes the user's lease for lease, or returns errUserBusy.
func (m *Mirror) leaseUser(ctx context.Context, upstreamUser string, lease time.Duration) (*grants.Job, error) {
	now := m.o.Now()
	lock := userLeaseJob(upstreamUser, now)
	if err := m.o.Store.EnqueueJob(ctx, lock); err != nil && !errors.Is(err, grants.ErrConflict) {
		return nil, fmt.Errorf("lease the Auth0 user: %w", err)
	}
	got, err := m.o.Store.ClaimJobs(ctx, lock.Kind, now, 1, lease)
	if err != nil {
		return nil, fmt.Errorf("lease the Auth0 user: %w", err)
	}
	if len(got) == 0 {
		return nil, errUserBusy
	}
	return &got[0], nil
}

// releaseUser ends the lease; a lease that lapsed meanwhile is another
// worker's now and stays.
func (m *Mirror) releaseUser(ctx context.Context, held *grants.Job) {
	err := m.o.Store.CompleteClaimedJob(ctx, held)
	if err != nil && !errors.Is(err, grants.ErrLeaseLost) && !errors.Is(err, grants.ErrNotFound) {
		m.log.Error("release the Auth0 user's lease", "error", err)
	}
}
