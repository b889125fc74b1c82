package webhooks_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/internal/testkit"
	"github.com/usher-oidc/usher/notify/webhooks"
)

// failLaneEvents fails the next n stores of a lane event: an Emit that
// stored the delivery log record and then failed (or whose process died)
// before the delivery itself was queued.
type failLaneEvents struct {
	grants.Store
	mu sync.Mutex
	n  int
}

func (f *failLaneEvents) EnqueueJob(ctx context.Context, j *grants.Job) error {
	f.mu.Lock()
	fail := f.n > 0 && strings.HasPrefix(j.Kind, "webhook-lane:")
	if fail {
		f.n--
	}
	f.mu.Unlock()
	if fail {
		return errors.New("store unavailable")
	}
	return f.Store.EnqueueJob(ctx, j)
}

// The outbox hands an event over again until every consumer took it. When
// the first Emit got as far as the delivery log record only, the next Emit
// of the same event must queue the delivery, not take the log record for
// proof that it is queued (the webhook would never go out, and the log
// would call it pending forever). Once delivered, Emitting it again queues
// nothing.
func TestWebhooksEmitResumesAHalfQueuedEmit(t *testing.T) {
	t.Parallel()
	secret := newSecret(t)
	rcv := newReceiver(t, []string{secret}, nil)
	bolt, _ := testkit.OpenBolt(t)
	st := &failLaneEvents{Store: bolt, n: 1}
	w := newWebhooks(t, st, []webhooks.WebhookEndpoint{{ID: "crm", URL: rcv.srv.URL, Secrets: []string{secret}}}, nil)
	inv, _, _ := testkit.PendingInvitation(t, bolt, "ada@example.com")
	ev := webhooks.InvitationCreatedEvent(inv)
	if err := w.Emit(t.Context(), ev); err == nil {
		t.Fatal("Emit with the store failing: no error")
	}
	if err := w.Emit(t.Context(), ev); err != nil {
		t.Fatal(err)
	}
	runWebhooks(t, w)
	testkit.Eventually(t, "the delivery", func() bool { return len(rcv.processed()) == 1 })
	waitWebhooksIdle(t, w)
	ds, err := w.Deliveries(t.Context(), "crm", 10)
	if err != nil || len(ds) != 1 || ds[0].Status != webhooks.DeliveryDelivered {
		t.Fatalf("delivery log: %+v %v", ds, err)
	}

	if err := w.Emit(t.Context(), ev); err != nil {
		t.Fatal(err)
	}
	if n, err := w.QueueDepth(t.Context()); err != nil || n != 0 {
		t.Fatalf("an event already delivered was queued again: %d lanes (%v)", n, err)
	}
}

// staleLogRead answers the first read of a delivery log record with what it
// held, but only after the test has let the delivery finish: the second
// hand-over of an event reads "pending", the first copy is delivered and
// its job completed, then the second queues its copy.
type staleLogRead struct {
	grants.Store
	once    sync.Once
	reading chan struct{} // closed when the stale read has read
	release chan struct{} // closed by the test once the first copy is delivered
}

func (s *staleLogRead) GetJob(ctx context.Context, id string) (*grants.Job, error) {
	stale := false
	s.once.Do(func() { stale = true })
	j, err := s.Store.GetJob(ctx, id)
	if stale {
		close(s.reading)
		<-s.release
	}
	return j, err
}

// An event handed over twice whose first copy is delivered between the
// second hand-over's look at the delivery log and its queueing: the second
// copy finds the log delivered before sending and is dropped, so the
// receiver gets it once (it got it twice before the lane looked again).
func TestWebhooksSecondHandOverAfterDelivery(t *testing.T) {
	t.Parallel()
	secret := newSecret(t)
	rcv := newReceiver(t, []string{secret}, nil)
	bolt, _ := testkit.OpenBolt(t)
	st := &staleLogRead{Store: bolt, reading: make(chan struct{}), release: make(chan struct{})}
	w := newWebhooks(t, st, []webhooks.WebhookEndpoint{{ID: "crm", URL: rcv.srv.URL, Secrets: []string{secret}}}, nil)
	inv, _, _ := testkit.PendingInvitation(t, bolt, "ada@example.com")
	ev := webhooks.InvitationCreatedEvent(inv)
	if err := w.Emit(t.Context(), ev); err != nil {
		t.Fatal(err)
	}
	second := make(chan error, 1)
	go func() { second <- w.Emit(context.Background(), ev) }()
	<-st.reading // the second hand-over has read the log: pending
	runWebhooks(t, w)
	testkit.Eventually(t, "the first copy's delivery", func() bool { return len(rcv.processed()) == 1 })
	waitWebhooksIdle(t, w)
	close(st.release)
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	waitWebhooksIdle(t, w)
	rcv.mu.Lock()
	arrivals := len(rcv.arrivals)
	rcv.mu.Unlock()
	if arrivals != 1 {
		t.Fatalf("the event reached the receiver %d times, want once", arrivals)
	}
	ds, err := w.Deliveries(t.Context(), "crm", 10)
	if err != nil || len(ds) != 1 || ds[0].Status != webhooks.DeliveryDelivered {
		t.Fatalf("delivery log: %+v %v", ds, err)
	}
}
