package auth0_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/usher-oidc/usher/broker/upstream/auth0"
	"github.com/usher-oidc/usher/devidp"
	"github.com/usher-oidc/usher/internal/testkit"
	redisstore "github.com/usher-oidc/usher/store/redis"
)

// replicas are usher replicas sharing one Redis (store and Management API
// budget) in front of one devidp tenant that enforces perSecond/burst.
type replicas struct {
	tenant *devidp.Server
	st     *redisstore.Store // replica 0's store (for setting up data)
	m      []*auth0.Mirror
}

func startReplicas(t *testing.T, n int, perSecond float64, burst int) *replicas {
	t.Helper()
	return startReplicasBudget(t, n, perSecond, burst, true)
}

// startReplicasBudget: shared false gives each replica its own in-process
// budget (what usher would do without the shared one).
func startReplicasBudget(t *testing.T, n int, perSecond float64, burst int, shared bool) *replicas {
	t.Helper()
	addr := testkit.StartRedis(t)
	tenant, domain := startTenant(t)
	tenant.ManagementBudget(perSecond, burst)
	r := &replicas{tenant: tenant}
	for i := range n {
		st, err := redisstore.Open(redisstore.Config{URL: "redis://" + addr}, redisstore.Options{Prefix: "usher:"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		if i == 0 {
			r.st = st
		}
		r.m = append(r.m, newTestMirror(t, st, domain, func(o *auth0.MirrorOptions) {
			o.RatePerSecond, o.RateBurst = perSecond, burst
			if shared {
				o.Budget = st.Budget("auth0-management", perSecond, burst)
			}
		}))
	}
	return r
}

// queueRedemptions queues one redemption per new Auth0 user, spread over
// the replicas, and returns the invitation IDs.
func (r *replicas) queueRedemptions(t *testing.T, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		sub, usr := signUp(t, r.tenant, r.st, fmt.Sprintf("user%d@example.com", i))
		inv := redeem(t, r.st, usr, sub, []string{"viewer"}, map[string]any{"n": i})
		if err := r.m[i%len(r.m)].EnqueueRedemption(context.Background(), sub, inv); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, inv.ID)
	}
	return ids
}

// apiCalls are devidp's /api/v2 calls (not the token requests).
func apiCalls(tenant *devidp.Server) []devidp.ManagementCall {
	var out []devidp.ManagementCall
	for _, c := range tenant.ManagementCalls() {
		if strings.HasPrefix(c.Path, "/api/v2/") {
			out = append(out, c)
		}
	}
	return out
}

func count429(calls []devidp.ManagementCall) int {
	n := 0
	for _, c := range calls {
		if c.Status == 429 {
			n++
		}
	}
	return n
}

// maxPerSecond is the most calls in any one-second window.
func maxPerSecond(calls []devidp.ManagementCall) int {
	most := 0
	for i := range calls {
		n := 0
		for j := i; j < len(calls) && calls[j].At.Sub(calls[i].At) < time.Second; j++ {
			n++
		}
		most = max(most, n)
	}
	return most
}

// Two replicas sharing one Redis keep together to the tenant's budget: a
// burst of mirror jobs on both makes no 429, never more than the budget in
// a second, and about its rate on the whole.
func TestMirrorPacingSharedByReplicas(t *testing.T) {
	t.Parallel()
	const perSecond, burst = 6, 5
	r := startReplicas(t, 2, perSecond, burst)
	ids := r.queueRedemptions(t, 12)
	start := time.Now()
	for _, m := range r.m {
		runMirror(t, m)
	}
	for _, id := range ids {
		waitStatus(t, r.m[0], id, "synced")
	}
	elapsed := time.Since(start)
	calls := apiCalls(r.tenant)
	rate := float64(len(calls)-1) / calls[len(calls)-1].At.Sub(calls[0].At).Seconds()
	t.Logf("%d Management API calls in %v from 2 replicas: %.2f calls/s on average, at most %d in one second, %d answered 429 (budget %d/s, burst %d)",
		len(calls), elapsed.Round(time.Millisecond), rate, maxPerSecond(calls), count429(calls), perSecond, burst)
	if n := count429(calls); n != 0 {
		t.Errorf("%d calls answered 429, want 0", n)
	}
	if most := maxPerSecond(calls); most > burst+perSecond {
		t.Errorf("%d calls in one second, want at most %d", most, burst+perSecond)
	}
	// Over the whole run: the burst, then the rate.
	if span := calls[len(calls)-1].At.Sub(calls[0].At).Seconds(); float64(len(calls)) > burst+perSecond*span+1 {
		t.Errorf("%d calls in %.2fs, want at most %d + %d/s", len(calls), span, burst, perSecond)
	}
}

// The control: with a budget per replica instead, the same jobs on two
// replicas spend the tenant's budget to nothing (X-RateLimit-Remaining: 0,
// so everyone pauses) and a sign-in's lookup is refused (so the test below
// can tell).
func TestMirrorPacingPerReplicaStarvesLookups(t *testing.T) {
	t.Parallel()
	const perSecond, burst = 2, 5
	r := startReplicasBudget(t, 2, perSecond, burst, false)
	r.queueRedemptions(t, 10)
	for _, m := range r.m {
		runMirror(t, m)
	}
	var err error
	testkit.Eventually(t, "a lookup refused for the rate limit", func() bool {
		_, err = r.m[1].HasAccount(context.Background(), "nobody@example.com")
		return errors.Is(err, auth0.ErrMirrorRateLimited)
	})
}

