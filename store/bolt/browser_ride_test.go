package bolt_test

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/usher-oidc/usher/internal/testkit"
	"github.com/usher-oidc/usher/sessions"
	"github.com/usher-oidc/usher/store"
	boltstore "github.com/usher-oidc/usher/store/bolt"
	"github.com/usher-oidc/usher/store/conformance"
)

// A new signed-in browser session rides with the main file's next commit
// (browser_ride.go) and reads back at once. What may not ride stays
// durable, and a later write to a riding session wins over its ride: a
// sign-out does not come back when the ride's commit runs, an update is
// not overwritten by the older values.
func TestNewSessionRides(t *testing.T) {
	ctx := t.Context()
	clock := conformance.NewClock(time.Now())
	s := open(t, filepath.Join(t.TempDir(), "usher.db"), clock.Now)
	boltstore.SetRideDelay(s, time.Hour) // riders go with a writer or at Close, never alone
	session := func(id, account string) *sessions.BrowserSession {
		return &sessions.BrowserSession{ID: id, Values: map[string]string{"account": account},
			CreatedAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour)}
	}
	commits := func() uint64 { _, c := s.WriteStats(); return c }
	// inMain is the account the main file holds for id ("" for none).
	inMain := func(id string) string {
		t.Helper()
		account := ""
		err := s.Export(ctx, store.BrowserSessions, func(raw json.RawMessage) error {
			var bs sessions.BrowserSession
			if err := json.Unmarshal(raw, &bs); err != nil {
				return err
			}
			if bs.ID == id {
				account = bs.Values["account"]
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return account
	}
	reads := func(id, want string) {
		t.Helper()
		got, err := s.GetBrowserSession(ctx, id)
		switch {
		case want == "" && !errors.Is(err, sessions.ErrNotFound):
			t.Errorf("%s: %+v %v, want ErrNotFound", id, got, err)
		case want != "" && (err != nil || got.Values["account"] != want):
			t.Errorf("%s: %+v %v, want account %s", id, got, err, want)
		}
	}
	durableWrite := func(hash string) {
		t.Helper()
		before := commits()
		if err := s.CreateRefreshToken(ctx, &sessions.RefreshToken{Hash: hash, FamilyID: "fam-" + hash, ClientID: "spa",
			Subject: "u", CreatedAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if n := commits() - before; n != 1 {
			t.Fatalf("a refresh token: %d commits, want 1", n)
		}
	}
	step := func(what string, wantCommits uint64, f func() error) {
		t.Helper()
		before := commits()
		if err := f(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if n := commits() - before; n != wantCommits {
			t.Errorf("%s: %d commits, want %d", what, n, wantCommits)
		}
	}

	step("a new session", 0, func() error { return s.SaveBrowserSession(ctx, session("new", "u1")) })
	reads("new", "u1")
	if got := inMain("new"); got != "" {
		t.Errorf("the new session in the main file before any commit: %q", got)
	}
	durableWrite("rt-1")
	if got := inMain("new"); got != "u1" {
		t.Errorf("the new session after the next commit: %q in the main file, want u1", got)
	}
	reads("new", "u1")

	step("an update of a stored session", 1, func() error { return s.SaveBrowserSession(ctx, session("new", "u1b")) })
	reads("new", "u1b")
	step("a replacement of a stored session", 1, func() error { return s.ReplaceBrowserSession(ctx, session("switched", "u2"), "new") })
	reads("new", "")
	reads("switched", "u2")

	// Signed out while riding: gone now, and after the ride's commit.
	step("a session that signs out at once", 0, func() error { return s.SaveBrowserSession(ctx, session("brief", "u3")) })
	if err := s.DeleteBrowserSession(ctx, "brief"); err != nil {
		t.Fatal(err)
	}
	reads("brief", "")
	durableWrite("rt-2")
	reads("brief", "")
	if got := inMain("brief"); got != "" {
		t.Errorf("a signed-out session came back with its ride's commit: %q", got)
	}

	// Updated while riding: the newest values are read, and they are what
	// reaches the main file.
	step("another new session", 0, func() error { return s.SaveBrowserSession(ctx, session("edited", "u4")) })
	if err := s.SaveBrowserSession(ctx, session("edited", "u4b")); err != nil {
		t.Fatal(err)
	}
	reads("edited", "u4b")
	durableWrite("rt-3")
	if got := inMain("edited"); got != "u4b" {
		t.Errorf("a session updated while riding: %q in the main file, want u4b", got)
	}

	// Expired while riding: not read.
	step("a session about to expire", 0, func() error { return s.SaveBrowserSession(ctx, session("short", "u5")) })
	clock.Advance(2 * time.Hour)
	reads("short", "")
}

// A sign-out that comes while the commit carrying its session's ride is
// under way (the session already written in that transaction) is written
// after that commit: the session is not back once both are done.
func TestSignOutDuringRideCommit(t *testing.T) {
	ctx := t.Context()
	clock := conformance.NewClock(time.Now())
	s := open(t, filepath.Join(t.TempDir(), "usher.db"), clock.Now)
	boltstore.SetRideDelay(s, time.Hour) // riders go with the writer below, together
	bs := &sessions.BrowserSession{ID: "racing", Values: map[string]string{"account": "u1"},
		CreatedAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour)}
	if err := s.SaveBrowserSession(ctx, bs); err != nil {
		t.Fatal(err)
	}
	started, release := boltstore.HoldRide(s)
	written := make(chan error, 1)
	go func() { // the commit that takes both riders along, held by the second
		written <- s.CreateRefreshToken(ctx, &sessions.RefreshToken{Hash: "rt-w", FamilyID: "fam-w", ClientID: "spa",
			Subject: "u1", CreatedAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour)})
	}()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the riders' commit never started")
	}
	deleted := make(chan error, 1)
	go func() { deleted <- s.DeleteBrowserSession(ctx, "racing") }()
	// The sign-out took the session off its ride (no read finds it) and
	// waits for the held commit.
	testkit.Eventually(t, "the sign-out to take the session off its ride", func() bool {
		_, err := s.GetBrowserSession(ctx, "racing")
		return errors.Is(err, sessions.ErrNotFound)
	})
	release()
	for _, done := range []chan error{written, deleted} {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.GetBrowserSession(ctx, "racing"); !errors.Is(err, sessions.ErrNotFound) {
		t.Errorf("the signed-out session after its ride's commit: %v, want ErrNotFound", err)
	}
	found := false
	if err := s.Export(ctx, store.BrowserSessions, func(raw json.RawMessage) error {
		var got sessions.BrowserSession
		if err := json.Unmarshal(raw, &got); err != nil {
			return err
		}
		found = found || got.ID == "racing"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if found {
		t.Error("the signed-out session is in the main file after its ride's commit")
	}
}
