package conformance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/usher-oidc/usher/grants"
)

func testIdempotency(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	now := clock.Now()
	rec := func(key, hash string) *grants.IdempotencyRecord {
		return &grants.IdempotencyRecord{Key: key, RequestHash: hash, CreatedAt: now, ExpiresAt: now.Add(24 * time.Hour)}
	}
	got, err := s.ReserveIdempotencyKey(ctx, rec("k1", "h1"))
	if got != nil || err != nil {
		t.Fatalf("reserve new key = %+v, %v; want nil, nil", got, err)
	}
	got, err = s.ReserveIdempotencyKey(ctx, rec("k1", "h1"))
	wantErr(t, "reserve in progress", err, grants.ErrIdempotencyInProgress)
	if got == nil || got.RequestHash != "h1" || got.Status != 0 {
		t.Fatalf("in-progress record: %+v", got)
	}
	got, err = s.ReserveIdempotencyKey(ctx, rec("k1", "h2"))
	wantErr(t, "reserve other body in progress", err, grants.ErrIdempotencyMismatch)
	if got == nil || got.RequestHash != "h1" {
		t.Fatalf("mismatch record: %+v", got)
	}

	body := json.RawMessage(`{"id":"inv-1","status":"pending"}`)
	must(t, "complete", s.CompleteIdempotencyKey(ctx, "k1", 201, body))
	got, err = s.ReserveIdempotencyKey(ctx, rec("k1", "h1"))
	must(t, "reserve completed", err)
	if got == nil || got.Status != 201 || got.Key != "k1" {
		t.Fatalf("completed record: %+v", got)
	}
	same(t, "replayed response", body, got.Response)
	_, err = s.ReserveIdempotencyKey(ctx, rec("k1", "h2"))
	wantErr(t, "reserve other body completed", err, grants.ErrIdempotencyMismatch)
	wantErr(t, "complete unknown", s.CompleteIdempotencyKey(ctx, "nope", 200, nil), grants.ErrNotFound)

	_, err = s.ReserveIdempotencyKey(ctx, rec("k2", "h1"))
	must(t, "reserve k2", err)
	must(t, "release k2", s.ReleaseIdempotencyKey(ctx, "k2"))
	got, err = s.ReserveIdempotencyKey(ctx, rec("k2", "h2"))
	if got != nil || err != nil {
		t.Fatalf("reserve after release = %+v, %v; want nil, nil", got, err)
	}
	must(t, "release unknown", s.ReleaseIdempotencyKey(ctx, "nope"))
}

func testIdempotencyConcurrent(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	var mu sync.Mutex
	reserved := 0
	errs := concurrently(20, func(int) error {
		got, err := s.ReserveIdempotencyKey(ctx, &grants.IdempotencyRecord{Key: "k", RequestHash: "h", CreatedAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour)})
		if got == nil && err == nil {
			mu.Lock()
			reserved++
			mu.Unlock()
		}
		return err
	})
	countNil(t, "concurrent reserve", errs, grants.ErrIdempotencyInProgress)
	if reserved != 1 {
		t.Fatalf("%d of 20 concurrent reservations reserved the key, want exactly 1", reserved)
	}
}

func testIdempotencyExpiry(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	now := clock.Now()
	_, err := s.ReserveIdempotencyKey(ctx, &grants.IdempotencyRecord{Key: "k", RequestHash: "h1", CreatedAt: now, ExpiresAt: now.Add(time.Hour)})
	must(t, "reserve", err)
	must(t, "complete", s.CompleteIdempotencyKey(ctx, "k", 200, json.RawMessage(`{}`)))
	clock.Advance(time.Hour)
	got, err := s.ReserveIdempotencyKey(ctx, &grants.IdempotencyRecord{Key: "k", RequestHash: "h2", CreatedAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour)})
	if got != nil || err != nil {
		t.Fatalf("reserve over expired record = %+v, %v; want nil, nil", got, err)
	}
}

func job(id, kind string, runAt time.Time) *grants.Job {
	return &grants.Job{ID: id, Kind: kind, Payload: json.RawMessage(`{"to":"ada@example.com"}`), RunAt: runAt, CreatedAt: runAt}
}

