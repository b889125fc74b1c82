package redis_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/internal/testkit"
	redisstore "github.com/usher-oidc/usher/store/redis"
)

// The shared limiter against a real redis-server: a burst of perPeriod, then
// refusals with a retry-after of one interval at most; Blocked takes nothing;
// a token comes back after retry-after; the key lives at most one period; two
// stores (two replicas) count together.
func TestRateLimiter(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	a, b, prefix := twoReplicas(t)
	// One request a second: room for a loaded machine to make the burst
	// within one interval, and to make the second request after a refill
	// within the next (at 400ms this failed under make test's load).
	const period, n = 5 * time.Second, 5
	interval := period / n
	la, lb := a.RateLimiter("invite", n, period), b.RateLimiter("invite", n, period)

	for i := range n {
		l := la
		if i%2 == 1 {
			l = lb
		}
		if ok, _, err := l.Allow(ctx, "client:203.0.113.9"); err != nil || !ok {
			t.Fatalf("request %d of the burst: ok=%v err=%v", i+1, ok, err)
		}
	}
	ok, wait, err := lb.Allow(ctx, "client:203.0.113.9")
	if err != nil || ok {
		t.Fatalf("request %d: ok=%v err=%v, want refused", n+1, ok, err)
	}
	if wait <= 0 || wait > interval {
		t.Fatalf("retry-after %v, want within (0, %v]", wait, interval)
	}
	for range 3 {
		if blocked, bw, err := la.Blocked(ctx, "client:203.0.113.9"); err != nil || !blocked || bw <= 0 || bw > interval {
			t.Fatalf("Blocked: %v %v %v", blocked, bw, err)
		}
	}
	if blocked, _, err := la.Blocked(ctx, "client:198.51.100.1"); err != nil || blocked {
		t.Fatalf("another key is blocked: %v %v", blocked, err)
	}
	if ok, _, _ := a.RateLimiter("api", n, period).Allow(ctx, "client:203.0.113.9"); !ok {
		t.Fatal("another limit shares the key's count")
	}

	// One key per limit and key, in one slot, living at most one period.
	rdb := a.Client()
	key := prefix + "{rl:invite:client%3A203.0.113.9}"
	ttl, err := rdb.PTTL(ctx, key).Result()
	if err != nil || ttl <= 0 || ttl > period {
		t.Fatalf("PTTL %s = %v %v, want within (0, %v]", key, ttl, err, period)
	}

	// Refill: one request after retry-after, not two. The sleep is the client
	// honouring Retry-After (time passing on Redis's clock, which the test
	// cannot drive); what is under test is that the wait it was told suffices.
	time.Sleep(wait + 50*time.Millisecond)
	if blocked, _, _ := la.Blocked(ctx, "client:203.0.113.9"); blocked {
		t.Fatal("still blocked after retry-after")
	}
	if ok, _, err := lb.Allow(ctx, "client:203.0.113.9"); err != nil || !ok {
		t.Fatalf("after retry-after: ok=%v err=%v", ok, err)
	}
	if ok, _, _ := la.Allow(ctx, "client:203.0.113.9"); ok {
		t.Fatal("two requests allowed after one interval")
	}

	// Idle for a period: the key is gone and the full burst is back. Redis
	// expires the key on its own clock: watch for it to go, allowing no more
	// than its TTL (and some slack for a loaded machine).
	ttl, _ = rdb.PTTL(ctx, key).Result()
	if !testkit.Within(ttl+250*time.Millisecond, func() bool {
		n, err := rdb.Exists(ctx, key).Result()
		return err == nil && n == 0
	}) {
		t.Fatalf("%s still exists after its TTL", key)
	}
	for i := range n {
		if ok, _, err := la.Allow(ctx, "client:203.0.113.9"); err != nil || !ok {
			t.Fatalf("request %d of the second burst: ok=%v err=%v", i+1, ok, err)
		}
	}

	// An unreachable Redis is an error (the broker then fails open), never a refusal.
	_ = a.Close()
	if ok, _, err := la.Allow(ctx, "client:203.0.113.9"); err == nil || ok {
		t.Fatalf("closed store: ok=%v err=%v, want an error", ok, err)
	}
}

// On Redis Cluster each limit key sits in its own slot; checks of keys on
// different nodes all work (the client follows MOVED).
func TestRateLimiterCluster(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: startCluster(t)})
	s := redisstore.New(c, redisstore.Options{Prefix: uniquePrefix()})
	t.Cleanup(func() { _ = s.Close() })
	l := s.RateLimiter("failed_redemptions", 2, time.Hour)
	for i := range 20 {
		key := "198.51.100." + strconv.Itoa(i)
		for j := range 2 {
			if ok, _, err := l.Allow(ctx, key); err != nil || !ok {
				t.Fatalf("%s request %d: ok=%v err=%v", key, j+1, ok, err)
			}
		}
		if blocked, wait, err := l.Blocked(ctx, key); err != nil || !blocked || wait <= 0 || wait > 30*time.Minute {
			t.Fatalf("%s after its burst: blocked=%v wait=%v err=%v", key, blocked, wait, err)
		}
	}
}

