package conformance

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/usher-oidc/usher/sessions"
)

// loginState is the i-th test state (its values plain ASCII, whatever key
// it is saved under).
func loginState(i int) *sessions.LoginState {
	return &sessions.LoginState{Nonce: fmt.Sprintf("nonce-%d", i), Verifier: fmt.Sprintf("verifier-%d", i)}
}

// loginStatesKept reports whether s keeps login states. A store may refuse
// with errors.ErrUnsupported (Redis below record format v4): then it must
// have kept nothing, and the caller skips what needs them.
func loginStatesKept(t *testing.T, ctx context.Context, s sessions.Store, clock *Clock) bool {
	t.Helper()
	ar := authRequest("ls-probe", clock.Now())
	must(t, "create the probe's auth request", s.CreateAuthRequest(ctx, ar))
	err := s.SaveLoginState(ctx, ar.ID, "probe", loginState(0))
	if errors.Is(err, errors.ErrUnsupported) {
		got, _, err := s.TakeLoginState(ctx, ar.ID, "probe")
		wantErr(t, "take a state the store refused to keep", err, sessions.ErrNotFound)
		if got == nil {
			t.Fatalf("take a state the store refused to keep: no auth request with ErrNotFound, want the live one")
		}
		return false
	}
	must(t, "save the probe's state", err)
	_, _, err = s.TakeLoginState(ctx, ar.ID, "probe")
	must(t, "take the probe's state", err)
	return true
}

// wantTaken takes key of arID and requires the state want with the request
// as stored now.
func wantTaken(t *testing.T, ctx context.Context, s sessions.Store, arID, key string, want *sessions.LoginState) {
	t.Helper()
	stored, err := s.GetAuthRequest(ctx, arID)
	must(t, "the auth request before the take", err)
	ar, ls, err := s.TakeLoginState(ctx, arID, key)
	must(t, fmt.Sprintf("take %q", key), err)
	same(t, fmt.Sprintf("the auth request taken with %q", key), stored, ar)
	same(t, fmt.Sprintf("the state taken with %q", key), want, ls)
}

// wantNoState requires that key of arID is not there: with the live
// request if live (compared with it when not nil), else with none.
func wantNoState(t *testing.T, ctx context.Context, s sessions.Store, arID, key string, live bool, want *sessions.AuthRequest) {
	t.Helper()
	ar, ls, err := s.TakeLoginState(ctx, arID, key)
	wantErr(t, fmt.Sprintf("take %q of %s", key, arID), err, sessions.ErrNotFound)
	if ls != nil {
		t.Fatalf("take %q of %s: state %+v with ErrNotFound", key, arID, ls)
	}
	switch {
	case !live && ar != nil:
		t.Fatalf("take %q of %s gone: auth request %+v, want none", key, arID, ar)
	case live && ar == nil:
		t.Fatalf("take %q of %s: no auth request with ErrNotFound, want the live one", key, arID)
	case live && want != nil:
		same(t, fmt.Sprintf("the auth request with no state %q", key), want, ar)
	}
}

// testLoginStates: login states kept with their auth request, taken once,
// going with the request (expiry, delete, update, the code's save).
func testLoginStates(t *testing.T, ctx context.Context, s sessions.Store, clock *Clock) {
	badInput(t, map[string]func() error{
		"SaveLoginState(nil)":    func() error { return s.SaveLoginState(ctx, "ls-ar", "k", nil) },
		"SaveLoginState(no ar)":  func() error { return s.SaveLoginState(ctx, "", "k", loginState(0)) },
		"SaveLoginState(no key)": func() error { return s.SaveLoginState(ctx, "ls-ar", "", loginState(0)) },
		"TakeLoginState(no ar)":  func() error { _, _, err := s.TakeLoginState(ctx, "", "k"); return err },
		"TakeLoginState(no key)": func() error { _, _, err := s.TakeLoginState(ctx, "ls-ar", ""); return err },
	})
	if !loginStatesKept(t, ctx, s, clock) {
		t.Skip("the store keeps no login states (errors.ErrUnsupported)")
	}
	for i, tc := range loginStateCases(ctx, s, clock) {
		t.Run(tc.name, func(t *testing.T) {
			ar := authRequest(fmt.Sprint("ls-ar-", i), clock.Now())
			must(t, "create the auth request", s.CreateAuthRequest(ctx, ar))
			tc.fn(t, ar)
		})
	}
}

