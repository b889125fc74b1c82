package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/grants/outbox"
	"github.com/usher-oidc/usher/internal/testkit"
)

// batchRecorder is a recorder that also takes rounds in one call; it
// refuses a batch while failBatch is set, and (one by one) the events of
// the invitation refuse names.
type batchRecorder struct {
	recorder
	mu        sync.Mutex
	batches   []int
	failBatch bool
	refuse    string
}

func (b *batchRecorder) Consume(ctx context.Context, inv *grants.Invitation, ev grants.OutboxEvent) error {
	if inv.ID == b.refuse {
		return errors.New("refused")
	}
	return b.recorder.Consume(ctx, inv, ev)
}

func (b *batchRecorder) ConsumeBatch(ctx context.Context, ds []outbox.Delivery) error {
	b.mu.Lock()
	b.batches = append(b.batches, len(ds))
	fail := b.failBatch
	b.mu.Unlock()
	if fail {
		return errors.New("batch refused")
	}
	for _, d := range ds {
		if err := b.recorder.Consume(ctx, d.Inv, d.Event); err != nil {
			return err
		}
	}
	return nil
}

// A claim's events reach a BatchConsumer in rounds — each invitation's
// first events in one call, then their second — so each record's events
// stay in order; a refused batch falls back to one by one, where a refusal
// holds back only its own record's later events.
func TestRelayHandsRoundsToABatchConsumer(t *testing.T) {
	for _, tc := range []struct {
		name      string
		failBatch bool
		refuse    int // index of the invitation refused one by one, -1: none
		wantAcked int
	}{
		{"batched", false, -1, 6},
		{"fallback", true, -1, 6},
		{"fallback with a refusal", true, 1, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, _ := testkit.OpenBolt(t)
			ctx := t.Context()
			svc := newService(st, time.Now)
			var ids []string
			for i := range 3 {
				inv, _, _, err := svc.Create(ctx, grants.CreateRequest{Email: fmt.Sprintf("r%d@example.com", i)}, "client:funnel")
				if err != nil {
					t.Fatal(err)
				}
				if _, err := svc.Revoke(ctx, inv.ID, "usr_admin"); err != nil {
					t.Fatal(err)
				}
				ids = append(ids, inv.ID)
			}
			rec := &batchRecorder{failBatch: tc.failBatch}
			if tc.refuse >= 0 {
				rec.refuse = ids[tc.refuse]
			}
			after := &recorder{}
			relay := outbox.NewRelay(outbox.RelayOptions{Store: st, Consumers: []outbox.Consumer{rec, after}, Logger: testkit.Logger(t)})
			if n := relay.Drain(ctx); n != tc.wantAcked {
				t.Fatalf("acknowledged %d events, want %d", n, tc.wantAcked)
			}
			if want := []int{3, 3}; tc.refuse < 0 && !slices.Equal(rec.batches, want) {
				t.Errorf("batch sizes %v, want %v", rec.batches, want)
			}
			got := after.events()
			for i, id := range ids {
				want := []string{id + " invitation.created", id + " invitation.revoked"}
				if i == tc.refuse {
					want = nil
				}
				var mine []string
				for _, e := range got {
					if e[:len(id)] == id {
						mine = append(mine, e)
					}
				}
				if !slices.Equal(mine, want) {
					t.Errorf("invitation %d: consumer after got %v, want %v", i, mine, want)
				}
			}
		})
	}
}