func testJobs(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	t0 := clock.Now()
	lease := 5 * time.Minute
	must(t, "enqueue j1", s.EnqueueJob(ctx, job("j1", "mail", t0)))
	must(t, "enqueue j2", s.EnqueueJob(ctx, job("j2", "mail", t0.Add(time.Hour))))
	must(t, "enqueue j3", s.EnqueueJob(ctx, job("j3", "webhook", t0)))
	wantErr(t, "enqueue j1 again", s.EnqueueJob(ctx, job("j1", "mail", t0)), grants.ErrConflict)
	count := func(kind string, want int) {
		t.Helper()
		n, err := s.JobCount(ctx, kind)
		must(t, "job count", err)
		if n != want {
			t.Fatalf("JobCount(%s) = %d, want %d", kind, n, want)
		}
	}
	count("mail", 2)
	count("webhook", 1)
	count("none", 0)
	claim := func(now time.Time, want ...string) []grants.Job {
		t.Helper()
		got, err := s.ClaimJobs(ctx, "mail", now, 10, lease)
		must(t, "claim", err)
		var gotIDs []string
		for _, j := range got {
			gotIDs = append(gotIDs, j.ID)
		}
		if !slices.Equal(gotIDs, want) {
			t.Fatalf("claim at %v: got %v, want %v", now.Sub(t0), gotIDs, want)
		}
		return got
	}

	got := claim(t0, "j1")
	if got[0].Attempts != 1 || !got[0].LeaseUntil.Equal(t0.Add(lease)) || got[0].Kind != "mail" {
		t.Fatalf("claimed job: %+v", got[0])
	}
	same(t, "payload", json.RawMessage(`{"to":"ada@example.com"}`), got[0].Payload)
	claim(t0) // leased
	clock.Advance(lease - time.Second)
	claim(clock.Now()) // still leased
	clock.Advance(2 * time.Second)
	got = claim(clock.Now(), "j1") // the lease lapsed: a dead worker's job comes back
	if got[0].Attempts != 2 {
		t.Fatalf("attempts after second claim = %d", got[0].Attempts)
	}

	must(t, "retry", s.RetryJob(ctx, "j1", t0.Add(10*time.Minute), "smtp down"))
	claim(clock.Now())
	clock.Set(t0.Add(10 * time.Minute))
	got = claim(clock.Now(), "j1")
	if got[0].Attempts != 3 || got[0].LastError != "smtp down" {
		t.Fatalf("retried job: %+v", got[0])
	}
	count("mail", 2)
	if j, err := s.GetJob(ctx, "j1"); err != nil || j.Attempts != 3 || j.LastError != "smtp down" || j.Kind != "mail" || !j.LeaseUntil.Equal(got[0].LeaseUntil) {
		t.Fatalf("GetJob(j1) = %+v, %v; want the claimed job", j, err)
	}
	must(t, "complete j1", s.CompleteJob(ctx, "j1"))
	count("mail", 1)
	_, err := s.GetJob(ctx, "j1")
	wantErr(t, "GetJob after complete", err, grants.ErrNotFound)
	wantErr(t, "complete j1 again", s.CompleteJob(ctx, "j1"), grants.ErrNotFound)
	wantErr(t, "retry completed", s.RetryJob(ctx, "j1", t0, ""), grants.ErrNotFound)
	claim(t0.Add(time.Hour), "j2")

	hooks, err := s.ClaimJobs(ctx, "webhook", t0, 10, lease)
	must(t, "claim webhook", err)
	if len(hooks) != 1 || hooks[0].ID != "j3" {
		t.Fatalf("claim webhook: %+v", hooks)
	}
}

func testJobsOrder(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	t0 := clock.Now()
	for i, d := range []time.Duration{3, 1, 2} {
		must(t, "enqueue", s.EnqueueJob(ctx, job(fmt.Sprintf("j%d", i), "order", t0.Add(d*time.Second))))
	}
	got, err := s.ClaimJobs(ctx, "order", t0.Add(10*time.Second), 2, time.Minute)
	must(t, "claim", err)
	if len(got) != 2 || got[0].ID != "j1" || got[1].ID != "j2" {
		t.Fatalf("claimed %v, want the two due first [j1 j2]", got)
	}
}

