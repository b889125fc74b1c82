package redis

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// aroundScript runs the commands before, then the script sc, then the
// commands after, in that order, and returns the script's reply. On one
// master (standalone or Sentinel) that is one pipeline, one round trip:
// Redis runs a connection's commands in the order they arrive, so an index
// entry sent before the record that needs it is written first. On a
// cluster they go one by one, since a pipeline's commands to different
// masters run concurrently, and the script through run (TRYAGAIN and
// redirects while a slot migrates). A master that lost its scripts
// (restart, failover) answers NOSCRIPT: the script then runs again with its
// source (EVAL, which also caches it), after the commands that followed it,
// which only add index entries that readers re-check.
func (s *Store) aroundScript(ctx context.Context, before []redis.Cmder, sc *redis.Script, keys []string, args []any, after []redis.Cmder) ([]any, error) {
	if _, cluster := s.rdb.(*redis.ClusterClient); cluster {
		if err := s.processEach(ctx, before); err != nil {
			return nil, err
		}
		res, err := s.runScript(ctx, sc, keys, args...)
		if err != nil {
			return nil, err
		}
		return res, s.processEach(ctx, after)
	}
	script := evalSha(ctx, sc, keys, args...)
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, c := range before {
			_ = p.Process(ctx, c)
		}
		_ = p.Process(ctx, script)
		for _, c := range after {
			_ = p.Process(ctx, c)
		}
		return nil
	})
	if err := firstErr(before); err != nil {
		return nil, err
	}
	res, err := script.Slice()
	if redis.HasErrorPrefix(err, "NOSCRIPT") {
		res, err = sc.Eval(ctx, s.rdb, keys, args...).Slice()
	}
	if err != nil {
		return nil, err
	}
	return res, firstErr(after)
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

// evalSha is sc's EVALSHA as a command to queue.
func evalSha(ctx context.Context, sc *redis.Script, keys []string, args ...any) *redis.Cmd {
	cmdArgs := make([]any, 0, 3+len(keys)+len(args))
	cmdArgs = append(cmdArgs, "evalsha", sc.Hash(), len(keys))
	for _, k := range keys {
		cmdArgs = append(cmdArgs, k)
	}
	return redis.NewCmd(ctx, append(cmdArgs, args...)...)
}

// scriptCall is one script with its keys and arguments.
type scriptCall struct {
	sc   *redis.Script
	keys []string
	args []any
}

// runTogether runs independent scripts, in order, in one pipeline on one
// master (each sent again with its source after NOSCRIPT), one by one
// through run on a cluster. It returns each script's reply, or the first
// error.
func (s *Store) runTogether(ctx context.Context, calls ...scriptCall) ([][]any, error) {
	out := make([][]any, len(calls))
	if _, cluster := s.rdb.(*redis.ClusterClient); cluster {
		for i, c := range calls {
			res, err := s.runScript(ctx, c.sc, c.keys, c.args...)
			if err != nil {
				return nil, err
			}
			out[i] = res
		}
		return out, nil
	}
	cmds := make([]*redis.Cmd, len(calls))
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, c := range calls {
			cmds[i] = evalSha(ctx, c.sc, c.keys, c.args...)
			_ = p.Process(ctx, cmds[i])
		}
		return nil
	})
	for i, c := range calls {
		v, err := cmds[i].Result()
		if redis.HasErrorPrefix(err, "NOSCRIPT") {
			v, err = c.sc.Eval(ctx, s.rdb, c.keys, c.args...).Result()
		}
		if err != nil {
			return nil, err
		}
		if arr, ok := v.([]any); ok {
			out[i] = arr
		} else {
			out[i] = []any{v}
		}
	}
	return out, nil
}
