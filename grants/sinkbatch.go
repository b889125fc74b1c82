package grants

import (
	"context"
	"time"
)

// FunnelAdd is one AddFunnel call.
type FunnelAdd struct {
	EventID       string
	Day           time.Time
	ClientID      string
	Stage         string
	RedeemSeconds int64
}

// SinkBatcher is an optional capability of a Store: the audit records and
// funnel counts of many outbox events in one write (one bbolt commit, one
// Redis round trip) instead of one each. Each call means the same as the
// one-by-one calls it stands for, so a repeated record or event is written
// or counted once; an error may leave part of the batch written, which the
// one-by-one retry then completes.
type SinkBatcher interface {
	AppendAuditBatch(ctx context.Context, recs []*AuditRecord) error
	AddFunnelBatch(ctx context.Context, adds []FunnelAdd) error
}
