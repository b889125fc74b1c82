package bolt_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/sessions"
	boltstore "github.com/usher-oidc/usher/store/bolt"
	"github.com/usher-oidc/usher/store/conformance"
)

// A returning sign-in whose profile is unchanged costs no durable commit of
// its own: its sign-in time rides with the next one (with the sign-in's new
// session, which rides too, the code exchange's refresh token), and a clean
// Close writes it if none came. A changed profile is
// written at once, durably, as before.
func TestReturningSignInRides(t *testing.T) {
	ctx := t.Context()
	clock := conformance.NewClock(time.Now())
	path := filepath.Join(t.TempDir(), "usher.db")
	s := open(t, path, clock.Now)
	boltstore.SetRideDelay(s, time.Hour) // riders go with a writer or at Close, never alone
	id := grants.Identity{Issuer: "https://tenant.example.auth0.com/", Subject: "auth0|ada", Email: "ada@example.com", EmailVerified: true}
	p := grants.Profile{Email: "ada@example.com", EmailVerified: true, Name: "Ada"}
	first, created, err := s.ResolveIdentity(ctx, id, p, "user-1", clock.Now())
	if err != nil || !created {
		t.Fatalf("first sign-in: %v created=%v", err, created)
	}
	commits := func() uint64 { _, c := s.WriteStats(); return c }

	clock.Advance(time.Hour)
	before := commits()
	u, created, err := s.ResolveIdentity(ctx, id, p, "user-2", clock.Now())
	if err != nil || created || u.ID != "user-1" || !u.LastLoginAt.Equal(clock.Now()) || !u.CreatedAt.Equal(first.CreatedAt) {
		t.Fatalf("returning sign-in: %+v created=%v %v", u, created, err)
	}
	if n := commits() - before; n != 0 {
		t.Errorf("the returning sign-in waited on %d commits, want 0", n)
	}
	if err := s.SaveBrowserSession(ctx, &sessions.BrowserSession{ID: "bs-1", Values: map[string]string{"account": "user-1"}, CreatedAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if n := commits() - before; n != 0 {
		t.Errorf("the new session's save waited on %d commits, want 0 (it rides too)", n)
	}
	// The sign-in's refresh token, durable, takes both along.
	if err := s.CreateRefreshToken(ctx, &sessions.RefreshToken{Hash: "rt-1", FamilyID: "fam-1", ClientID: "spa", Subject: "user-1",
		CreatedAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if n := commits() - before; n != 1 {
		t.Errorf("the refresh token with the session and the sign-in time: %d commits, want 1", n)
	}
	if got, err := s.GetUser(ctx, "user-1"); err != nil || !got.LastLoginAt.Equal(clock.Now()) {
		t.Fatalf("after the refresh token's commit: %+v %v, want last login %v", got, err, clock.Now())
	}

	// A new name: written before ResolveIdentity returns.
	clock.Advance(time.Hour)
	renamed, before := grants.Profile{Email: p.Email, EmailVerified: true, Name: "Ada Lovelace"}, commits()
	if _, _, err := s.ResolveIdentity(ctx, id, renamed, "user-2", clock.Now()); err != nil {
		t.Fatal(err)
	}
	if n := commits() - before; n != 1 {
		t.Errorf("a changed profile: %d commits, want 1", n)
	}
	if got, err := s.GetUser(ctx, "user-1"); err != nil || got.Name != "Ada Lovelace" || !got.LastLoginAt.Equal(clock.Now()) {
		t.Fatalf("after a changed profile: %+v %v", got, err)
	}

	// Nothing after it: Close writes the sign-in time.
	clock.Advance(time.Hour)
	if _, _, err := s.ResolveIdentity(ctx, id, renamed, "user-2", clock.Now()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, path, clock.Now)
	if got, err := s.GetUser(ctx, "user-1"); err != nil || !got.LastLoginAt.Equal(clock.Now()) {
		t.Fatalf("after Close and Open: %+v %v, want last login %v", got, err, clock.Now())
	}
}
