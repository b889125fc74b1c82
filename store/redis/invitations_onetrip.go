package redis

import (
	"context"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
)

// A new invitation on one master is written in the round trip of its
// indexes: after them in the same pipeline (Redis runs a connection's
// commands in order) comes createIfTokenHeld, which writes the record only
// if the token lookup the pipeline just claimed names this invitation and
// no other form of it names another; then the outbox mark again, as
// casThenMark sends it. Anything else (another holder to settle, a script
// not loaded, a cluster) takes the two-trip path: the claim settled by
// claimTokenFrom, then casThenMark.

// createIfTokenHeld is invitationCAS's create guarded by the token lookup.
// KEYS[1] {i:id}, KEYS[2..] the lookup forms' keys; ARGV: 'create' (as
// invitationCAS's mode, for whoever reads the command), payload, status,
// then per form its field (” for a string key), the value naming this
// invitation, and '1' for the form the pipeline claimed ('0': must be
// empty or ours). {'ok'}, {'conflict'} (ID taken) or {'token'} (unwritten).
var createIfTokenHeld = redis.NewScript(`
for i = 2, #KEYS do
  local a = 4 + (i - 2) * 3
  local cur
  if ARGV[a] == '' then cur = redis.call('GET', KEYS[i]) else cur = redis.call('HGET', KEYS[i], ARGV[a]) end
  if cur ~= ARGV[a + 1] and (ARGV[a + 2] == '1' or cur) then return {'token'} end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'conflict'} end
redis.call('SET', KEYS[1], '1|' .. ARGV[3] .. '|' .. ARGV[2])
return {'ok'}
`)

// guardedCreate is the createIfTokenHeld call writing raw for inv, whose
// token lookup forms are forms, mine the one claimed.
func (s *Store) guardedCreate(inv *grants.Invitation, raw []byte, forms []lookupEntry, mine int) scriptCall {
	keys := make([]string, 0, 1+len(forms))
	args := make([]any, 0, 3+3*len(forms))
	keys = append(keys, s.invKey(inv.ID))
	args = append(args, "create", raw, string(inv.Status))
	for i, e := range forms {
		claimed := "0"
		if i == mine {
			claimed = "1"
		}
		keys = append(keys, e.key)
		args = append(args, e.field, e.value(inv.ID), claimed)
	}
	return scriptCall{sc: createIfTokenHeld, keys: keys, args: args}
}

// queuedCreate is a guarded create queued after the index writes.
type queuedCreate struct {
	script *pipedScript
	record string // what the script stores, for an undo
}

// queueCreate queues the guarded create and the outbox mark after it.
func (s *Store) queueCreate(ctx context.Context, p redis.Pipeliner, inv *grants.Invitation, raw []byte, forms []lookupEntry, mine int) *queuedCreate {
	q := &queuedCreate{
		script: s.guardedCreate(inv, raw, forms, mine).queue(ctx, p),
		record: "1|" + string(inv.Status) + "|" + string(raw),
	}
	if len(inv.Outbox) > 0 {
		_ = p.Process(ctx, s.outboxDue(ctx, inv.ID))
	}
	return q
}

// createDone is what the pipeline's guarded create did.
type createDone int

const (
	createLeft    createDone = iota // not written: the two-trip path writes it
	createWritten                   // stored
	createIDTaken                   // refused: the ID is stored already
)

// createOutcome reads q's reply. A master that lost the script (NOSCRIPT)
// runs it now with its source, then marks the events due again, as
// casThenMark does. A failed call may still have written the record: it is
// taken back (only if as written) and the create fails.
func (s *Store) createOutcome(ctx context.Context, inv *grants.Invitation, q *queuedCreate) (createDone, error) {
	if q == nil {
		return createLeft, nil
	}
	rerun := redis.HasErrorPrefix(q.script.cmd.Err(), "NOSCRIPT")
	res, err := q.script.reply(ctx, s.rdb)
	if err != nil {
		s.unwrite(ctx, inv.ID, q.record)
		return createLeft, err
	}
	switch str(res, 0) {
	case "ok":
		if rerun {
			s.markOutboxAgain(ctx, inv)
		}
		return createWritten, nil
	case "conflict":
		return createIDTaken, nil
	}
	return createLeft, nil
}

// unwrite removes a record the pipeline wrote while one of its index
// writes failed, if it is still as written: the create is then refused and
// its indexes taken back, as if the record had never been sent.
func (s *Store) unwrite(ctx context.Context, id, record string) {
	ctx = context.WithoutCancel(ctx)
	if _, err := s.runScript(ctx, delIfEq, []string{s.invKey(id)}, record); err != nil {
		s.log.Warn("redisstore: removing an invitation whose indexes failed", "invitation_id", id, "err", err)
	}
}