// twoReplicas are two stores on the standalone server with one prefix
// (returned too): what two usher replicas sharing a Redis see.
func twoReplicas(t *testing.T) (a, b *redisstore.Store, prefix string) {
	prefix = uniquePrefix()
	newStore := func() *redisstore.Store {
		s := redisstore.New(redis.NewClient(&redis.Options{Addr: standalone.addr()}), redisstore.Options{Prefix: prefix})
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	return newStore(), newStore(), prefix
}

// AllowUnlessRevoked takes a request and reads the token's revocation in
// one round trip: a live token is allowed until the burst is spent, a
// revoked one (by jti or by family) reads revoked and its request still
// counts, a token naming nothing is refused as invalid, and after SCRIPT
// FLUSH the limit still answers (NOSCRIPT, then the source).
func TestAllowUnlessRevoked(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	st, rdb, hook := countedStore(t, uniquePrefix())
	const n = 3
	l := st.RateLimiter("api", n, time.Minute)
	until := time.Now().Add(time.Hour)
	if err := st.RevokeAccessToken(ctx, "jti-revoked", until); err != nil {
		t.Fatal(err)
	}
	if err := st.RevokeFamily(ctx, "fam-revoked", until); err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct {
		family, jti string
		allowed     bool
		revoked     bool
	}{
		{"", "jti-live", true, false},
		{"fam-revoked", "jti-live", true, true},
		{"", "jti-revoked", true, true},
		{"fam-live", "jti-live", false, false}, // the burst of 3 is spent: revoked tokens counted
	} {
		before := hook.n.Load()
		ok, wait, limitErr, revoked, err := l.AllowUnlessRevoked(ctx, "client:funnel", tc.family, tc.jti)
		if err != nil || limitErr != nil {
			t.Fatalf("call %d: %v / %v", i+1, err, limitErr)
		}
		if ok != tc.allowed || revoked != tc.revoked || (!ok && wait <= 0) {
			t.Errorf("call %d (%s, %s): allowed %v (retry after %v) revoked %v, want %v %v", i+1, tc.family, tc.jti, ok, wait, revoked, tc.allowed, tc.revoked)
		}
		if trips := hook.n.Load() - before; trips != 1 && i > 0 { // the first loads the script
			t.Errorf("call %d: %d round trips, want 1", i+1, trips)
		}
	}
	if _, _, _, _, err := l.AllowUnlessRevoked(ctx, "client:funnel", "", ""); !errors.Is(err, redisstore.ErrInvalid) {
		t.Errorf("no family, no jti: %v, want ErrInvalid", err)
	}
	// A revocation that could not be read never passes for none.
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, _, revoked, err := l.AllowUnlessRevoked(cancelled, "client:funnel", "", "jti-live"); err == nil || revoked {
		t.Errorf("unreadable revocation: revoked %v, err %v; want an error", revoked, err)
	}
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if ok, _, limitErr, revoked, err := st.RateLimiter("api", n, time.Minute).AllowUnlessRevoked(ctx, "client:other", "", "jti-revoked"); err != nil || limitErr != nil || !ok || !revoked {
		t.Errorf("after SCRIPT FLUSH: allowed %v revoked %v, %v / %v", ok, revoked, err, limitErr)
	}
}

// A marker read that fails after one that found nothing is still an error:
// the pipeline's first error is then the absent family marker's nil reply,
// and the jti marker's failure (here WRONGTYPE: a hash where its string
// belongs) must not read as "not revoked".
func TestTokenRevokedReadFailure(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	prefix := uniquePrefix()
	st, rdb, _ := countedStore(t, prefix)
	if err := rdb.HSet(ctx, prefix+"jti:broken", "x", "1").Err(); err != nil {
		t.Fatal(err)
	}
	if revoked, err := st.TokenRevoked(ctx, "fam-absent", "broken"); err == nil {
		t.Errorf("TokenRevoked with an unreadable jti marker: revoked %v and no error", revoked)
	}
	ok, _, _, revoked, err := st.RateLimiter("api", 10, time.Minute).AllowUnlessRevoked(ctx, "client:x", "fam-absent", "broken")
	if err == nil {
		t.Errorf("AllowUnlessRevoked with an unreadable jti marker: allowed %v revoked %v and no error", ok, revoked)
	}
}
