package conformance

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/store/errs"
)

// testSinkBatch: the batch writes mean what their one-by-one calls mean —
// every record once (also one appended before, or twice in the batch),
// every event counted once — and refuse a batch with an invalid entry.
func testSinkBatch(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	b, ok := s.(grants.SinkBatcher)
	if !ok {
		t.Skip("no SinkBatcher")
	}
	now := clock.Now()
	rec := func(id string) *grants.AuditRecord {
		return &grants.AuditRecord{ID: id, At: now, Action: grants.EventInvitationCreated, Actor: "client:spa", Target: "inv-" + id}
	}
	must(t, "append one", s.AppendAudit(ctx, rec("b1")))
	must(t, "append batch", b.AppendAuditBatch(ctx, []*grants.AuditRecord{rec("b1"), rec("b2"), rec("b3"), rec("b3")}))
	must(t, "append empty batch", b.AppendAuditBatch(ctx, nil))
	if err := b.AppendAuditBatch(ctx, []*grants.AuditRecord{rec("b4"), {ID: "b5"}}); !errors.Is(err, errs.ErrInvalid) {
		t.Errorf("batch with a record without action: %v, want ErrInvalid", err)
	}
	recs, _, err := s.ListAudit(ctx, grants.AuditFilter{})
	must(t, "list", err)
	seen := map[string]int{}
	for _, r := range recs {
		seen[r.ID]++
		if r.ID == "b2" {
			same(t, "batch record", rec("b2"), &r)
		}
	}
	if len(recs) != 3 || seen["b1"] != 1 || seen["b2"] != 1 || seen["b3"] != 1 {
		t.Errorf("audit after batches: %v, want b1, b2, b3 once each", seen)
	}

	day := time.Date(now.Year(), now.Month(), now.Day(), 3, 0, 0, 0, time.UTC)
	add := func(id, client, stage string, secs int64) grants.FunnelAdd {
		return grants.FunnelAdd{EventID: id, Day: day, ClientID: client, Stage: stage, RedeemSeconds: secs}
	}
	must(t, "add one", s.AddFunnel(ctx, "f1", day, "spa", grants.FunnelCreated, -1))
	must(t, "add batch", b.AddFunnelBatch(ctx, []grants.FunnelAdd{add("f1", "spa", grants.FunnelCreated, -1),
		add("f2", "spa", grants.FunnelCreated, -1), add("f2", "spa", grants.FunnelCreated, -1),
		add("f3", "spa", grants.FunnelRedeemed, 60), add("f4", "crm", grants.FunnelCreated, -1)}))
	if err := b.AddFunnelBatch(ctx, []grants.FunnelAdd{add("f5", "spa", grants.FunnelCreated, -1),
		add("f6", "spa", "opened", -1)}); !errors.Is(err, errs.ErrInvalid) {
		t.Errorf("batch with an unknown stage: %v, want ErrInvalid", err)
	}
	days, err := s.Funnel(ctx, day, day, "")
	must(t, "funnel", err)
	got := map[string][3]int64{}
	for _, d := range days {
		got[d.ClientID] = [3]int64{d.Created, d.Redeemed, d.RedeemSeconds}
	}
	want := map[string][3]int64{"spa": {2, 1, 60}, "crm": {1, 0, 0}}
	if len(got) != len(want) || got["spa"] != want["spa"] || got["crm"] != want["crm"] {
		t.Errorf("funnel after batches: %v, want %v", got, want)
	}
}
