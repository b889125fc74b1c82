package redis_test

import (
	"testing"
	"time"
)

// The shared budget against a real redis-server: two stores (two replicas)
// take from one burst; a caller with a reserve stops while that many
// permits are left, one without takes them; a pause stops both until its
// instant, lives in a key expiring then (PXAT), and an earlier pause does
// not shorten it.
func TestBudget(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	a, b, prefix := twoReplicas(t)
	const perSecond, burst, reserve = 2, 5, 2 // one permit every 500ms
	ba, bb := a.Budget("auth0", perSecond, burst), b.Budget("auth0", perSecond, burst)
	const tenant = "tenant.eu.auth0.com"

	for i := range burst - reserve {
		bx := ba
		if i%2 == 1 {
			bx = bb
		}
		if ok, _, err := bx.Take(ctx, tenant, reserve); err != nil || !ok {
			t.Fatalf("low-priority permit %d: ok=%v err=%v", i+1, ok, err)
		}
	}
	ok, wait, err := bb.Take(ctx, tenant, reserve)
	if err != nil || ok || wait <= 0 || wait > 500*time.Millisecond {
		t.Fatalf("low-priority permit past the reserve: ok=%v wait=%v err=%v, want refused within 500ms", ok, wait, err)
	}
	for i := range reserve {
		if ok, _, err := ba.Take(ctx, tenant, 0); err != nil || !ok {
			t.Fatalf("reserved permit %d: ok=%v err=%v", i+1, ok, err)
		}
	}
	if ok, _, _ := bb.Take(ctx, tenant, 0); ok {
		t.Fatal("a permit past the burst")
	}
	if ok, _, _ := ba.Take(ctx, "other.eu.auth0.com", 0); !ok {
		t.Fatal("another tenant shares the count")
	}

	until := time.Now().Add(1500 * time.Millisecond)
	if err := ba.Pause(ctx, "other.eu.auth0.com", until); err != nil {
		t.Fatal(err)
	}
	if err := bb.Pause(ctx, "other.eu.auth0.com", until.Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	ok, wait, err = bb.Take(ctx, "other.eu.auth0.com", 0)
	if err != nil || ok || wait < time.Second || wait > 1500*time.Millisecond {
		t.Fatalf("paused: ok=%v wait=%v err=%v, want refused for about 1.5s", ok, wait, err)
	}
	key := prefix + "{budget:auth0:other.eu.auth0.com}:paused"
	if at, err := a.Client().PExpireTime(ctx, key).Result(); err != nil || at != time.Duration(until.UnixMilli())*time.Millisecond {
		t.Fatalf("PEXPIRETIME %s = %v %v, want %v", key, at, err, until.UnixMilli())
	}
}
