package redis

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
)

var (
	_ grants.OutboxBatcher   = (*Store)(nil)
	_ grants.OutboxReadAcker = (*Store)(nil)
)

// GetInvitations reads a claim's invitations in one pipeline.
func (s *Store) GetInvitations(ctx context.Context, ids []string) ([]*grants.Invitation, error) {
	if err := checkKeys("redisstore: get invitations", ids...); err != nil {
		return nil, err
	}
	invs, err := s.loadInvitations(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("redisstore: get invitations: %w", err)
	}
	return invs, nil
}

// ReadOutbox reads a claim's invitations with their versions, in one
// pipeline.
func (s *Store) ReadOutbox(ctx context.Context, ids []string) (*grants.OutboxRead, error) {
	if err := checkKeys("redisstore: read outbox", ids...); err != nil {
		return nil, err
	}
	invs, versions, err := s.loadInvitationVersions(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("redisstore: read outbox: %w", err)
	}
	return &grants.OutboxRead{IDs: ids, Invitations: invs, Versions: versions}, nil
}

// AckOutboxBatch acknowledges a claim's events in two pipelines (read,
// then compare-and-set each record with its index entry's drop) instead
// of three round trips per invitation. A record that changed between the
// read and its CAS takes AckOutbox's one-by-one path.
func (s *Store) AckOutboxBatch(ctx context.Context, acks map[string][]string) error {
	ids, err := s.ackUsers(ctx, acks)
	if err != nil {
		return err
	}
	read, err := s.ReadOutbox(ctx, ids)
	if err != nil {
		return fmt.Errorf("redisstore: ack outbox: %w", err)
	}
	stale, err := s.ackAgainstRead(ctx, read, acks)
	if err != nil {
		return err
	}
	for _, id := range stale {
		if err := s.AckOutbox(ctx, id, acks[id]); err != nil {
			return err
		}
	}
	return nil
}

// AckOutboxRead acknowledges against read in one pipeline. The records
// written since (a mail's status, say) are read again, together, by
// AckOutboxBatch.
func (s *Store) AckOutboxRead(ctx context.Context, read *grants.OutboxRead, acks map[string][]string) error {
	if _, err := s.ackUsers(ctx, acks); err != nil {
		return err
	}
	if err := checkKeys("redisstore: ack outbox", read.IDs...); err != nil {
		return err
	}
	stale, err := s.ackAgainstRead(ctx, read, acks)
	if err != nil || len(stale) == 0 {
		return err
	}
	again := make(map[string][]string, len(stale))
	for _, id := range stale {
		again[id] = acks[id]
	}
	return s.AckOutboxBatch(ctx, again)
}

// ackUsers acknowledges the users' grant events in acks one by one and
// returns the invitation IDs.
func (s *Store) ackUsers(ctx context.Context, acks map[string][]string) ([]string, error) {
	ids := make([]string, 0, len(acks))
	for id := range acks {
		if _, isUser := grants.OutboxUser(id); isUser {
			if err := s.AckOutbox(ctx, id, acks[id]); err != nil {
				return nil, err
			}
			continue
		}
		ids = append(ids, id)
	}
	if err := checkKeys("redisstore: ack outbox", ids...); err != nil {
		return nil, err
	}
	return ids, nil
}

// ackedWrite is one record's acknowledging write in the ack pipeline.
type ackedWrite struct {
	id    string
	empty bool // no event left: the index entry goes
	cmd   *redis.Cmd
}

// ackAgainstRead compare-and-sets, in one pipeline, each record of read
// that acks changes, at its version as read; on one master the index entry
// of a record left without events goes in the same script. It returns the
// IDs whose record changed since the read (or whose script was not loaded).
func (s *Store) ackAgainstRead(ctx context.Context, read *grants.OutboxRead, acks map[string][]string) ([]string, error) {
	var writes []ackedWrite
	var drop, stale []string
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range read.IDs {
			events, acked := acks[id]
			inv := read.Invitations[i]
			switch {
			case !acked:
				continue
			case inv == nil:
				drop = append(drop, id)
				continue
			case !inv.AckEvents(events):
				if len(inv.Outbox) == 0 {
					drop = append(drop, id)
				}
				continue
			}
			raw, err := s.encodeInvitation(inv)
			if err != nil {
				stale = append(stale, id)
				continue
			}
			w := ackedWrite{id: id, empty: len(inv.Outbox) == 0}
			w.cmd = s.queueAckWrite(ctx, p, id, read.Versions[i], raw, inv.Status, w.empty)
			writes = append(writes, w)
		}
		return nil
	})
	if err != nil && len(writes) == 0 {
		return nil, fmt.Errorf("redisstore: ack outbox: %w", err)
	}
	lost := false
	for _, w := range writes {
		res, err := w.cmd.Slice()
		lost = lost || redis.HasErrorPrefix(err, "NOSCRIPT")
		switch {
		case err != nil || len(res) == 0 || res[0] != "ok":
			stale = append(stale, w.id) // changed meanwhile, or NOSCRIPT on this node
		case w.empty && !s.oneMaster():
			drop = append(drop, w.id)
		}
	}
	if lost && s.oneMaster() { // for the next batches; these go the slow way
		if err := ackWrite.Load(ctx, s.rdb).Err(); err != nil {
			return nil, fmt.Errorf("redisstore: ack outbox: %w", err)
		}
	}
	return stale, s.dropOutboxEntries(ctx, drop)
}

// ackWrite is invitationCAS's update followed, when drop is '1', by
// dropOutbox's removal, for one master, where both keys are on it.
// KEYS[1] {i:id}, KEYS[2] the outbox index; ARGV: expected version,
// payload, status, the invitation ID, drop.
var ackWrite = redis.NewScript(luaDropLeased + `
local cur = redis.call('GET', KEYS[1])
if not cur then return {'notfound'} end
local v = string.match(cur, '^([^|]*)|')
if v ~= ARGV[1] then return {'retry'} end
redis.call('SET', KEYS[1], string.format('%.0f', tonumber(v) + 1) .. '|' .. ARGV[3] .. '|' .. ARGV[2])
if ARGV[5] == '1' then dropLeased(KEYS[2], ARGV[4]) end
return {'ok'}
`)

// queueAckWrite queues one record's acknowledging write: with its index
// entry's drop on one master, the CAS alone on a cluster (the index lives
// in another slot; ackAgainstRead drops it after).
func (s *Store) queueAckWrite(ctx context.Context, p redis.Pipeliner, id, version string, raw []byte, status grants.Status, empty bool) *redis.Cmd {
	if !s.oneMaster() {
		return invitationCAS.EvalSha(ctx, p, []string{s.invKey(id)}, "update", version, raw, string(status), "")
	}
	drop := "0"
	if empty {
		drop = "1"
	}
	return ackWrite.EvalSha(ctx, p, []string{s.invKey(id), s.outboxKey()}, version, raw, string(status), id, drop)
}

// dropOutboxEntries runs dropOutbox for each ID in one pipeline (the script
// removes an entry only while a runner's lease is on it).
func (s *Store) dropOutboxEntries(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	cmds := make([]*redis.Cmd, len(ids))
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = dropOutbox.EvalSha(ctx, p, []string{s.outboxKey()}, id)
		}
		return nil
	})
	for i, c := range cmds {
		if c.Err() == nil {
			continue
		}
		if err := dropOutbox.Run(ctx, s.rdb, []string{s.outboxKey()}, ids[i]).Err(); err != nil {
			return fmt.Errorf("redisstore: ack outbox %s: %w", ids[i], err)
		}
	}
	return nil
}