// loginStateCase is one case of testLoginStates, given a fresh auth request.
type loginStateCase struct {
	name string
	fn   func(t *testing.T, ar *sessions.AuthRequest)
}

func loginStateCases(ctx context.Context, s sessions.Store, clock *Clock) []loginStateCase {
	return []loginStateCase{
		{"taken once", func(t *testing.T, ar *sessions.AuthRequest) {
			must(t, "save", s.SaveLoginState(ctx, ar.ID, "k", loginState(1)))
			wantTaken(t, ctx, s, ar.ID, "k", loginState(1))
			wantNoState(t, ctx, s, ar.ID, "k", true, ar)
		}},
		{"unknown key", func(t *testing.T, ar *sessions.AuthRequest) {
			must(t, "save", s.SaveLoginState(ctx, ar.ID, "k", loginState(1)))
			wantNoState(t, ctx, s, ar.ID, "other", true, ar)
			wantTaken(t, ctx, s, ar.ID, "k", loginState(1))
		}},
		{"saved again under its key", func(t *testing.T, ar *sessions.AuthRequest) {
			must(t, "save", s.SaveLoginState(ctx, ar.ID, "k", loginState(1)))
			must(t, "save again", s.SaveLoginState(ctx, ar.ID, "k", loginState(2)))
			wantTaken(t, ctx, s, ar.ID, "k", loginState(2))
		}},
		{"unknown request", func(t *testing.T, _ *sessions.AuthRequest) {
			wantErr(t, "save", s.SaveLoginState(ctx, "ls-none", "k", loginState(1)), sessions.ErrNotFound)
			wantNoState(t, ctx, s, "ls-none", "k", false, nil)
		}},
		{"request expired", func(t *testing.T, ar *sessions.AuthRequest) {
			must(t, "save", s.SaveLoginState(ctx, ar.ID, "k", loginState(1)))
			clock.Advance(ar.ExpiresAt.Sub(clock.Now()))
			wantNoState(t, ctx, s, ar.ID, "k", false, nil)
			wantErr(t, "save", s.SaveLoginState(ctx, ar.ID, "k", loginState(2)), sessions.ErrNotFound)
			// A request created over the expired one holds none of its states.
			again := authRequest(ar.ID, clock.Now())
			must(t, "create over the expired one", s.CreateAuthRequest(ctx, again))
			wantNoState(t, ctx, s, ar.ID, "k", true, again)
		}},
		{"update drops them", func(t *testing.T, ar *sessions.AuthRequest) {
			must(t, "save", s.SaveLoginState(ctx, ar.ID, "k", loginState(1)))
			ar.Done, ar.Subject = true, "usr_ls"
			must(t, "update", s.UpdateAuthRequest(ctx, ar))
			wantNoState(t, ctx, s, ar.ID, "k", true, ar)
		}},
		{"the code's save drops them", func(t *testing.T, ar *sessions.AuthRequest) {
			must(t, "save", s.SaveLoginState(ctx, ar.ID, "k", loginState(1)))
			ar.Done, ar.Subject = true, "usr_ls"
			c := &sessions.Code{Hash: "ls-code-" + ar.ID, AuthRequestID: ar.ID, ExpiresAt: clock.Now().Add(time.Minute), AuthRequest: ar}
			must(t, "save the code", s.SaveCode(ctx, c))
			wantNoState(t, ctx, s, ar.ID, "k", true, c.StoredAuthRequest())
		}},
		{"delete drops them", func(t *testing.T, ar *sessions.AuthRequest) {
			must(t, "save", s.SaveLoginState(ctx, ar.ID, "k", loginState(1)))
			must(t, "delete", s.DeleteAuthRequest(ctx, ar.ID))
			wantNoState(t, ctx, s, ar.ID, "k", false, nil)
			again := authRequest(ar.ID, clock.Now())
			must(t, "create again", s.CreateAuthRequest(ctx, again))
			wantNoState(t, ctx, s, ar.ID, "k", true, again)
		}},
		{"MaxLoginStates kept", func(t *testing.T, ar *sessions.AuthRequest) {
			for i := range sessions.MaxLoginStates {
				must(t, "save", s.SaveLoginState(ctx, ar.ID, fmt.Sprint("k", i), loginState(i)))
			}
			for i := range sessions.MaxLoginStates {
				wantTaken(t, ctx, s, ar.ID, fmt.Sprint("k", i), loginState(i))
			}
		}},
		{"one more keeps only the newest", func(t *testing.T, ar *sessions.AuthRequest) {
			for i := range sessions.MaxLoginStates + 1 {
				must(t, "save", s.SaveLoginState(ctx, ar.ID, fmt.Sprint("k", i), loginState(i)))
			}
			wantTaken(t, ctx, s, ar.ID, fmt.Sprint("k", sessions.MaxLoginStates), loginState(sessions.MaxLoginStates))
			for i := range sessions.MaxLoginStates {
				wantNoState(t, ctx, s, ar.ID, fmt.Sprint("k", i), true, ar)
			}
		}},
		{"concurrent takes", func(t *testing.T, ar *sessions.AuthRequest) { concurrentTakes(t, ctx, s, ar) }},
		{"odd keys", func(t *testing.T, ar *sessions.AuthRequest) { oddKeys(t, ctx, s, ar) }},
	}
}

