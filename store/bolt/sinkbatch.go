package bolt

import (
	"context"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/usher-oidc/usher/grants"
)

var _ grants.SinkBatcher = (*Store)(nil)

// AppendAuditBatch stores audit records in one write (one commit), as
// AppendAudit stores one.
func (s *Store) AppendAuditBatch(ctx context.Context, recs []*grants.AuditRecord) error {
	keys := make([][]byte, len(recs))
	for i, rec := range recs {
		if rec == nil || rec.ID == "" || rec.Action == "" || rec.At.IsZero() {
			return fmt.Errorf("boltstore: append audit: id, action and time are required: %w", ErrInvalid)
		}
		if err := checkKeys("boltstore: append audit", rec.ID); err != nil {
			return err
		}
		keys[i] = append(timeKey(rec.At), rec.ID...)
	}
	if len(recs) == 0 {
		return nil
	}
	return s.batch(func(tx *bolt.Tx) error {
		for i, rec := range recs {
			if err := putJSON(tx.Bucket(bAudit), keys[i], rec); err != nil {
				return err
			}
		}
		return nil
	})
}

// AddFunnelBatch counts events in one write (one commit), each unless its
// ID was counted already, as AddFunnel counts one.
func (s *Store) AddFunnelBatch(ctx context.Context, adds []grants.FunnelAdd) error {
	for _, a := range adds {
		if a.EventID == "" || a.Day.IsZero() || !grants.ValidFunnelStage(a.Stage) {
			return fmt.Errorf("boltstore: add funnel: event id, day and a known stage are required: %w", ErrInvalid)
		}
		if err := checkKeys("boltstore: add funnel", a.EventID); err != nil {
			return err
		}
		if err := checkNoNUL("boltstore: add funnel", a.ClientID); err != nil {
			return err
		}
	}
	if len(adds) == 0 {
		return nil
	}
	return s.batch(func(tx *bolt.Tx) error {
		for _, a := range adds {
			inc := grants.FunnelIncrements(a.Stage, a.RedeemSeconds)
			if err := addFunnelTx(tx, a.EventID, grants.FunnelDayKey(a.Day), a.ClientID, inc); err != nil {
				return err
			}
		}
		return nil
	})
}
