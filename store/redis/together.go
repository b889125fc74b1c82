package redis

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/sessions"
)

// RunTogether (sessions.Batcher) sends a sign-in step's independent
// operations in one pipeline on one master: the session's SET (and the
// replaced one's DEL), the code's scripts, the reads and a login state's
// take (its script). Their keys are in other slots, so they are not one
// transaction, as ReplaceBrowserSession and SaveCode are not. On a cluster they go one by one (sessions.RunApart).
func (s *Store) RunTogether(ctx context.Context, t sessions.Together) (sessions.Read, error) {
	if !s.oneMaster() {
		return sessions.RunApart(ctx, s, t)
	}
	if err := s.checkTogether(t); err != nil {
		return sessions.Read{}, err
	}
	var calls []scriptCall
	if t.SaveCode != nil {
		var err error
		if calls, err = s.codeCalls(t.SaveCode); err != nil {
			return sessions.Read{}, fmt.Errorf("redisstore: save code: %w", err)
		}
	}
	var session []byte
	if t.SaveSession != nil {
		var err error
		if session, err = s.encodeBrowserSession(t.SaveSession); err != nil {
			return sessions.Read{}, fmt.Errorf("redisstore: save browser session: %w", err)
		}
	}
	var writes []redis.Cmder
	var piped []*pipedScript
	var reads togetherReads
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		if t.SaveSession != nil {
			bs := t.SaveSession
			writes = append(writes, p.SetArgs(ctx, s.key("bs", bs.ID), session, redis.SetArgs{ExpireAt: time.UnixMilli(expireAtMS(bs.ExpiresAt))}))
			if t.ReplacesSession != "" {
				writes = append(writes, p.Del(ctx, s.key("bs", t.ReplacesSession)))
			}
		}
		for _, c := range calls {
			piped = append(piped, c.queue(ctx, p))
		}
		reads = s.queueTogetherReads(ctx, p, t)
		return nil
	})
	if err := firstErr(writes); err != nil {
		return sessions.Read{}, fmt.Errorf("redisstore: save browser session: %w", err)
	}
	if err := s.codeReplies(ctx, piped); err != nil {
		return sessions.Read{}, fmt.Errorf("redisstore: save code: %w", err)
	}
	return reads.result(ctx, s, t), nil
}

// togetherReads are a Together's reads (and login state take), queued.
type togetherReads struct {
	getSession, getAR *redis.StringCmd
	take              *pipedScript
}

func (s *Store) queueTogetherReads(ctx context.Context, p redis.Pipeliner, t sessions.Together) togetherReads {
	var q togetherReads
	if t.GetSession != "" {
		q.getSession = p.Get(ctx, s.key("bs", t.GetSession))
	}
	if t.GetAuthRequest != "" {
		q.getAR = p.HGet(ctx, s.key("ar", t.GetAuthRequest), "d")
	}
	if k := t.TakeLoginState; k != nil {
		q.take = s.takeLoginStateCall(k.AuthRequestID, k.Key).queue(ctx, p)
	}
	return q
}

// result is what the reads found, once the pipeline ran.
func (q togetherReads) result(ctx context.Context, s *Store, t sessions.Together) sessions.Read {
	var r sessions.Read
	if q.getSession != nil {
		raw, err := q.getSession.Bytes()
		r.Session, r.SessionErr = s.browserSessionFrom(t.GetSession, raw, err)
	}
	if q.getAR != nil {
		r.AuthRequest, r.AuthRequestErr = s.authRequestFrom(t.GetAuthRequest, q.getAR.Val(), q.getAR.Err())
	}
	if q.take != nil {
		res, err := q.take.reply(ctx, s.rdb)
		r.AuthRequest, r.LoginState, r.AuthRequestErr = s.loginStateTaken(t.TakeLoginState.AuthRequestID, res, err)
	}
	return r
}

// checkTogether refuses what the single operations refuse, and what
// Together.Check refuses.
func (s *Store) checkTogether(t sessions.Together) error {
	errs := []error{t.Check()}
	if t.SaveSession != nil {
		errs = append(errs, checkBrowserSession("redisstore: save browser session", t.SaveSession))
	}
	if t.ReplacesSession != "" {
		errs = append(errs, checkKeys("redisstore: replace browser session", t.ReplacesSession))
	}
	if t.GetSession != "" {
		errs = append(errs, checkKeys("redisstore: get browser session", t.GetSession))
	}
	if t.GetAuthRequest != "" {
		errs = append(errs, checkKeys("redisstore: get auth request", t.GetAuthRequest))
	}
	if k := t.TakeLoginState; k != nil {
		errs = append(errs, checkKeys("redisstore: take login state", k.AuthRequestID, k.Key))
	}
	return errors.Join(errs...)
}

// codeReplies is the code save's outcome from its piped scripts (run
// again with their source after NOSCRIPT).
func (s *Store) codeReplies(ctx context.Context, piped []*pipedScript) error {
	res := make([][]any, 0, len(piped))
	for _, q := range piped {
		r, err := q.reply(ctx, s.rdb)
		if err != nil {
			return err
		}
		res = append(res, r)
	}
	return codeSaved(res, nil)
}
