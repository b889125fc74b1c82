package redis_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
	redisstore "github.com/usher-oidc/usher/store/redis"
)

// beforeCAS runs fn (once) just before the script that writes the record
// of the invitation id (mode "create" or "update"): after the write's
// outbox index entry, before the record holds its events.
type beforeCAS struct {
	mode, id string
	only     string // "eval": only the script sent with its source
	once     sync.Once
	fn       func()
}

func (h *beforeCAS) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessPipelineHook splits a pipeline that carries the script in two
// round trips, the script starting the second, and runs fn in between:
// where Redis could run another connection's commands, between what the
// pipeline sends before the write (its index entries) and the write.
func (h *beforeCAS) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for i, cmd := range cmds {
			if h.matches(cmd) && i > 0 {
				err := next(ctx, cmds[:i])
				h.check(cmd)
				return errors.Join(err, next(ctx, cmds[i:]))
			}
			h.check(cmd)
		}
		return next(ctx, cmds)
	}
}

func (h *beforeCAS) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.check(cmd)
		return next(ctx, cmd)
	}
}

func (h *beforeCAS) check(cmd redis.Cmder) {
	if h.matches(cmd) {
		h.once.Do(h.fn)
	}
}

// matches: cmd is the script writing the record of h.id in h.mode.
func (h *beforeCAS) matches(cmd redis.Cmder) bool {
	args := cmd.Args()
	name := cmd.Name()
	if h.only != "" && name != h.only {
		return false
	}
	if name != "evalsha" && name != "eval" || len(args) < 4 {
		return false
	}
	numKeys, _ := args[2].(int) // the first argument follows the keys
	key, _ := args[3].(string)
	return len(args) > 3+numKeys && args[3+numKeys] == h.mode && strings.Contains(key, h.id)
}

// A runner claims an invitation's outbox entry in the instant between the
// entry and the write it is for (the entry goes first, so that a crash
// cannot leave a record with events and no entry). It reads the record as
// it was (none yet; no events yet), acknowledges nothing and so drops the
// entry. The write lands next: its events must still be due, or they are
// never handed over (no audit record, no webhook, no mail).
func TestOutboxWriteRacingARunner(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, mode, only string
		flush            bool // the master lost its scripts: the write's script goes again as EVAL
		write            func(ctx context.Context, s *redisstore.Store, inv *grants.Invitation, ev grants.OutboxEvent) error
	}{
		{"create", "create", "", false, func(ctx context.Context, s *redisstore.Store, inv *grants.Invitation, ev grants.OutboxEvent) error {
			inv.Outbox = []grants.OutboxEvent{ev}
			_, err := s.CreateInvitation(ctx, inv)
			return err
		}},
		{"create after SCRIPT FLUSH", "create", "eval", true, func(ctx context.Context, s *redisstore.Store, inv *grants.Invitation, ev grants.OutboxEvent) error {
			inv.Outbox = []grants.OutboxEvent{ev}
			_, err := s.CreateInvitation(ctx, inv)
			return err
		}},
		{"resend", "update", "", false, func(ctx context.Context, s *redisstore.Store, inv *grants.Invitation, ev grants.OutboxEvent) error {
			if _, err := s.CreateInvitation(ctx, inv); err != nil { // no events: no entry
				return err
			}
			_, err := s.ReplaceInvitationToken(ctx, inv.ID, strings.Repeat("ab", 32), inv.ExpiresAt, inv.CreatedAt, ev)
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := ctxT(t)
			now := time.Now().UTC().Truncate(time.Millisecond)
			prefix := uniquePrefix()
			addr := standalone.addr()
			if tc.flush { // its own server: no parallel test loads the script again in between
				addr = startServerT(t, 0).addr()
			}
			runner := redisstore.New(redis.NewClient(&redis.Options{Addr: addr}), redisstore.Options{Prefix: prefix})
			t.Cleanup(func() { _ = runner.Close() })
			inv := pendingInvitation("inv-race-"+tc.name, now)
			raced := false
			hook := &beforeCAS{mode: tc.mode, id: inv.ID, only: tc.only, fn: func() {
				ids, err := runner.ClaimOutbox(ctx, now, 10, 30*time.Second)
				must(t, "claim", err)
				raced = slices.Contains(ids, inv.ID)
				for _, id := range ids {
					got, err := runner.GetInvitation(ctx, id)
					if err != nil && !errors.Is(err, grants.ErrNotFound) {
						t.Fatal(err)
					}
					if got != nil && len(got.Outbox) > 0 {
						t.Errorf("the record of %s holds events before their write: %+v", id, got.Outbox)
					}
					must(t, "ack", runner.AckOutbox(ctx, id, nil)) // nothing to deliver
				}
			}}
			c := redis.NewClient(&redis.Options{Addr: addr})
			c.AddHook(hook)
			s := redisstore.New(c, redisstore.Options{Prefix: prefix})
			t.Cleanup(func() { _ = s.Close() })

			if tc.flush {
				must(t, "script flush", c.ScriptFlush(ctx).Err())
			} else { // the scripts loaded, so the write is the one-trip one
				warm := pendingInvitation("inv-warm-"+tc.name, now)
				warm.TokenHash = strings.Repeat("cd", 32)
				_, err := s.CreateInvitation(ctx, warm)
				must(t, "warm-up create", err)
			}
			ev := grants.OutboxEvent{ID: "evt_" + strings.ReplaceAll(tc.name, " ", "_"), Type: grants.EventInvitationCreated, At: now}
			if err := tc.write(ctx, s, inv, ev); err != nil {
				t.Fatal(err)
			}
			if !raced {
				t.Fatal("the runner did not claim the invitation between its index entry and its write")
			}
			ids, err := runner.ClaimOutbox(ctx, now.Add(time.Minute), 10, 30*time.Second) // past the racing claim's lease
			must(t, "claim", err)
			if !slices.Contains(ids, inv.ID) {
				t.Fatalf("the record holds an event the outbox index has lost: claimed %v", ids)
			}
		})
	}
}
