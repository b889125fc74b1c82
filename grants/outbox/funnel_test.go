package outbox_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/grants/outbox"
	"github.com/usher-oidc/usher/internal/testkit"
)

// An event the relay hands over twice (a later consumer refused it the
// first time) is counted once by the funnel.
func TestFunnelCountsAnEventHandedOverTwiceOnce(t *testing.T) {
	st, _ := testkit.OpenBolt(t)
	ctx := t.Context()
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	svc := grants.NewService(grants.ServiceOptions{Store: st, Now: now, KnownClient: func(string) bool { return true }})
	inv, _, _, err := svc.Create(ctx, grants.CreateRequest{Email: "f@example.com", ClientID: "spa"}, "client:spa")
	if err != nil {
		t.Fatal(err)
	}
	down := &recorder{}
	down.failNext.Store(1)
	relay := outbox.NewRelay(outbox.RelayOptions{Store: st, Consumers: []outbox.Consumer{outbox.Funnel(st), down},
		Lease: time.Minute, Now: now, Logger: testkit.Logger(t)})
	if n := relay.Drain(ctx); n != 0 {
		t.Fatalf("acknowledged %d events while a consumer refused", n)
	}
	clock.Add(int64(time.Minute + time.Second))
	if n := relay.Drain(ctx); n != 1 {
		t.Fatalf("after the lease: acknowledged %d, want 1", n)
	}
	if down.handed.Load() != 2 {
		t.Fatalf("hand-overs: %d, want 2", down.handed.Load())
	}
	days, err := st.Funnel(ctx, now().AddDate(0, 0, -1), now(), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(days) != 1 || days[0].ClientID != "spa" || days[0].Created != 1 {
		t.Fatalf("funnel = %+v, want one day of spa with created 1 (invitation %s)", days, inv.ID)
	}
}
