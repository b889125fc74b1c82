package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/grants/outbox"
	"github.com/usher-oidc/usher/internal/testkit"
)

// recorder is a consumer that keeps what it was handed, idempotently by
// event ID as every consumer must, and counts the hand-overs.
type recorder struct {
	mu       sync.Mutex
	seen     map[string]bool
	order    []string // invitation ID + event type, in hand-over order
	handed   atomic.Int64
	failNext atomic.Int64 // refuse this many hand-overs first
}

func (r *recorder) Consume(_ context.Context, inv *grants.Invitation, ev grants.OutboxEvent) error {
	r.handed.Add(1)
	if r.failNext.Add(-1) >= 0 {
		return errors.New("consumer down")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen == nil {
		r.seen = map[string]bool{}
	}
	if !r.seen[ev.ID] {
		r.seen[ev.ID] = true
		r.order = append(r.order, inv.ID+" "+ev.Type)
	}
	return nil
}

func (r *recorder) events() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.order)
}

func newService(st grants.Store, now func() time.Time) *grants.Service {
	return grants.NewService(grants.ServiceOptions{Store: st, Now: now})
}

func TestRelayHandsEventsOverInOrderAndAcknowledges(t *testing.T) {
	st, _ := testkit.OpenBolt(t)
	ctx := t.Context()
	svc := newService(st, time.Now)
	inv, _, _, err := svc.Create(ctx, grants.CreateRequest{Email: "a@example.com", Roles: []string{"viewer"}}, "client:funnel")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.Resend(ctx, inv.ID, "client:funnel"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Revoke(ctx, inv.ID, "usr_admin"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Revoke(ctx, inv.ID, "usr_admin"); err != nil { // a no-op records nothing
		t.Fatal(err)
	}
	rec := &recorder{}
	relay := outbox.NewRelay(outbox.RelayOptions{Store: st, Consumers: []outbox.Consumer{rec, outbox.Audit(st)}, Logger: testkit.Logger(t)})
	if n := relay.Drain(ctx); n != 3 {
		t.Fatalf("acknowledged %d events, want 3", n)
	}
	want := []string{inv.ID + " invitation.created", inv.ID + " invitation.resent", inv.ID + " invitation.revoked"}
	if got := rec.events(); !slices.Equal(got, want) {
		t.Fatalf("handed over %v, want %v", got, want)
	}
	if got := testkit.Invitation(t, st, inv.ID); len(got.Outbox) != 0 {
		t.Fatalf("outbox not emptied: %+v", got.Outbox)
	}
	audit, _, err := st.ListAudit(ctx, grants.AuditFilter{Target: inv.ID})
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, a := range audit {
		actions = append(actions, a.Action+" by "+a.Actor)
	}
	slices.Sort(actions)
	if wantA := []string{"invitation.created by client:funnel", "invitation.resent by client:funnel", "invitation.revoked by usr_admin"}; !slices.Equal(actions, wantA) {
		t.Fatalf("audit %v, want %v", actions, wantA)
	}
	if n := relay.Drain(ctx); n != 0 || rec.handed.Load() != 3 {
		t.Fatalf("a second drain handed over again: acked %d, hand-overs %d", n, rec.handed.Load())
	}
}

func TestRelayRetriesARefusedEventAfterTheLease(t *testing.T) {
	st, _ := testkit.OpenBolt(t)
	ctx := t.Context()
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	svc := newService(st, now)
	inv, _, _, err := svc.Create(ctx, grants.CreateRequest{Email: "b@example.com"}, "client:funnel")
	if err != nil {
		t.Fatal(err)
	}
	first, down := &recorder{}, &recorder{}
	down.failNext.Store(1)
	relay := outbox.NewRelay(outbox.RelayOptions{Store: st, Consumers: []outbox.Consumer{first, down}, Lease: time.Minute, Now: now, Logger: testkit.Logger(t)})
	if n := relay.Drain(ctx); n != 0 {
		t.Fatalf("acknowledged %d events while a consumer refused", n)
	}
	if n := relay.Drain(ctx); n != 0 {
		t.Fatalf("handed over again within the lease (acked %d)", n)
	}
	clock.Add(int64(time.Minute + time.Second))
	if n := relay.Drain(ctx); n != 1 {
		t.Fatalf("after the lease: acknowledged %d, want 1", n)
	}
	// The first consumer was handed the event twice and took it once.
	if got := first.events(); len(got) != 1 || first.handed.Load() != 2 {
		t.Fatalf("first consumer: events %v after %d hand-overs", got, first.handed.Load())
	}
	if got := down.events(); !slices.Equal(got, []string{inv.ID + " invitation.created"}) {
		t.Fatalf("recovered consumer got %v", got)
	}
}

// Several runners on one store (replicas, or one process's loop and a
// shutdown drain) hand each invitation to one runner at a time: every event
// reaches a consumer once, with no duplicate hand-over while a lease holds.
func TestRelaysShareTheWorkWithoutDoubleHandOver(t *testing.T) {
	st, _ := testkit.OpenBolt(t)
	ctx := t.Context()
	svc := newService(st, time.Now)
	const n = 60
	for i := range n {
		if _, _, _, err := svc.Create(ctx, grants.CreateRequest{Email: fmt.Sprintf("c%d@example.com", i)}, "client:funnel"); err != nil {
			t.Fatal(err)
		}
	}
	rec := &recorder{}
	var wg sync.WaitGroup
	var acked atomic.Int64
	for range 4 {
		relay := outbox.NewRelay(outbox.RelayOptions{Store: st, Consumers: []outbox.Consumer{rec}, Batch: 7, Lease: time.Hour, Logger: testkit.Logger(t)})
		wg.Go(func() { acked.Add(int64(relay.Drain(ctx))) })
	}
	wg.Wait()
	if acked.Load() != n || rec.handed.Load() != n || len(rec.events()) != n {
		t.Fatalf("acked %d, hand-overs %d, distinct %d; want %d each", acked.Load(), rec.handed.Load(), len(rec.events()), n)
	}
}