// While mirror jobs on both replicas use the whole budget (a Free tenant's
// 2/s), a sign-in's HasAccount still answers at once: the jobs leave it the
// reserve.
func TestMirrorLookupPriorityUnderLoad(t *testing.T) {
	t.Parallel()
	const perSecond, burst = 2, 5
	r := startReplicas(t, 2, perSecond, burst)
	if _, err := r.tenant.AddUser(devidp.User{Email: "invitee@example.com", Password: "pw"}); err != nil {
		t.Fatal(err)
	}
	r.queueRedemptions(t, 10) // ~30 calls: 15 s of work at 2/s
	for _, m := range r.m {
		runMirror(t, m)
	}
	// The jobs have spent the burst down to the reserve and wait for refills.
	testkit.Eventually(t, "mirror jobs to spend the burst", func() bool { return len(apiCalls(r.tenant)) >= burst })
	before := len(apiCalls(r.tenant))
	start := time.Now()
	found, err := r.m[1].HasAccount(context.Background(), "invitee@example.com")
	took := time.Since(start)
	calls := apiCalls(r.tenant)
	t.Logf("HasAccount under load: %v, %v in %v; %d job calls before it, %d calls answered 429",
		found, err, took.Round(time.Millisecond), before, count429(calls))
	if err != nil || !found {
		t.Fatalf("HasAccount under load = %v, %v", found, err)
	}
	if took > 1500*time.Millisecond {
		t.Errorf("HasAccount under load took %v, want under 1.5s", took)
	}
	if n := count429(calls); n != 0 {
		t.Errorf("%d calls answered 429, want 0", n)
	}
}

// A pause one replica learns (a 429's Retry-After) holds for the other: it
// does not ask before then, and asks again after.
func TestMirrorPauseSharedByReplicas(t *testing.T) {
	t.Parallel()
	r := startReplicas(t, 2, 1000, 100)
	if _, err := r.tenant.AddUser(devidp.User{Email: "invitee@example.com", Password: "pw"}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	r.tenant.ManagementRateLimit(1, time.Second)
	if _, err := r.m[0].HasAccount(ctx, "invitee@example.com"); err == nil {
		t.Fatal("HasAccount answered through a 429")
	}
	if found, err := r.m[1].HasAccount(ctx, "invitee@example.com"); !errors.Is(err, auth0.ErrMirrorRateLimited) {
		t.Fatalf("HasAccount on the other replica = %v, %v; want ErrMirrorRateLimited", found, err)
	}
	if calls := apiCalls(r.tenant); len(calls) != 1 || calls[0].Status != 429 {
		t.Fatalf("calls = %+v, want the one 429", calls)
	}
	testkit.Eventually(t, "the other replica to ask again", func() bool {
		found, err := r.m[1].HasAccount(ctx, "invitee@example.com")
		return err == nil && found
	})
	calls := apiCalls(r.tenant)
	if len(calls) != 2 || calls[1].At.Before(calls[0].At.Add(calls[0].RetryAfter)) {
		t.Errorf("calls = %+v, want the second no earlier than Retry-After", calls)
	}
}

// A positive answer is remembered (no second call); a negative one is not.
func TestMirrorHasAccountCache(t *testing.T) {
	t.Parallel()
	tenant, _, _, m := startMirror(t, nil, nil)
	if _, err := tenant.AddUser(devidp.User{Email: "bob@example.com", Password: "pw"}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 2 {
		if found, err := m.HasAccount(ctx, "bob@example.com"); err != nil || !found {
			t.Fatalf("HasAccount(bob) #%d = %v, %v", i+1, found, err)
		}
		if found, err := m.HasAccount(ctx, "nobody@example.com"); err != nil || found {
			t.Fatalf("HasAccount(nobody) #%d = %v, %v", i+1, found, err)
		}
	}
	if n := len(apiCalls(tenant)); n != 3 {
		t.Errorf("%d Management API calls, want 3 (bob once, nobody twice): %+v", n, apiCalls(tenant))
	}
}

// A response with X-RateLimit-Remaining: 0 pauses the calls until its
// X-RateLimit-Reset: the next lookup does not ask (no 429), and once the
// reset has passed, lookups ask again.
func TestMirrorPausesOnRemainingZero(t *testing.T) {
	t.Parallel()
	tenant, domain := startTenant(t)
	st, _ := testkit.OpenBolt(t)
	m := newTestMirror(t, st, domain, nil) // usher's own budget is generous: devidp's is not
	tenant.ManagementBudget(1, 2)
	ctx := context.Background()
	for i := range 2 {
		if found, err := m.HasAccount(ctx, fmt.Sprintf("nobody%d@example.com", i)); err != nil || found {
			t.Fatalf("lookup %d: %v, %v", i+1, found, err)
		}
	}
	calls := apiCalls(tenant)
	if found, err := m.HasAccount(ctx, "nobody2@example.com"); !errors.Is(err, auth0.ErrMirrorRateLimited) {
		t.Fatalf("lookup after Remaining: 0 = %v, %v; want ErrMirrorRateLimited", found, err)
	}
	if n := len(apiCalls(tenant)); n != len(calls) {
		t.Errorf("the paused lookup made %d calls", n-len(calls))
	}
	testkit.Eventually(t, "lookups after the reset", func() bool {
		_, err := m.HasAccount(ctx, "nobody2@example.com")
		return err == nil
	})
	if n := count429(apiCalls(tenant)); n != 0 {
		t.Errorf("%d calls answered 429", n)
	}
}
