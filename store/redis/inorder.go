package redis

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Pipelines that carry scripts. A script in a pipeline goes as EVALSHA; a
// master that lost its scripts (a restart, a failover) answers NOSCRIPT,
// and the script then runs again with its source (EVAL, which also caches
// it). On a cluster a pipeline's commands to different masters run
// concurrently, so where order matters the commands go one by one there.

// scriptCall is one script with its keys and arguments.
type scriptCall struct {
	sc   *redis.Script
	keys []string
	args []any
}

// pipedScript is a scriptCall queued in a pipeline.
type pipedScript struct {
	scriptCall
	cmd *redis.Cmd
}

// queue adds c to p as EVALSHA.
func (c scriptCall) queue(ctx context.Context, p redis.Pipeliner) *pipedScript {
	args := make([]any, 0, 3+len(c.keys)+len(c.args))
	args = append(args, "evalsha", c.sc.Hash(), len(c.keys))
	for _, k := range c.keys {
		args = append(args, k)
	}
	q := &pipedScript{scriptCall: c, cmd: redis.NewCmd(ctx, append(args, c.args...)...)}
	_ = p.Process(ctx, q.cmd)
	return q
}

// reply is the script's reply once the pipeline ran, after running it
// again with its source if the master answered NOSCRIPT.
func (q *pipedScript) reply(ctx context.Context, rdb redis.Scripter) ([]any, error) {
	v, err := q.cmd.Result()
	if redis.HasErrorPrefix(err, "NOSCRIPT") {
		v, err = q.sc.Eval(ctx, rdb, q.keys, q.args...).Result()
	}
	if err != nil {
		return nil, err
	}
	return asSlice(v), nil
}

// asSlice is a script's reply as a list (a lone value in a list of one).
func asSlice(v any) []any {
	if arr, ok := v.([]any); ok {
		return arr
	}
	return []any{v}
}

// oneMaster: every key is on one master (standalone or Sentinel), so one
// pipeline keeps the order its commands were queued in.
func (s *Store) oneMaster() bool {
	_, cluster := s.rdb.(*redis.ClusterClient)
	return !cluster
}

// aroundScript runs the commands before, then the script, then the commands
// after, in that order, and returns the script's reply: one round trip on
// one master, where Redis runs a connection's commands in the order they
// arrive, so an index entry sent before the record that needs it is written
// first. On a cluster they go one by one, the script through run (TRYAGAIN
// and redirects while a slot migrates). After NOSCRIPT the script runs
// again after the commands that followed it, which only add index entries
// that readers re-check.
func (s *Store) aroundScript(ctx context.Context, before []redis.Cmder, script scriptCall, after []redis.Cmder) ([]any, error) {
	if !s.oneMaster() {
		if err := s.processEach(ctx, before); err != nil {
			return nil, err
		}
		res, err := s.runScript(ctx, script.sc, script.keys, script.args...)
		if err != nil {
			return nil, err
		}
		return res, s.processEach(ctx, after)
	}
	var piped *pipedScript
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, c := range before {
			_ = p.Process(ctx, c)
		}
		piped = script.queue(ctx, p)
		for _, c := range after {
			_ = p.Process(ctx, c)
		}
		return nil
	})
	if err := firstErr(before); err != nil {
		return nil, err
	}
	res, err := piped.reply(ctx, s.rdb)
	if err != nil {
		return nil, err
	}
	return res, firstErr(after)
}

// runTogether runs independent scripts, in order, in one pipeline on one
// master, one by one through run on a cluster. It returns each script's
// reply, or the first error.
func (s *Store) runTogether(ctx context.Context, calls ...scriptCall) ([][]any, error) {
	out := make([][]any, len(calls))
	if !s.oneMaster() {
		for i, c := range calls {
			res, err := s.runScript(ctx, c.sc, c.keys, c.args...)
			if err != nil {
				return nil, err
			}
			out[i] = res
		}
		return out, nil
	}
	piped := make([]*pipedScript, len(calls))
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, c := range calls {
			piped[i] = c.queue(ctx, p)
		}
		return nil
	})
	for i, q := range piped {
		res, err := q.reply(ctx, s.rdb)
		if err != nil {
			return nil, err
		}
		out[i] = res
	}
	return out, nil
}

// processConfirmed runs cmds, independent writes, and returns once each
// is answered: in one round trip on one master, one by one on a cluster.
func (s *Store) processConfirmed(ctx context.Context, cmds []redis.Cmder) error {
	switch {
	case len(cmds) == 0:
		return nil
	case len(cmds) == 1 || !s.oneMaster():
		return s.processEach(ctx, cmds)
	}
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, c := range cmds {
			_ = p.Process(ctx, c)
		}
		return nil
	})
	return firstErr(cmds)
}

func (s *Store) processEach(ctx context.Context, cmds []redis.Cmder) error {
	for _, c := range cmds {
		if err := s.rdb.Process(ctx, c); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
	}
	return nil
}

func firstErr(cmds []redis.Cmder) error {
	for _, c := range cmds {
		if err := c.Err(); err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("%s: %w", c.Name(), err)
		}
	}
	return nil
}
