package conformance

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/usher-oidc/usher/sessions"
	"github.com/usher-oidc/usher/store/errs"
)

// testTogether: sessions.RunTogether does what its operations do one by
// one (in one round trip where the store is a Batcher): the writes (an
// auth request's creation among them, refused over a live one) are
// stored, the reads answer as GetBrowserSession and GetAuthRequest, a
// refused code save is the error, and an absent record is ErrNotFound in
// Read, not an error of the whole.
func testTogether(t *testing.T, ctx context.Context, s sessions.Store, clock *Clock) {
	now := clock.Now()
	session := func(id, v string) *sessions.BrowserSession {
		return &sessions.BrowserSession{ID: id, Values: map[string]string{"k": v}, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	}
	must(t, "old session", s.SaveBrowserSession(ctx, session("tg-old", "old")))
	must(t, "other session", s.SaveBrowserSession(ctx, session("tg-other", "other")))
	for _, id := range []string{"tg-ar", "tg-ar-2", "tg-del"} {
		must(t, "auth request", s.CreateAuthRequest(ctx, authRequest(id, now)))
	}
	completed := authRequest("tg-ar-2", now)
	completed.Done, completed.Subject = true, "usr_tg"
	code := func(hash string, ar *sessions.AuthRequest) *sessions.Code {
		c := &sessions.Code{Hash: hash, AuthRequestID: "tg-ar-2", ExpiresAt: now.Add(time.Minute), AuthRequest: ar}
		return c
	}
	steps := []struct {
		name                string
		t                   sessions.Together
		wantErr             error
		wantSession, wantAR string // IDs expected in Read ("" for none)
		sessionErr, arErr   error
	}{
		{name: "save and read the auth request", t: sessions.Together{SaveSession: session("tg-new", "new"), GetAuthRequest: "tg-ar"}, wantAR: "tg-ar"},
		{name: "read both", t: sessions.Together{GetSession: "tg-other", GetAuthRequest: "tg-ar"}, wantSession: "tg-other", wantAR: "tg-ar"},
		{name: "read absent ones", t: sessions.Together{GetSession: "tg-none", GetAuthRequest: "tg-none"}, sessionErr: sessions.ErrNotFound, arErr: sessions.ErrNotFound},
		{name: "replace and save a code", t: sessions.Together{SaveSession: session("tg-signed", "in"), ReplacesSession: "tg-old", SaveCode: code("tg-code", completed)}},
		{name: "a code taken already", t: sessions.Together{SaveCode: code("tg-code", nil)}, wantErr: sessions.ErrConflict},
		{name: "create an auth request and read a session", t: sessions.Together{CreateAuthRequest: authRequest("tg-created", now), GetSession: "tg-other"},
			wantSession: "tg-other"},
		{name: "create an auth request that exists", t: sessions.Together{CreateAuthRequest: authRequest("tg-ar", now), GetSession: "tg-other"},
			wantErr: sessions.ErrConflict},
		{name: "save a session and delete an auth request", t: sessions.Together{SaveSession: session("tg-sealed", "in"), DeleteAuthRequest: "tg-del"}},
		{name: "delete an auth request gone", t: sessions.Together{DeleteAuthRequest: "tg-del", GetAuthRequest: "tg-del"}, arErr: sessions.ErrNotFound},
		{name: "a code for an auth request gone", t: sessions.Together{SaveCode: &sessions.Code{Hash: "tg-code-2", AuthRequestID: "tg-gone",
			ExpiresAt: now.Add(time.Minute), AuthRequest: func() *sessions.AuthRequest { ar := authRequest("tg-gone", now); ar.Done = true; return ar }()}}, wantErr: sessions.ErrNotFound},
	}
	for _, st := range steps {
		r, err := sessions.RunTogether(ctx, s, st.t)
		wantErr(t, st.name, err, st.wantErr)
		if st.wantErr != nil {
			continue
		}
		wantErr(t, st.name+": session read", r.SessionErr, st.sessionErr)
		wantErr(t, st.name+": auth request read", r.AuthRequestErr, st.arErr)
		if (r.Session != nil || st.wantSession != "") && (r.Session == nil || r.Session.ID != st.wantSession) {
			t.Errorf("%s: session %+v, want %q", st.name, r.Session, st.wantSession)
		}
		if (r.AuthRequest != nil || st.wantAR != "") && (r.AuthRequest == nil || r.AuthRequest.ID != st.wantAR) {
			t.Errorf("%s: auth request %+v, want %q", st.name, r.AuthRequest, st.wantAR)
		}
	}
	for id, want := range map[string]string{"tg-new": "new", "tg-signed": "in", "tg-sealed": "in"} {
		got, err := s.GetBrowserSession(ctx, id)
		must(t, "the saved session "+id, err)
		if got.Values["k"] != want {
			t.Errorf("session %s holds %v, want k=%s", id, got.Values, want)
		}
	}
	_, err := s.GetBrowserSession(ctx, "tg-old")
	wantErr(t, "the replaced session", err, sessions.ErrNotFound)
	created, err := s.GetAuthRequest(ctx, "tg-created")
	must(t, "the auth request created together", err)
	same(t, "the auth request created together", authRequest("tg-created", now), created)
	got, err := s.ConsumeCode(ctx, "tg-code")
	must(t, "consume the code saved together", err)
	same(t, "its auth request", completed, got.AuthRequest)
	stored, err := s.GetAuthRequest(ctx, "tg-ar-2")
	must(t, "the auth request it completed", err)
	if !stored.Done || stored.Subject != "usr_tg" {
		t.Errorf("the auth request the code completed: %+v", stored)
	}
}

// testTogetherLoginState: a Together's take of a login state answers as
// TakeLoginState (in Read.AuthRequest, AuthRequestErr and LoginState), with
// or without the session's read and save beside it; with the auth
// request's read as well it is refused.
func testTogetherLoginState(t *testing.T, ctx context.Context, s sessions.Store, clock *Clock) {
	take := func(key string) *sessions.LoginStateKey {
		return &sessions.LoginStateKey{AuthRequestID: "tl-ar", Key: key}
	}
	_, err := sessions.RunTogether(ctx, s, sessions.Together{GetAuthRequest: "tl-ar", TakeLoginState: take("k1")})
	wantErr(t, "a take with the auth request's read", err, errs.ErrInvalid)
	if !loginStatesKept(t, ctx, s, clock) {
		t.Skip("the store keeps no login states (errors.ErrUnsupported)")
	}
	now := clock.Now()
	ar := authRequest("tl-ar", now)
	must(t, "auth request", s.CreateAuthRequest(ctx, ar))
	for i, k := range []string{"k1", "k2", "k3"} {
		must(t, "save "+k, s.SaveLoginState(ctx, ar.ID, k, loginState(i+1)))
	}
	bs := &sessions.BrowserSession{ID: "tl-bs", Values: map[string]string{"k": "v"}, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	must(t, "session", s.SaveBrowserSession(ctx, bs))
	saved := &sessions.BrowserSession{ID: "tl-bs-2", Values: map[string]string{"k": "w"}, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	steps := []struct {
		name        string
		t           sessions.Together
		wantSession string // "" for none
		wantAR      bool
		want        *sessions.LoginState
		arErr       error
	}{
		{name: "with the session's read", t: sessions.Together{GetSession: "tl-bs", TakeLoginState: take("k1")},
			wantSession: "tl-bs", wantAR: true, want: loginState(1)},
		{name: "alone", t: sessions.Together{TakeLoginState: take("k2")}, wantAR: true, want: loginState(2)},
		{name: "with a session's save", t: sessions.Together{SaveSession: saved, TakeLoginState: take("k3")}, wantAR: true, want: loginState(3)},
		{name: "taken already", t: sessions.Together{GetSession: "tl-bs", TakeLoginState: take("k1")},
			wantSession: "tl-bs", wantAR: true, arErr: sessions.ErrNotFound},
		{name: "of a request gone", t: sessions.Together{GetSession: "tl-bs", TakeLoginState: &sessions.LoginStateKey{AuthRequestID: "tl-gone", Key: "k1"}},
			wantSession: "tl-bs", arErr: sessions.ErrNotFound},
	}
	for _, st := range steps {
		r, err := sessions.RunTogether(ctx, s, st.t)
		must(t, st.name, err)
		wantErr(t, st.name+": session read", r.SessionErr, nil)
		wantErr(t, st.name+": take", r.AuthRequestErr, st.arErr)
		if (r.Session != nil || st.wantSession != "") && (r.Session == nil || r.Session.ID != st.wantSession) {
			t.Errorf("%s: session %+v, want %q", st.name, r.Session, st.wantSession)
		}
		if st.wantAR {
			same(t, st.name+": auth request", ar, r.AuthRequest)
		} else if r.AuthRequest != nil {
			t.Errorf("%s: auth request %+v, want none", st.name, r.AuthRequest)
		}
		same(t, st.name+": login state", st.want, r.LoginState)
	}
	got, err := s.GetBrowserSession(ctx, saved.ID)
	must(t, "the session saved with a take", err)
	same(t, "the session saved with a take", saved.Values, got.Values)
	testEndTakenRequest(t, ctx, s, now)
}

// testEndTakenRequest: a take that ends its request deletes it once its
// state is found, and leaves it when the state is not (another browser's).
func testEndTakenRequest(t *testing.T, ctx context.Context, s sessions.Store, now time.Time) {
	_, err := sessions.RunTogether(ctx, s, sessions.Together{EndTakenRequest: true})
	wantErr(t, "an end with no take", err, errs.ErrInvalid)
	ar := authRequest("tl-end", now)
	must(t, "auth request to end", s.CreateAuthRequest(ctx, ar))
	must(t, "its state", s.SaveLoginState(ctx, ar.ID, "e1", loginState(7)))
	end := func(key string) sessions.Together {
		return sessions.Together{TakeLoginState: &sessions.LoginStateKey{AuthRequestID: ar.ID, Key: key}, EndTakenRequest: true}
	}
	r, err := sessions.RunTogether(ctx, s, end("not-its"))
	must(t, "end with another state", err)
	wantErr(t, "end with another state", r.AuthRequestErr, sessions.ErrNotFound)
	_, err = s.GetAuthRequest(ctx, ar.ID)
	must(t, "the request another state did not end", err)
	r, err = sessions.RunTogether(ctx, s, end("e1"))
	must(t, "end with its state", err)
	wantErr(t, "end with its state", r.AuthRequestErr, nil)
	same(t, "the ended request's state", loginState(7), r.LoginState)
	same(t, "the ended request", ar, r.AuthRequest)
	_, err = s.GetAuthRequest(ctx, ar.ID)
	wantErr(t, "the request its state ended", err, sessions.ErrNotFound)
}

// testTogetherCreateWithLoginState: a Together creates an auth request and
// keeps a login state with it in one go (a sign-in's /authorize): the take
// finds both. A creation refused over a live request leaves no state in
// that request, a state for a request gone is ErrNotFound, and a store
// that keeps no login states refuses the whole, writing nothing.
func testTogetherCreateWithLoginState(t *testing.T, ctx context.Context, s sessions.Store, clock *Clock) {
	now := clock.Now()
	save := func(arID, key string, i int) *sessions.LoginStateSave {
		return &sessions.LoginStateSave{LoginStateKey: sessions.LoginStateKey{AuthRequestID: arID, Key: key}, State: loginState(i)}
	}
	if !loginStatesKept(t, ctx, s, clock) {
		_, err := sessions.RunTogether(ctx, s, sessions.Together{CreateAuthRequest: authRequest("tc-ar", now), SaveLoginState: save("tc-ar", "k1", 1)})
		wantErr(t, "create with a login state the store keeps none of", err, errors.ErrUnsupported)
		_, err = s.GetAuthRequest(ctx, "tc-ar")
		wantErr(t, "the auth request of a refused Together", err, sessions.ErrNotFound)
		return
	}
	_, err := sessions.RunTogether(ctx, s, sessions.Together{CreateAuthRequest: authRequest("tc-ar", now), SaveLoginState: save("tc-ar", "k1", 1)})
	must(t, "create with a login state", err)
	_, err = sessions.RunTogether(ctx, s, sessions.Together{CreateAuthRequest: authRequest("tc-ar", now), SaveLoginState: save("tc-ar", "k2", 2)})
	wantErr(t, "create over a live request with a login state", err, sessions.ErrConflict)
	_, err = sessions.RunTogether(ctx, s, sessions.Together{CreateAuthRequest: authRequest("tc-ar-2", now), SaveLoginState: save("tc-gone", "k3", 3)})
	wantErr(t, "a login state for a request gone", err, sessions.ErrNotFound)
	ar, ls, err := s.TakeLoginState(ctx, "tc-ar", "k1")
	must(t, "take the state created with its request", err)
	same(t, "the request created with a login state", authRequest("tc-ar", now), ar)
	same(t, "the login state created with its request", loginState(1), ls)
	_, _, err = s.TakeLoginState(ctx, "tc-ar", "k2")
	wantErr(t, "the state a refused creation came with", err, sessions.ErrNotFound)
}
