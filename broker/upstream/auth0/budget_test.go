package auth0_test

import (
	"context"
	"testing"
	"time"

	"github.com/usher-oidc/usher/broker/upstream/auth0"
)

// The in-process budget (bbolt): the same rules as the Redis one, on a
// fake clock. A caller with a reserve stops while that many permits are
// left, one without takes them; a refill comes one interval later; a pause
// stops both until its instant and an earlier one does not shorten it.
func TestLocalBudget(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_700_000_000, 0)
	b := auth0.NewLocalBudget(2, 5, func() time.Time { return now }) // a permit every 500ms
	ctx := context.Background()
	const tenant, reserve = "tenant.eu.auth0.com", 2
	take := func(reserve int) (bool, time.Duration) {
		ok, wait, err := b.Take(ctx, tenant, reserve)
		if err != nil {
			t.Fatal(err)
		}
		return ok, wait
	}
	for i := range 5 - reserve {
		if ok, _ := take(reserve); !ok {
			t.Fatalf("low-priority permit %d refused", i+1)
		}
	}
	if ok, wait := take(reserve); ok || wait != 500*time.Millisecond {
		t.Fatalf("past the reserve: %v %v, want refused for 500ms", ok, wait)
	}
	for i := range reserve {
		if ok, _ := take(0); !ok {
			t.Fatalf("reserved permit %d refused", i+1)
		}
	}
	if ok, wait := take(0); ok || wait != 500*time.Millisecond {
		t.Fatalf("past the burst: %v %v", ok, wait)
	}
	now = now.Add(500 * time.Millisecond)
	if ok, wait := take(reserve); ok || wait != time.Second { // 1 permit back, 3 needed
		t.Fatalf("one refill, low priority: %v %v, want refused until the reserve is back", ok, wait)
	}
	if ok, _ := take(0); !ok {
		t.Fatal("one refill: refused")
	}

	now = now.Add(time.Hour)
	_ = b.Pause(ctx, tenant, now.Add(2*time.Second))
	_ = b.Pause(ctx, tenant, now.Add(time.Second))
	if ok, wait := take(0); ok || wait != 2*time.Second {
		t.Fatalf("paused: %v %v, want refused for 2s", ok, wait)
	}
	now = now.Add(2 * time.Second)
	if ok, _ := take(reserve); !ok {
		t.Fatal("after the pause: refused")
	}
}
