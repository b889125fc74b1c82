package bolt_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/internal/testkit"
	"github.com/usher-oidc/usher/sessions"
	boltstore "github.com/usher-oidc/usher/store/bolt"
	"github.com/usher-oidc/usher/store/conformance"
)

func open(t testing.TB, path string, now func() time.Time) *boltstore.Store {
	t.Helper()
	s, err := boltstore.Open(path, boltstore.Options{Now: now, SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func fresh(t *testing.T, clock *conformance.Clock) *boltstore.Store {
	return open(t, filepath.Join(t.TempDir(), "usher.db"), clock.Now)
}

func TestSessionsConformance(t *testing.T) {
	t.Parallel()
	conformance.RunSessions(t, func(t *testing.T, clock *conformance.Clock) sessions.Store { return fresh(t, clock) })
}

func TestGrantsConformance(t *testing.T) {
	t.Parallel()
	conformance.RunGrants(t, func(t *testing.T, clock *conformance.Clock) grants.Store { return fresh(t, clock) })
}

func TestReopenKeepsData(t *testing.T) {
	ctx := t.Context()
	clock := conformance.NewClock(time.Now())
	path := filepath.Join(t.TempDir(), "usher.db")
	s, err := boltstore.Open(path, boltstore.Options{Now: clock.Now, SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	now := clock.Now()
	if err := s.CreateRefreshToken(ctx, &sessions.RefreshToken{Hash: "rt", FamilyID: "fam", ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateInvitation(ctx, &grants.Invitation{ID: "inv", TokenHash: "h", Email: "a@example.com", ExternalID: "x", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := s.EnqueueJob(ctx, &grants.Job{ID: "j", Kind: "mail", RunAt: now}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := s.Ping(ctx); err == nil {
		t.Fatal("Ping succeeded on a closed store")
	}

	s = open(t, path, clock.Now)
	if _, err := s.GetRefreshToken(ctx, "fam", "rt"); err != nil {
		t.Fatalf("refresh token after reopen: %v", err)
	}
	if inv, err := s.GetInvitationByTokenHash(ctx, "h"); err != nil || inv.ID != "inv" {
		t.Fatalf("invitation after reopen: %v, %v", inv, err)
	}
	if list, _, err := s.ListInvitations(ctx, grants.InvitationFilter{ExternalID: "x"}, now); err != nil || len(list) != 1 {
		t.Fatalf("external_id index after reopen: %v, %v", list, err)
	}
	if n, err := s.JobCount(ctx, "mail"); err != nil || n != 1 {
		t.Fatalf("jobs after reopen: %d, %v", n, err)
	}
}

func TestSweep(t *testing.T) {
	ctx := t.Context()
	clock := conformance.NewClock(time.Now())
	s := open(t, filepath.Join(t.TempDir(), "usher.db"), clock.Now)
	now := clock.Now()
	short, long := now.Add(time.Minute), now.Add(time.Hour)
	// Enough records that the sweep crosses its chunk boundary.
	const n = 2500
	for i := range n {
		exp := short
		if i%2 == 1 {
			exp = long
		}
		if err := s.SaveCode(ctx, &sessions.Code{Hash: fmt.Sprintf("c%05d", i), AuthRequestID: "ar", ExpiresAt: exp}); err != nil {
			t.Fatal(err)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, exp := range []time.Time{short, long} {
		tag := exp.Sub(now).String()
		must(s.CreateAuthRequest(ctx, &sessions.AuthRequest{ID: "ar" + tag, ExpiresAt: exp}))
		must(s.CreateRefreshToken(ctx, &sessions.RefreshToken{Hash: "rt" + tag, FamilyID: "f", ExpiresAt: exp}))
		must(s.RevokeFamily(ctx, "fam"+tag, exp))
		must(s.RevokeAccessToken(ctx, "jti"+tag, exp))
		must(s.SaveBrowserSession(ctx, &sessions.BrowserSession{ID: "bs" + tag, ExpiresAt: exp}))
		_, err := s.ReserveIdempotencyKey(ctx, &grants.IdempotencyRecord{Key: "k" + tag, RequestHash: "h", ExpiresAt: exp})
		must(err)
	}
	// Durable records never expire.
	_, err := s.CreateInvitation(ctx, &grants.Invitation{ID: "inv", TokenHash: "h", CreatedAt: now, ExpiresAt: short})
	must(err)
	must(s.EnqueueJob(ctx, &grants.Job{ID: "j", Kind: "mail", RunAt: now}))

	removed, err := s.Sweep(ctx)
	must(err)
	if removed != 0 {
		t.Fatalf("sweep before expiry removed %d", removed)
	}
	clock.Advance(2 * time.Minute)
	removed, err = s.Sweep(ctx)
	must(err)
	if want := n/2 + 6; removed != want {
		t.Fatalf("sweep removed %d records, want %d", removed, want)
	}
	if removed, _ = s.Sweep(ctx); removed != 0 {
		t.Fatalf("second sweep removed %d", removed)
	}
	// The long-lived halves are still there once the clock goes back.
	clock.Set(now)
	if _, err := s.ConsumeCode(ctx, "c00000"); !errors.Is(err, sessions.ErrNotFound) {
		t.Fatalf("swept code: %v", err)
	}
	if _, err := s.ConsumeCode(ctx, "c00001"); err != nil {
		t.Fatalf("live code: %v", err)
	}
	if _, err := s.GetAuthRequest(ctx, "ar1m0s"); !errors.Is(err, sessions.ErrNotFound) {
		t.Fatalf("swept auth request: %v", err)
	}
	if ok, _ := s.TokenRevoked(ctx, "fam1m0s", "jti1m0s"); ok {
		t.Fatal("swept revocation markers still count")
	}
	if ok, _ := s.TokenRevoked(ctx, "fam1h0m0s", ""); !ok {
		t.Fatal("live family marker swept")
	}
	if _, err := s.GetBrowserSession(ctx, "bs1h0m0s"); err != nil {
		t.Fatalf("live browser session: %v", err)
	}
	if _, err := s.GetInvitation(ctx, "inv"); err != nil {
		t.Fatalf("invitation swept: %v", err)
	}
	if n, _ := s.JobCount(ctx, "mail"); n != 1 {
		t.Fatal("job swept")
	}
}

func TestSweeperRuns(t *testing.T) {
	clock := conformance.NewClock(time.Now())
	s, err := boltstore.Open(filepath.Join(t.TempDir(), "usher.db"), boltstore.Options{Now: clock.Now, SweepInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	if err := s.SaveCode(ctx, &sessions.Code{Hash: "c", ExpiresAt: clock.Now().Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	if !testkit.Within(5*time.Second, func() bool {
		// Going back in time makes the code live again unless the sweeper deleted it.
		clock.Set(clock.Now().Add(-time.Hour))
		_, err := s.ConsumeCode(ctx, "c")
		clock.Advance(time.Hour)
		return errors.Is(err, sessions.ErrNotFound)
	}) {
		t.Fatal("sweeper did not remove the expired code")
	}
}

// BenchmarkRotateRefreshToken measures the token endpoint's store write: each
// goroutine walks its own refresh-token chain, one rotation per op.
func BenchmarkRotateRefreshToken(b *testing.B) {
	s := open(b, filepath.Join(b.TempDir(), "usher.db"), nil)
	ctx := context.Background()
	var chains atomic.Int64
	// What fills a batch is the number of requests in flight, not CPUs: run
	// 16 per CPU, as a busy token endpoint would.
	b.SetParallelism(16)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		chain := chains.Add(1)
		family := fmt.Sprintf("fam-%d", chain)
		now := time.Now()
		mk := func(i int) *sessions.RefreshToken {
			return &sessions.RefreshToken{
				Hash: fmt.Sprintf("%s-%d", family, i), FamilyID: family, ClientID: "spa", Subject: "user",
				Scopes: []string{"openid", "offline_access"}, Audience: []string{"spa"},
				CreatedAt: now, ExpiresAt: now.Add(time.Hour), FamilyExpiresAt: now.Add(24 * time.Hour),
			}
		}
		if err := s.CreateRefreshToken(ctx, mk(0)); err != nil {
			b.Error(err)
			return
		}
		for i := 0; pb.Next(); i++ {
			if err := s.RotateRefreshToken(ctx, mk(i).Hash, mk(i+1)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
}

// The flow file (auth requests, codes) survives a clean Close; after an
// unclean end (no clean marker) it is discarded, consumed codes included, so
// a code can never come back unconsumed.
func TestFlowFileCleanAndUnclean(t *testing.T) {
	ctx := t.Context()
	clock := conformance.NewClock(time.Now())
	path := filepath.Join(t.TempDir(), "usher.db")
	s, err := boltstore.Open(path, boltstore.Options{Now: clock.Now, SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	exp := clock.Now().Add(time.Hour)
	if err := s.CreateAuthRequest(ctx, &sessions.AuthRequest{ID: "ar", ExpiresAt: exp}); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveCode(ctx, &sessions.Code{Hash: "c", ExpiresAt: exp}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ConsumeCode(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = boltstore.Open(path, boltstore.Options{Now: clock.Now, SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetAuthRequest(ctx, "ar"); err != nil {
		t.Fatalf("after a clean close: %v", err)
	}
	if _, err := s.ConsumeCode(ctx, "c"); !errors.Is(err, sessions.ErrCodeReplayed) {
		t.Fatalf("consumed code after a clean close: %v, want ErrCodeReplayed", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// As after a crash: the clean marker was never written.
	if err := os.Remove(path + ".flow.clean"); err != nil {
		t.Fatal(err)
	}
	s = open(t, path, clock.Now)
	if _, err := s.GetAuthRequest(ctx, "ar"); !errors.Is(err, sessions.ErrNotFound) {
		t.Fatalf("auth request after an unclean end: %v, want ErrNotFound", err)
	}
	if _, err := s.ConsumeCode(ctx, "c"); !errors.Is(err, sessions.ErrNotFound) {
		t.Fatalf("code after an unclean end: %v, want ErrNotFound", err)
	}
}

// A sealed code's spend lives in the flow file too: it survives a clean
// Close with the epoch; an unclean end discards both, and the new epoch
// refuses the code, so a spent code never opens again.
func TestSealedCodeSpendCleanAndUnclean(t *testing.T) {
	ctx := t.Context()
	clock := conformance.NewClock(time.Now())
	path := filepath.Join(t.TempDir(), "usher.db")
	s := open(t, path, clock.Now)
	epoch, err := s.CodeEpoch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	spend := &sessions.CodeSpend{Hash: "sealed", Epoch: epoch, ExpiresAt: clock.Now().Add(time.Hour)}
	if err := s.SpendCode(ctx, spend); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, path, clock.Now)
	if again, _ := s.CodeEpoch(ctx); again != epoch {
		t.Fatalf("epoch after a clean close: %q, want %q", again, epoch)
	}
	if err := s.SpendCode(ctx, spend); !errors.Is(err, sessions.ErrCodeReplayed) {
		t.Fatalf("spent code after a clean close: %v, want ErrCodeReplayed", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path + ".flow.clean"); err != nil { // as after a crash
		t.Fatal(err)
	}
	s = open(t, path, clock.Now)
	if again, _ := s.CodeEpoch(ctx); again == epoch || again == "" {
		t.Fatalf("epoch after an unclean end: %q, want a new one", again)
	}
	if err := s.SpendCode(ctx, spend); !errors.Is(err, sessions.ErrNotFound) {
		t.Fatalf("a code of the epoch before an unclean end: %v, want ErrNotFound", err)
	}
}

// A transient browser session (sign-ins in flight only) is kept in the flow
// file: saving it makes no durable commit, it reads back, and it is gone
// after an unclean end with the auth requests it points at. Saved again
// with an account, or replaced by the signed-in session, it lives in the
// main file only (written with the next commit) and survives the crash.
func TestTransientBrowserSessions(t *testing.T) {
	ctx := t.Context()
	clock := conformance.NewClock(time.Now())
	path := filepath.Join(t.TempDir(), "usher.db")
	s := open(t, path, clock.Now)
	exp := clock.Now().Add(time.Hour)
	session := func(id string, transient bool, kv ...string) *sessions.BrowserSession {
		v := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			v[kv[i]] = kv[i+1]
		}
		return &sessions.BrowserSession{ID: id, Values: v, CreatedAt: clock.Now(), ExpiresAt: exp, Transient: transient}
	}
	commitsOf := func(what string, f func() error) uint64 {
		t.Helper()
		_, before := s.WriteStats()
		if err := f(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		_, after := s.WriteStats()
		return after - before
	}
	if n := commitsOf("save transient", func() error { return s.SaveBrowserSession(ctx, session("visitor", true, "up:s1", "{}")) }); n != 0 {
		t.Errorf("a transient save made %d durable commits, want 0", n)
	}
	if got, err := s.GetBrowserSession(ctx, "visitor"); err != nil || got.Values["up:s1"] != "{}" || !got.Transient {
		t.Fatalf("the transient session: %+v %v", got, err)
	}
	if n := commitsOf("save transient again", func() error { return s.SaveBrowserSession(ctx, session("visitor", true)) }); n != 0 {
		t.Errorf("a second transient save made %d durable commits, want 0", n)
	}
	// Signed in: replaced by a session under a new ID, in the main file
	// with its next commit (browser_ride.go), read at once.
	if n := commitsOf("replace", func() error {
		return s.ReplaceBrowserSession(ctx, session("signed-in", false, "account", "u1"), "visitor")
	}); n != 0 {
		t.Errorf("the replacement made %d durable commits, want 0 (it rides)", n)
	}
	if got, err := s.GetBrowserSession(ctx, "signed-in"); err != nil || got.Values["account"] != "u1" || got.Transient {
		t.Errorf("the signed-in session on its ride: %+v %v", got, err)
	}
	if _, err := s.GetBrowserSession(ctx, "visitor"); !errors.Is(err, sessions.ErrNotFound) {
		t.Errorf("the replaced transient session: %v, want ErrNotFound", err)
	}
	// A transient session that gains an account moves to the main file, and
	// back: one file at a time, the newest values read.
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.SaveBrowserSession(ctx, session("mover", true, "up:a", "1")))
	must(s.SaveBrowserSession(ctx, session("mover", false, "up:a", "1", "account", "u2")))
	must(s.SaveBrowserSession(ctx, session("mover", true, "up:b", "2")))
	if got, err := s.GetBrowserSession(ctx, "mover"); err != nil || got.Values["up:b"] != "2" || got.Values["account"] != "" {
		t.Fatalf("the moved session: %+v %v", got, err)
	}
	must(s.SaveBrowserSession(ctx, session("leaver", true, "up:c", "3")))
	must(s.DeleteBrowserSession(ctx, "leaver"))
	if _, err := s.GetBrowserSession(ctx, "leaver"); !errors.Is(err, sessions.ErrNotFound) {
		t.Errorf("a deleted transient session: %v", err)
	}
	must(s.SaveBrowserSession(ctx, session("in-flight", true, "up:d", "4")))
	must(s.Close())
	if err := os.Remove(path + ".flow.clean"); err != nil { // as after a crash
		t.Fatal(err)
	}
	s = open(t, path, clock.Now)
	if _, err := s.GetBrowserSession(ctx, "in-flight"); !errors.Is(err, sessions.ErrNotFound) {
		t.Errorf("a transient session after an unclean end: %v, want ErrNotFound", err)
	}
	if got, err := s.GetBrowserSession(ctx, "signed-in"); err != nil || got.Values["account"] != "u1" || got.Transient {
		t.Errorf("the signed-in session after an unclean end: %+v %v", got, err)
	}
}
