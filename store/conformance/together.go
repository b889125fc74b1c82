package conformance

import (
	"context"
	"testing"
	"time"

	"github.com/usher-oidc/usher/sessions"
)

// testTogether: sessions.RunTogether does what its operations do one by
// one (in one round trip where the store is a Batcher): the writes are
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
	for _, id := range []string{"tg-ar", "tg-ar-2"} {
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
	for id, want := range map[string]string{"tg-new": "new", "tg-signed": "in"} {
		got, err := s.GetBrowserSession(ctx, id)
		must(t, "the saved session "+id, err)
		if got.Values["k"] != want {
			t.Errorf("session %s holds %v, want k=%s", id, got.Values, want)
		}
	}
	_, err := s.GetBrowserSession(ctx, "tg-old")
	wantErr(t, "the replaced session", err, sessions.ErrNotFound)
	got, err := s.ConsumeCode(ctx, "tg-code")
	must(t, "consume the code saved together", err)
	same(t, "its auth request", completed, got.AuthRequest)
	stored, err := s.GetAuthRequest(ctx, "tg-ar-2")
	must(t, "the auth request it completed", err)
	if !stored.Done || stored.Subject != "usr_tg" {
		t.Errorf("the auth request the code completed: %+v", stored)
	}
}
