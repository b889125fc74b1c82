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
// operations in one pipeline on one master: an auth request's creation
// (its script), the session's SET (and the replaced one's DEL), the code's
// scripts, the reads and a login state's take (its script). Their keys are
// in other slots, so they are not one transaction, as ReplaceBrowserSession
// and SaveCode are not. On a cluster they go one by one
// (sessions.RunApart).
func (s *Store) RunTogether(ctx context.Context, t sessions.Together) (sessions.Read, error) {
	if t.SaveLoginState != nil { // refused before anything is written
		if err := s.keepsLoginStates("redisstore: save login state"); err != nil {
			return sessions.Read{}, err
		}
	}
	if !s.oneMaster() {
		return sessions.RunApart(ctx, s, t)
	}
	if err := s.checkTogether(t); err != nil {
		return sessions.Read{}, err
	}
	w, err := s.prepareWrites(t)
	if err != nil {
		return sessions.Read{}, err
	}
	var reads togetherReads
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		w.queue(ctx, p, s, t)
		reads = s.queueTogetherReads(ctx, p, t)
		return nil
	})
	if err := w.outcome(ctx, s, t); err != nil {
		return sessions.Read{}, err
	}
	return reads.result(ctx, s, t), nil
}

// togetherWrites are a Together's writes, encoded, then queued.
type togetherWrites struct {
	create  *scriptCall    // the auth request's creation
	state   *scriptCall    // the login state's save, after it
	stated  *pipedScript   // queued login state save
	calls   []scriptCall   // the code's save
	session []byte         // the session's payload
	created *pipedScript   // queued create
	piped   []*pipedScript // queued code save
	writes  []redis.Cmder  // queued session SET and DEL
}

func (s *Store) prepareWrites(t sessions.Together) (togetherWrites, error) {
	var w togetherWrites
	if ar := t.CreateAuthRequest; ar != nil {
		call, err := s.authRequestCall("create", ar)
		if err != nil {
			return w, fmt.Errorf("redisstore: create auth request %s: %w", ar.ID, err)
		}
		w.create = &call
	}
	if ls := t.SaveLoginState; ls != nil {
		call, err := s.saveLoginStateCall(ls.AuthRequestID, ls.Key, ls.State)
		if err != nil {
			return w, fmt.Errorf("redisstore: save login state: %w", err)
		}
		w.state = &call
	}
	var err error
	if t.SaveCode != nil {
		if w.calls, err = s.codeCalls(t.SaveCode); err != nil {
			return w, fmt.Errorf("redisstore: save code: %w", err)
		}
	}
	if t.SaveSession != nil {
		if w.session, err = s.encodeBrowserSession(t.SaveSession); err != nil {
			return w, fmt.Errorf("redisstore: save browser session: %w", err)
		}
	}
	return w, nil
}

func (w *togetherWrites) queue(ctx context.Context, p redis.Pipeliner, s *Store, t sessions.Together) {
	if w.create != nil {
		w.created = w.create.queue(ctx, p)
	}
	if w.state != nil { // same key: Redis runs it after the creation
		w.stated = w.state.queue(ctx, p)
	}
	if bs := t.SaveSession; bs != nil {
		w.writes = append(w.writes, p.SetArgs(ctx, s.key("bs", bs.ID), w.session, redis.SetArgs{ExpireAt: time.UnixMilli(expireAtMS(bs.ExpiresAt))}))
		if t.ReplacesSession != "" {
			w.writes = append(w.writes, p.Del(ctx, s.key("bs", t.ReplacesSession)))
		}
	}
	if id := t.DeleteAuthRequest; id != "" {
		w.writes = append(w.writes, p.Del(ctx, s.key("ar", id)))
	}
	for _, c := range w.calls {
		w.piped = append(w.piped, c.queue(ctx, p))
	}
}

// outcome is the first write's failure, once the pipeline ran.
func (w *togetherWrites) outcome(ctx context.Context, s *Store, t sessions.Together) error {
	if w.created != nil {
		res, err := w.created.reply(ctx, s.rdb)
		if err == nil {
			err = outcome(str(res, 0), map[string]error{"conflict": sessions.ErrConflict})
		}
		if err != nil {
			if ls := t.SaveLoginState; w.stated != nil && ls.AuthRequestID == t.CreateAuthRequest.ID {
				// The state went into the live request the creation ran into:
				// not this sign-in's, so it goes (best effort; it expires with it).
				s.rdb.HDel(ctx, s.key("ar", ls.AuthRequestID), loginStateField+ls.Key)
			}
			return fmt.Errorf("redisstore: create auth request %s: %w", t.CreateAuthRequest.ID, err)
		}
	}
	if w.stated != nil {
		res, err := w.stated.reply(ctx, s.rdb)
		if err == nil {
			err = outcome(str(res, 0), map[string]error{"notfound": sessions.ErrNotFound})
		}
		if err != nil {
			return fmt.Errorf("redisstore: save login state for auth request %s: %w", t.SaveLoginState.AuthRequestID, err)
		}
	}
	if err := firstErr(w.writes); err != nil {
		return fmt.Errorf("redisstore: save browser session or delete auth request: %w", err)
	}
	if err := s.codeReplies(ctx, w.piped); err != nil {
		return fmt.Errorf("redisstore: save code: %w", err)
	}
	return nil
}

// togetherReads are a Together's reads (and login state take), queued.
type togetherReads struct {
	getSession, getAR *redis.StringCmd
	take              *pipedScript
	userGrant         *userGrantRead
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
		q.take = s.takeLoginStateCall(k.AuthRequestID, k.Key, t.EndTakenRequest).queue(ctx, p)
	}
	if t.GetUserAndGrant != "" {
		q.userGrant = s.queueUserAndGrant(ctx, p, t.GetUserAndGrant)
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
	if q.userGrant != nil {
		ug := q.userGrant.answer(ctx, s)
		r.UserGrant = &ug
	}
	return r
}

// checkTogether refuses what the single operations refuse, and what
// Together.Check refuses.
func (s *Store) checkTogether(t sessions.Together) error {
	errs := []error{t.Check()}
	if ar := t.CreateAuthRequest; ar != nil {
		errs = append(errs, checkKeys("redisstore: create auth request", ar.ID))
	}
	if ls := t.SaveLoginState; ls != nil {
		errs = append(errs, checkKeys("redisstore: save login state", ls.AuthRequestID, ls.Key))
		if ls.State == nil {
			errs = append(errs, fmt.Errorf("redisstore: save login state: nil: %w", ErrInvalid))
		}
	}
	if t.SaveSession != nil {
		errs = append(errs, checkBrowserSession("redisstore: save browser session", t.SaveSession))
	}
	if t.ReplacesSession != "" {
		errs = append(errs, checkKeys("redisstore: replace browser session", t.ReplacesSession))
	}
	if t.DeleteAuthRequest != "" {
		errs = append(errs, checkKeys("redisstore: delete auth request", t.DeleteAuthRequest))
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
	if t.GetUserAndGrant != "" {
		errs = append(errs, checkKeys("redisstore: get user and grant", t.GetUserAndGrant))
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
