package redis

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
)

// The outbox index.
//
//	{prefix}{outbox}:due   sorted set of invitation IDs whose record holds
//	                       events not yet acknowledged; score 0: due now,
//	                       otherwise the end of a runner's lease (µs)
//
// The events themselves live in the invitation's record, written by the same
// CAS as the state change. The index lives in another slot, so it follows the
// rule of the other indexes: the entry is added (score 0) before the CAS that
// needs it, and removed only by an acknowledgement that emptied the record,
// and only while the entry still carries that runner's lease — a writer that
// added events in between has set it back to 0, and it stays. A runner may
// also claim the entry between a writer's mark and its CAS, read the record
// as it was (no record yet, or without the new events), acknowledge nothing
// and drop the entry: so the writer marks it once more after its CAS.

func (s *Store) outboxKey() string { return s.prefix + "{outbox}:due" }

// outboxDue is the command making the invitation id due in the outbox
// index, to send alone or in a pipeline.
func (s *Store) outboxDue(ctx context.Context, id string) *redis.IntCmd {
	return redis.NewIntCmd(ctx, "zadd", s.outboxKey(), 0, id)
}

// markOutbox makes inv due in the outbox index when its record will hold events.
func (s *Store) markOutbox(ctx context.Context, inv *grants.Invitation) error {
	if len(inv.Outbox) == 0 {
		return nil
	}
	cmd := s.outboxDue(ctx, inv.ID)
	_ = s.rdb.Process(ctx, cmd)
	return cmd.Err()
}

// casThenMark runs the invitation script (args after the key) and then
// marks inv's events due again (markOutboxAgain): in one round trip on one
// master, which runs a connection's commands in order, so the mark still
// lands after the write. On a cluster, or when the master had lost the
// script (it then ran again after the mark), the mark is sent after the
// reply. A mark after a refused write only makes a runner look at the
// record once more.
func (s *Store) casThenMark(ctx context.Context, inv *grants.Invitation, args ...any) ([]any, error) {
	keys := []string{s.invKey(inv.ID)}
	if !s.oneMaster() || len(inv.Outbox) == 0 {
		res, err := s.runScript(ctx, invitationCAS, keys, args...)
		if err == nil && str(res, 0) == "ok" {
			s.markOutboxAgain(ctx, inv)
		}
		return res, err
	}
	var piped *pipedScript
	var mark *redis.IntCmd
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		piped = scriptCall{sc: invitationCAS, keys: keys, args: args}.queue(ctx, p)
		mark = s.outboxDue(ctx, inv.ID)
		_ = p.Process(ctx, mark)
		return nil
	})
	rerun := redis.HasErrorPrefix(piped.cmd.Err(), "NOSCRIPT")
	res, err := piped.reply(ctx, s.rdb)
	if err != nil {
		return nil, err
	}
	if rerun || mark.Err() != nil {
		s.markOutboxAgain(ctx, inv)
	}
	return res, nil
}

// claimOutbox: KEYS[1] index; ARGV now µs, lease end µs, limit.
var claimOutbox = redis.NewScript(`
local ids = redis.call('ZRANGE', KEYS[1], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], ARGV[2], id)
end
return ids
`)

// luaDropLeased removes id from the outbox index only while it is leased
// (score > 0): a 0 means a writer has added events since.
const luaDropLeased = `
local function dropLeased(key, id)
  local score = redis.call('ZSCORE', key, id)
  if score and tonumber(score) > 0 then
    return redis.call('ZREM', key, id)
  end
  return 0
end
`

// dropOutbox: KEYS[1] index; ARGV id.
var dropOutbox = redis.NewScript(luaDropLeased + `
return dropLeased(KEYS[1], ARGV[1])
`)

// ClaimOutbox leases up to limit due invitations in one script.
func (s *Store) ClaimOutbox(ctx context.Context, now time.Time, limit int, lease time.Duration) ([]string, error) {
	if limit <= 0 {
		return nil, nil
	}
	res, err := claimOutbox.Run(ctx, s.rdb, []string{s.outboxKey()}, micros(now), micros(now.Add(lease)), limit).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("redisstore: claim outbox: %w", err)
	}
	return res, nil
}

// AckOutbox removes the events with a CAS on the invitation, then its index
// entry once the record holds none.
func (s *Store) AckOutbox(ctx context.Context, invitationID string, eventIDs []string) error {
	if userID, ok := grants.OutboxUser(invitationID); ok {
		return s.ackGrantOutbox(ctx, userID, eventIDs)
	}
	if err := checkKeys("redisstore: ack outbox", invitationID); err != nil {
		return err
	}
	inv, err := s.transition(ctx, "ack outbox", invitationID, func(inv *grants.Invitation) (bool, error) {
		return inv.AckEvents(eventIDs), nil
	}, nil)
	if err != nil && !errors.Is(err, grants.ErrNotFound) {
		return err
	}
	if inv != nil && len(inv.Outbox) > 0 {
		return nil
	}
	if err := dropOutbox.Run(ctx, s.rdb, []string{s.outboxKey()}, invitationID).Err(); err != nil {
		return fmt.Errorf("redisstore: ack outbox %s: %w", invitationID, err)
	}
	return nil
}

// ackGrantOutbox is AckOutbox for a user's grant events (kept in the
// grant's hash), then the index entry once none is left.
func (s *Store) ackGrantOutbox(ctx context.Context, userID string, eventIDs []string) error {
	if err := checkKeys("redisstore: ack grant outbox", userID); err != nil {
		return err
	}
	args := []any{"ack", ""}
	for _, id := range eventIDs {
		args = append(args, id)
	}
	g, _, err := s.grantOp(ctx, userID, args...)
	if err != nil {
		return fmt.Errorf("redisstore: ack grant outbox of %s: %w", userID, err)
	}
	if len(g.Outbox) > 0 {
		return nil
	}
	if err := dropOutbox.Run(ctx, s.rdb, []string{s.outboxKey()}, grants.UserOutboxID(userID)).Err(); err != nil {
		return fmt.Errorf("redisstore: ack grant outbox of %s: %w", userID, err)
	}
	return nil
}
