// Package testkit holds the helpers the tests of several packages share: one
// way to wait on a condition, a logger that hands background logs to the
// test, and a throwaway bolt store.
package testkit

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/usher-oidc/usher/grants"

	boltstore "github.com/usher-oidc/usher/store/bolt"
)

// Eventually waits until cond holds, failing the test after 20 s. Tests wait
// on conditions with it instead of sleeping and then asserting.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	if !Within(20*time.Second, cond) {
		t.Fatalf("timed out waiting for %s", what)
	}
}

// Within is the polling loop itself, for the waits Eventually does not fit:
// another deadline, a failure report of the caller's own (what it last saw,
// a screenshot), or no test to fail (TestMain). It calls cond until it holds
// or d has passed, every 5 ms, and reports whether it held; the caller must
// act on false.
func Within(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// Logger collects the workers' logs and hands them to t's log at the test's
// end, from the test's goroutine (a t.Log from a worker while the test
// finishes is a data race in package testing).
func Logger(t testing.TB) *slog.Logger {
	w := &writer{}
	t.Cleanup(func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, line := range w.buf {
			t.Log(line)
		}
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type writer struct {
	mu  sync.Mutex
	buf []string
}

func (w *writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.buf = append(w.buf, strings.TrimRight(string(p), "\n"))
	w.mu.Unlock()
	return len(p), nil
}

// OpenBolt opens a bolt store in t's temp dir, without background sweeps,
// closed at the test's end; it returns the file's path too.
func OpenBolt(t testing.TB) (*boltstore.Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "usher.db")
	s, err := boltstore.Open(path, boltstore.Options{SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, path
}

// InvitationToken returns a fresh invitation token and its stored hash.
func InvitationToken(t testing.TB) (token, hash string) {
	t.Helper()
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	token = "inv_" + base64.RawURLEncoding.EncodeToString(b)
	sum := sha256.Sum256([]byte(token))
	return token, hex.EncodeToString(sum[:])
}

// Invitation reads invitation id from s or fails the test.
func Invitation(t testing.TB, s grants.Store, id string) *grants.Invitation {
	t.Helper()
	inv, err := s.GetInvitation(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

// PendingInvitation stores a pending invitation and returns it with its link.
func PendingInvitation(t testing.TB, s grants.Store, email string) (*grants.Invitation, string, string) {
	t.Helper()
	token, hash := InvitationToken(t)
	now := time.Now()
	inv, err := s.CreateInvitation(t.Context(), &grants.Invitation{
		ID: "inv-" + hash[:12], TokenHash: hash, Email: email, Roles: []string{"editor"},
		EmailMatch: "any", Inviter: "Alice Admin", Status: grants.StatusPending,
		CreatedAt: now, ExpiresAt: now.Add(7 * 24 * time.Hour), SendEmail: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	return inv, token, "https://usher.example.com/invite/" + token
}
