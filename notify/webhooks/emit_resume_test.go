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
