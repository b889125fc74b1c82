package redis_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/sessions"
	redisstore "github.com/usher-oidc/usher/store/redis"
)

// tripsOn is a store on the shared server writing format, under prefix,
// its round trips counted.
func tripsOn(t *testing.T, prefix, format string) (*redisstore.Store, *countTrips) {
	t.Helper()
	hook := &countTrips{}
	c := redis.NewClient(&redis.Options{Addr: standalone.addr()})
	c.AddHook(hook)
	s := redisstore.New(c, redisstore.Options{Prefix: prefix, RecordFormat: format})
	t.Cleanup(func() { _ = s.Close() })
	return s, hook
}

// arFields are the fields of an auth request's hash, sorted.
func arFields(t *testing.T, s *redisstore.Store, id string) []string {
	t.Helper()
	f, err := s.Client().HKeys(ctxT(t), s.Prefix()+"ar:"+id).Result()
	must(t, "hkeys", err)
	slices.Sort(f)
	return f
}

func newAuthRequest(t *testing.T, s *redisstore.Store, id string) *sessions.AuthRequest {
	t.Helper()
	now := time.Now()
	ar := &sessions.AuthRequest{ID: id, ClientID: "spa", CreatedAt: now, ExpiresAt: now.Add(10 * time.Minute)}
	must(t, "create auth request", s.CreateAuthRequest(ctxT(t), ar))
	return ar
}

// TestLoginStateFormatGate: below v4 SaveLoginState answers
// errors.ErrUnsupported without a round trip and writes nothing (a replica
// before v4 answering the callback would not find the state); at v4 it
// writes the state into the auth request's hash. Every format takes a
// state a v4 store saved: reading is always allowed.
func TestLoginStateFormatGate(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	for _, format := range redisstore.RecordFormats {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			prefix := uniquePrefix()
			s, hook := tripsOn(t, prefix, format)
			ar := newAuthRequest(t, s, "ar-gate")
			before := hook.n.Load()
			err := s.SaveLoginState(ctx, ar.ID, "k", &sessions.LoginState{Nonce: "n", Verifier: "v"})
			if !fromV4(format) {
				if !errors.Is(err, errors.ErrUnsupported) {
					t.Fatalf("save at %s: %v, want errors.ErrUnsupported", format, err)
				}
				if trips := hook.n.Load() - before; trips != 0 {
					t.Errorf("save at %s: %d round trips, want none", format, trips)
				}
				if f := arFields(t, s, ar.ID); !slices.Equal(f, []string{"d", "e"}) {
					t.Errorf("auth request fields after a refused save: %q, want d, e", f)
				}
				// A v4 replica's state, taken by this one.
				v4, _ := tripsOn(t, prefix, redisstore.RecordFormatV4)
				must(t, "save at v4", v4.SaveLoginState(ctx, ar.ID, "k", &sessions.LoginState{Nonce: "n", Verifier: "v"}))
			} else {
				must(t, "save at v4", err)
			}
			if f := arFields(t, s, ar.ID); !slices.Equal(f, []string{"d", "e", "l:k"}) {
				t.Errorf("auth request fields with a state: %q, want d, e, l:k", f)
			}
			got, ls, err := s.TakeLoginState(ctx, ar.ID, "k")
			must(t, "take at "+format, err)
			if got == nil || got.ID != ar.ID || ls == nil || *ls != (sessions.LoginState{Nonce: "n", Verifier: "v"}) {
				t.Fatalf("take at %s: %+v, %+v", format, got, ls)
			}
			if f := arFields(t, s, ar.ID); !slices.Equal(f, []string{"d", "e"}) {
				t.Errorf("auth request fields after the take: %q, want d, e", f)
			}
		})
	}
}

// TestLoginStateInTheRequest: a v4 login state lives in its auth request's
// hash and survives nothing else of it: its save leaves the request's
// expiry alone, an update or the code's save drops it (putRecord writes
// the hash anew), a delete takes it with the key.
func TestLoginStateInTheRequest(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	s, _ := tripsOn(t, uniquePrefix(), redisstore.RecordFormatV4)
	key := func(id string) string { return s.Prefix() + "ar:" + id }
	save := func(id string) {
		t.Helper()
		must(t, "save", s.SaveLoginState(ctx, id, "k", &sessions.LoginState{Nonce: "n", Verifier: "v"}))
		if f := arFields(t, s, id); !slices.Contains(f, "l:k") {
			t.Fatalf("auth request fields after the save: %q", f)
		}
	}
	for _, tc := range []struct {
		name string
		drop func(ar *sessions.AuthRequest) error
	}{
		{"update", func(ar *sessions.AuthRequest) error { ar.Done = true; return s.UpdateAuthRequest(ctx, ar) }},
		{"the code's save", func(ar *sessions.AuthRequest) error {
			ar.Done = true
			return s.SaveCode(ctx, &sessions.Code{Hash: "c-" + ar.ID, AuthRequestID: ar.ID, ExpiresAt: time.Now().Add(time.Minute), AuthRequest: ar})
		}},
		{"delete", func(ar *sessions.AuthRequest) error { return s.DeleteAuthRequest(ctx, ar.ID) }},
	} {
		ar := newAuthRequest(t, s, "ar-"+tc.name)
		expiry, err := s.Client().PExpireTime(ctx, key(ar.ID)).Result()
		must(t, "pexpiretime", err)
		save(ar.ID)
		if after, err := s.Client().PExpireTime(ctx, key(ar.ID)).Result(); err != nil || after != expiry {
			t.Errorf("%s: the request's expiry %v after the save, %v before (%v)", tc.name, after, expiry, err)
		}
		must(t, tc.name, tc.drop(ar))
		if f := arFields(t, s, ar.ID); slices.Contains(f, "l:k") {
			t.Errorf("after %s the auth request holds %q", tc.name, f)
		}
	}
}

// TestTogetherTakeOneRoundTrip: the callback's session read and login
// state take go in one round trip on one master.
func TestTogetherTakeOneRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	s, hook := tripsOn(t, uniquePrefix(), redisstore.RecordFormatV4)
	ar := newAuthRequest(t, s, "ar-tg")
	now := time.Now()
	must(t, "session", s.SaveBrowserSession(ctx, &sessions.BrowserSession{ID: "bs-tg", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}))
	must(t, "save", s.SaveLoginState(ctx, ar.ID, "k", &sessions.LoginState{Nonce: "n", Verifier: "v"}))
	together := func(key string) (sessions.Read, error) {
		return sessions.RunTogether(ctx, s, sessions.Together{GetSession: "bs-tg",
			TakeLoginState: &sessions.LoginStateKey{AuthRequestID: ar.ID, Key: key}})
	}
	// Not counted: the script loaded (NOSCRIPT) and connections dialled.
	if r, err := together("none"); err != nil || !errors.Is(r.AuthRequestErr, sessions.ErrNotFound) {
		t.Fatalf("take of no state: %+v, %v", r, err)
	}
	before := hook.n.Load()
	r, err := together("k")
	must(t, "together", err)
	if r.SessionErr != nil || r.AuthRequestErr != nil || r.Session == nil || r.AuthRequest == nil || r.LoginState == nil {
		t.Fatalf("together read %+v", r)
	}
	if trips := hook.n.Load() - before; trips != 1 {
		t.Errorf("session read and take: %d round trips, want 1", trips)
	}
}