// concurrentTakes: of 16 concurrent takes of one state exactly one gets it;
// the others get ErrNotFound with the request.
func concurrentTakes(t *testing.T, ctx context.Context, s sessions.Store, ar *sessions.AuthRequest) {
	must(t, "save", s.SaveLoginState(ctx, ar.ID, "k", loginState(1)))
	const n = 16
	got := make([]*sessions.LoginState, n)
	errs := concurrently(n, func(i int) error {
		r, ls, err := s.TakeLoginState(ctx, ar.ID, "k")
		if r == nil || r.ID != ar.ID {
			return fmt.Errorf("auth request %+v with %v", r, err)
		}
		got[i] = ls
		return err
	})
	if won := countNil(t, "concurrent takes", errs, sessions.ErrNotFound); won != 1 {
		t.Fatalf("%d of %d concurrent takes got the state, want exactly 1", won, n)
	}
	for i, err := range errs {
		if err == nil {
			same(t, "the state the winner took", loginState(1), got[i])
		}
	}
}

// oddKeys: keys are kept apart byte for byte, whatever their bytes (the
// broker's are hex SHA-256), including ones that look like a store's own
// field or key syntax.
func oddKeys(t *testing.T, ctx context.Context, s sessions.Store, ar *sessions.AuthRequest) {
	sum := sha256.Sum256([]byte("state"))
	keys := []string{hex.EncodeToString(sum[:]), "a:b{c}d", "l:x", "e", "d", "ü ñ", "\xff\xfe", strings.Repeat("k", 1000)}
	if len(keys) > sessions.MaxLoginStates {
		t.Fatalf("%d keys: more than one request keeps", len(keys))
	}
	for i, k := range keys {
		must(t, fmt.Sprintf("save %q", k), s.SaveLoginState(ctx, ar.ID, k, loginState(i)))
	}
	for i, k := range keys {
		wantTaken(t, ctx, s, ar.ID, k, loginState(i))
	}
	for _, k := range keys {
		wantNoState(t, ctx, s, ar.ID, k, true, ar)
	}
}