func testJobsConcurrentClaim(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	for i := range 30 {
		must(t, "enqueue", s.EnqueueJob(ctx, job(fmt.Sprintf("bulk-%02d", i), "bulk", clock.Now())))
	}
	var mu sync.Mutex
	claims := map[string]int{}
	errs := concurrently(10, func(int) error {
		// Bounded, so a backend that hands jobs out again fails instead of hanging.
		for range 100 {
			got, err := s.ClaimJobs(ctx, "bulk", clock.Now(), 2, time.Hour)
			if err != nil || len(got) == 0 {
				return err
			}
			mu.Lock()
			for _, j := range got {
				claims[j.ID]++
			}
			mu.Unlock()
		}
		return errors.New("still claiming after 100 rounds")
	})
	countNil(t, "concurrent claim", errs)
	if len(claims) != 30 {
		t.Fatalf("%d distinct jobs claimed, want 30", len(claims))
	}
	for id, n := range claims {
		if n != 1 {
			t.Errorf("job %s claimed %d times", id, n)
		}
	}
}

// PeekJobs reads without claiming: the jobs stay claimable, unchanged.
func testJobsPeek(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	now := clock.Now()
	for _, id := range []string{"j-c", "j-a", "j-b"} {
		must(t, "enqueue", s.EnqueueJob(ctx, &grants.Job{ID: id, Kind: "peek", Payload: []byte(`{"x":1}`), RunAt: now, LastError: "e-" + id}))
	}
	must(t, "other kind", s.EnqueueJob(ctx, &grants.Job{ID: "j-z", Kind: "other", Payload: []byte(`{}`), RunAt: now}))
	got, err := s.PeekJobs(ctx, "peek", 2)
	must(t, "peek", err)
	if len(got) != 2 || got[0].ID != "j-a" || got[1].ID != "j-b" || got[0].LastError != "e-j-a" || got[0].Attempts != 0 || string(got[0].Payload) != `{"x":1}` {
		t.Fatalf("peek = %+v", got)
	}
	claimed, err := s.ClaimJobs(ctx, "peek", now, 10, time.Minute)
	must(t, "claim after peek", err)
	if len(claimed) != 3 {
		t.Fatalf("peeking consumed jobs: %d claimable, want 3", len(claimed))
	}
	if _, err := s.PeekJobs(ctx, "peek", 0); err == nil {
		t.Fatal("limit 0 accepted")
	}
}

// testJobsFenced: a worker whose lease lapsed while another worker claimed
// the job can neither complete nor reschedule it; the current holder can.
func testJobsFenced(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	t0 := clock.Now()
	lease := time.Minute
	claimOne := func(what string) *grants.Job {
		t.Helper()
		got, err := s.ClaimJobs(ctx, "mail", clock.Now(), 10, lease)
		must(t, what, err)
		if len(got) != 1 || got[0].ID != "f1" {
			t.Fatalf("%s: claimed %+v, want f1", what, got)
		}
		return &got[0]
	}
	leased := func(what string) {
		t.Helper()
		got, err := s.ClaimJobs(ctx, "mail", clock.Now(), 10, lease)
		must(t, what, err)
		if len(got) != 0 {
			t.Fatalf("%s: claimed %+v while another worker holds the lease", what, got)
		}
	}
	must(t, "enqueue f1", s.EnqueueJob(ctx, job("f1", "mail", t0)))
	stale := claimOne("first claim")
	clock.Advance(lease + time.Second)
	current := claimOne("claim after the lease lapsed")

	wantErr(t, "stale complete", s.CompleteClaimedJob(ctx, stale), grants.ErrLeaseLost)
	wantErr(t, "stale retry", s.RetryClaimedJob(ctx, stale, clock.Now(), "late"), grants.ErrLeaseLost)
	leased("after the stale hand-backs") // the current holder's lease stands

	never := *current
	never.LeaseUntil = time.Time{}
	wantErr(t, "a never-claimed copy", s.CompleteClaimedJob(ctx, &never), grants.ErrLeaseLost)

	must(t, "current retry", s.RetryClaimedJob(ctx, current, clock.Now(), "smtp down"))
	wantErr(t, "retry again with the handed-back claim", s.RetryClaimedJob(ctx, current, clock.Now(), ""), grants.ErrLeaseLost)
	again := claimOne("claim after the retry")
	if again.LastError != "smtp down" || again.Attempts != 3 {
		t.Fatalf("after the fenced retry: %+v", again)
	}
	wantErr(t, "complete with the earlier claim", s.CompleteClaimedJob(ctx, current), grants.ErrLeaseLost)
	must(t, "complete", s.CompleteClaimedJob(ctx, again))
	wantErr(t, "complete twice", s.CompleteClaimedJob(ctx, again), grants.ErrNotFound)
}
