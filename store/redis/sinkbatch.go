package redis

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
)

var _ grants.SinkBatcher = (*Store)(nil)

// AppendAuditBatch stores audit records in one MULTI (one slot, one round
// trip), as AppendAudit stores one.
func (s *Store) AppendAuditBatch(ctx context.Context, recs []*grants.AuditRecord) error {
	if len(recs) == 0 {
		return nil
	}
	fields := make([]any, 0, 2*len(recs))
	members := make([]redis.Z, 0, len(recs))
	for _, rec := range recs {
		if rec == nil || rec.ID == "" || rec.Action == "" || rec.At.IsZero() {
			return fmt.Errorf("redisstore: append audit: id, action and time are required: %w", ErrInvalid)
		}
		raw, err := json.Marshal(rec)
		if err != nil {
			return fmt.Errorf("redisstore: append audit: %w", err)
		}
		fields = append(fields, rec.ID, raw)
		members = append(members, redis.Z{Score: float64(micros(rec.At)), Member: rec.ID})
	}
	data, byTime := s.auditKeys()
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, data, fields...)
		p.ZAdd(ctx, byTime, members...)
		return nil
	})
	if err != nil {
		return fmt.Errorf("redisstore: append audit: %w", err)
	}
	return nil
}

// AddFunnelBatch runs AddFunnel's script for each event in one pipeline
// (all in the {funnel} slot); an event whose script failed there (not yet
// loaded on the node) is counted with AddFunnel.
func (s *Store) AddFunnelBatch(ctx context.Context, adds []grants.FunnelAdd) error {
	cmds := make([]*redis.Cmd, len(adds))
	for _, a := range adds {
		if a.EventID == "" || a.Day.IsZero() || !grants.ValidFunnelStage(a.Stage) {
			return fmt.Errorf("redisstore: add funnel: event id, day and a known stage are required: %w", ErrInvalid)
		}
	}
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, a := range adds {
			keys, args := s.funnelCall(a.EventID, a.Day, a.ClientID, a.Stage, a.RedeemSeconds)
			cmds[i] = addFunnel.EvalSha(ctx, p, keys, args...)
		}
		return nil
	})
	for i, c := range cmds {
		if c.Err() == nil {
			continue
		}
		a := adds[i]
		if err := s.AddFunnel(ctx, a.EventID, a.Day, a.ClientID, a.Stage, a.RedeemSeconds); err != nil {
			return err
		}
	}
	return nil
}
