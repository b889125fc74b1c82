package outbox

import (
	"context"

	"github.com/usher-oidc/usher/grants"
)

// Delivery is one event handed over with its invitation (nil for a grant
// event).
type Delivery struct {
	Inv   *grants.Invitation
	Event grants.OutboxEvent
}

// BatchConsumer is a Consumer that can also take the events of many
// records at once, in one store write instead of one per event. An error
// means nothing certain: the relay then hands those events over one by one
// (Consume is idempotent by event ID), so one refusal holds back only its
// own record.
type BatchConsumer interface {
	Consumer
	ConsumeBatch(ctx context.Context, ds []Delivery) error
}

// auditConsumer is Audit: with a store that writes records in batches it
// is a BatchConsumer.
type auditConsumer struct{ st grants.Store }

func auditRecord(inv *grants.Invitation, ev grants.OutboxEvent) *grants.AuditRecord {
	target := ev.UserID
	if inv != nil {
		target = inv.ID
	}
	return &grants.AuditRecord{ID: ev.ID, At: ev.At, Action: ev.Type, Actor: ev.Actor, Target: target, Detail: ev.Detail}
}

func (a auditConsumer) Consume(ctx context.Context, inv *grants.Invitation, ev grants.OutboxEvent) error {
	return a.st.AppendAudit(ctx, auditRecord(inv, ev))
}

func (a auditConsumer) ConsumeBatch(ctx context.Context, ds []Delivery) error {
	recs := make([]*grants.AuditRecord, len(ds))
	for i, d := range ds {
		recs[i] = auditRecord(d.Inv, d.Event)
	}
	if b, ok := a.st.(grants.SinkBatcher); ok {
		return b.AppendAuditBatch(ctx, recs)
	}
	for _, rec := range recs {
		if err := a.st.AppendAudit(ctx, rec); err != nil {
			return err
		}
	}
	return nil
}

// funnelConsumer is Funnel, a BatchConsumer like auditConsumer.
type funnelConsumer struct{ st grants.FunnelStore }

// funnelAdd is what ev counts, false for an event the funnel does not count.
func funnelAdd(inv *grants.Invitation, ev grants.OutboxEvent) (grants.FunnelAdd, bool) {
	stage, ok := funnelStages[ev.Type]
	if !ok || inv == nil {
		return grants.FunnelAdd{}, false
	}
	secs := int64(-1)
	if stage == grants.FunnelRedeemed && !inv.CreatedAt.IsZero() && !ev.At.Before(inv.CreatedAt) {
		secs = int64(ev.At.Sub(inv.CreatedAt).Seconds())
	}
	return grants.FunnelAdd{EventID: ev.ID, Day: ev.At, ClientID: inv.ClientID, Stage: stage, RedeemSeconds: secs}, true
}

func (f funnelConsumer) Consume(ctx context.Context, inv *grants.Invitation, ev grants.OutboxEvent) error {
	a, ok := funnelAdd(inv, ev)
	if !ok {
		return nil
	}
	return f.st.AddFunnel(ctx, a.EventID, a.Day, a.ClientID, a.Stage, a.RedeemSeconds)
}

func (f funnelConsumer) ConsumeBatch(ctx context.Context, ds []Delivery) error {
	var adds []grants.FunnelAdd
	for _, d := range ds {
		if a, ok := funnelAdd(d.Inv, d.Event); ok {
			adds = append(adds, a)
		}
	}
	if len(adds) == 0 {
		return nil
	}
	if b, ok := f.st.(grants.SinkBatcher); ok {
		return b.AddFunnelBatch(ctx, adds)
	}
	for _, a := range adds {
		if err := f.st.AddFunnel(ctx, a.EventID, a.Day, a.ClientID, a.Stage, a.RedeemSeconds); err != nil {
			return err
		}
	}
	return nil
}
