package redis_test

import (
	"errors"
	"testing"
	"time"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/sessions"
)

// A sign-in step's operations in RunTogether cost one round trip on one
// master, also after the master lost its scripts (the code's scripts then
// run again with their source), and do what they do one by one.
func TestRunTogetherRoundTrips(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	st, rdb, hook := countedStore(t, uniquePrefix())
	now := time.Now()
	bs := func(id string) *sessions.BrowserSession {
		return &sessions.BrowserSession{ID: id, Values: map[string]string{"uid": "usr_1"}, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	}
	ar := func(id string) *sessions.AuthRequest {
		return &sessions.AuthRequest{ID: id, ClientID: "spa", RedirectURI: "https://app.example/cb", CreatedAt: now, ExpiresAt: now.Add(10 * time.Minute)}
	}
	for _, id := range []string{"ar-1", "ar-2", "ar-3"} {
		if err := st.CreateAuthRequest(ctx, ar(id)); err != nil { // scripts loaded
			t.Fatal(err)
		}
	}
	if err := st.SaveBrowserSession(ctx, bs("bs-old")); err != nil {
		t.Fatal(err)
	}
	// Not counted: a pipeline's connection dialled (HELLO, CLIENT SETINFO).
	if _, err := st.RunTogether(ctx, sessions.Together{GetSession: "bs-old", GetAuthRequest: "ar-1"}); err != nil {
		t.Fatal(err)
	}
	completed := func(id string) *sessions.Code {
		done := ar(id)
		done.Done, done.Subject = true, "usr_1"
		return &sessions.Code{Hash: "code-" + id, AuthRequestID: id, ExpiresAt: now.Add(time.Minute), AuthRequest: done}
	}
	steps := []struct {
		name  string
		flush bool
		t     sessions.Together
	}{
		{name: "session save and auth request read", t: sessions.Together{SaveSession: bs("bs-1"), GetAuthRequest: "ar-1"}},
		{name: "session and auth request reads", t: sessions.Together{GetSession: "bs-1", GetAuthRequest: "ar-1"}},
		{name: "session replaced with a code", t: sessions.Together{SaveSession: bs("bs-2"), ReplacesSession: "bs-old", SaveCode: completed("ar-2")}},
		{name: "after SCRIPT FLUSH", flush: true, t: sessions.Together{SaveSession: bs("bs-3"), SaveCode: completed("ar-3")}},
	}
	for _, step := range steps {
		if step.flush {
			if err := rdb.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		}
		before := hook.n.Load()
		read, err := st.RunTogether(ctx, step.t)
		if err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if n := hook.n.Load() - before; !step.flush && n != 1 {
			t.Errorf("%s: %d round trips, want 1", step.name, n)
		}
		if id := step.t.GetAuthRequest; id != "" && (read.AuthRequestErr != nil || read.AuthRequest.ID != id) {
			t.Errorf("%s: auth request %+v %v", step.name, read.AuthRequest, read.AuthRequestErr)
		}
		if id := step.t.GetSession; id != "" && (read.SessionErr != nil || read.Session.Values["uid"] != "usr_1") {
			t.Errorf("%s: session %+v %v", step.name, read.Session, read.SessionErr)
		}
	}
	if _, err := st.GetBrowserSession(ctx, "bs-old"); !errors.Is(err, sessions.ErrNotFound) {
		t.Errorf("the replaced session: %v, want ErrNotFound", err)
	}
	for _, id := range []string{"ar-2", "ar-3"} {
		c, err := st.ConsumeCode(ctx, "code-"+id)
		if err != nil || c.AuthRequest == nil || !c.AuthRequest.Done {
			t.Errorf("the code saved together for %s: %+v %v", id, c, err)
		}
	}
}

// ResolveSignIn resolves in the two round trips of ResolveIdentity and
// learns in them whether the user has invitations awaiting verification:
// none for a new user, some once one awaits it.
func TestResolveSignInProbesAwaiting(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	st, _, hook := countedStore(t, uniquePrefix())
	now := time.Now().UTC()
	id := grants.Identity{Issuer: "https://idp.example/", Subject: "auth0|probe"}
	profile := grants.Profile{Email: "probe@example.com", EmailVerified: true}
	u, created, mayAwait, err := st.ResolveSignIn(ctx, id, profile, "usr_probe", now)
	if err != nil || !created || mayAwait {
		t.Fatalf("first sign-in: %+v created=%v mayAwait=%v %v", u, created, mayAwait, err)
	}
	if _, err := st.CreateInvitation(ctx, pendingInvitation("inv-probe", now)); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name     string
		awaiting bool
	}{{name: "nothing awaiting", awaiting: false}, {name: "an invitation awaiting", awaiting: true}}
	for _, step := range steps {
		if step.awaiting {
			_, err := st.UpdateInvitation(ctx, "inv-probe", func(inv *grants.Invitation) error {
				inv.AwaitingVerification = &grants.AwaitingVerification{UserID: "usr_probe", Identity: "iss|sub", Email: inv.Email, Since: now}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		before := hook.n.Load()
		u, created, mayAwait, err := st.ResolveSignIn(ctx, id, profile, "usr_other", now)
		if err != nil || created || u.ID != "usr_probe" || mayAwait != step.awaiting {
			t.Errorf("%s: %+v created=%v mayAwait=%v %v", step.name, u, created, mayAwait, err)
		}
		if n := hook.n.Load() - before; n != 2 {
			t.Errorf("%s: %d round trips, want 2", step.name, n)
		}
	}
}
