package redis

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
)

var _ grants.OutboxBatcher = (*Store)(nil)

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

// AckOutboxBatch acknowledges a claim's events in three pipelines (read,
// compare-and-set each record, drop the emptied index entries) instead of
// three round trips per invitation. A record that changed between the read
// and its CAS, or a script not yet loaded on a node, takes AckOutbox's
// one-by-one path.
func (s *Store) AckOutboxBatch(ctx context.Context, acks map[string][]string) error {
	ids := make([]string, 0, len(acks))
	for id := range acks {
		if _, isUser := grants.OutboxUser(id); isUser {
			if err := s.AckOutbox(ctx, id, acks[id]); err != nil {
				return err
			}
			continue
		}
		ids = append(ids, id)
	}
	if err := checkKeys("redisstore: ack outbox", ids...); err != nil {
		return err
	}
	invs, versions, err := s.loadInvitationVersions(ctx, ids)
	if err != nil {
		return fmt.Errorf("redisstore: ack outbox: %w", err)
	}
	type pending struct {
		id    string
		empty bool
		cmd   *redis.Cmd
	}
	var cas []pending
	var drop []string
	var slow []string
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			inv := invs[i]
			switch {
			case inv == nil:
				drop = append(drop, id)
				continue
			case !inv.AckEvents(acks[id]):
				if len(inv.Outbox) == 0 {
					drop = append(drop, id)
				}
				continue
			}
			raw, err := s.encodeInvitation(inv)
			if err != nil {
				slow = append(slow, id)
				continue
			}
			cmd := invitationCAS.EvalSha(ctx, p, []string{s.invKey(id)}, "update", versions[i], raw, string(inv.Status), "")
			cas = append(cas, pending{id: id, empty: len(inv.Outbox) == 0, cmd: cmd})
		}
		return nil
	})
	if err != nil && len(cas) == 0 {
		return fmt.Errorf("redisstore: ack outbox: %w", err)
	}
	for _, c := range cas {
		res, err := c.cmd.Slice()
		switch {
		case err != nil || len(res) == 0 || res[0] != "ok":
			slow = append(slow, c.id) // changed meanwhile, or NOSCRIPT on this node
		case c.empty:
			drop = append(drop, c.id)
		}
	}
	for _, id := range slow {
		if err := s.AckOutbox(ctx, id, acks[id]); err != nil {
			return err
		}
	}
	return s.dropOutboxEntries(ctx, drop)
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
