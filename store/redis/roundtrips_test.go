package redis_test

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
	redisstore "github.com/usher-oidc/usher/store/redis"
)

// countTrips counts round trips: one per command sent alone, one per pipeline.
type countTrips struct{ n atomic.Int64 }

func (h *countTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *countTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.n.Add(1); return next(ctx, cmd) }
}
func (h *countTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { h.n.Add(1); return next(ctx, cmds) }
}

// A sign-in resolves its identity in two round trips on one master (the
// identity, then the user with its index entries in one pipeline), also
// right after the master lost its scripts (a restart or failover: NOSCRIPT,
// answered by sending the script's source), and the indexes it wrote find
// the user. A count, not a timing.
func TestResolveIdentityRoundTrips(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	hook := &countTrips{}
	rdb := redis.NewClient(&redis.Options{Addr: standalone.addr()})
	rdb.AddHook(hook)
	st := redisstore.New(rdb, redisstore.Options{Prefix: uniquePrefix()})
	t.Cleanup(func() { _ = st.Close() })
	id := grants.Identity{Issuer: "https://idp.example/", Subject: "auth0|trips"}
	steps := []struct {
		name        string
		email       string
		flush       bool
		maxTrips    int64
		wantCreated bool
	}{
		{name: "first sign-in", email: "Trips@example.com", wantCreated: true}, // not counted: connections dialled, scripts loaded
		{name: "returning, same email", email: "Trips@example.com", maxTrips: 2},
		{name: "after SCRIPT FLUSH", email: "Trips@example.com", flush: true, maxTrips: 4}, // two of them NOSCRIPT
		{name: "returning again", email: "Trips@example.com", maxTrips: 2},
	}
	for _, step := range steps {
		if step.flush {
			if err := rdb.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		}
		before := hook.n.Load()
		u, created, err := st.ResolveIdentity(ctx, id, grants.Profile{Email: step.email, EmailVerified: true}, "usr_trips", time.Now())
		if err != nil || u.ID != "usr_trips" || created != step.wantCreated {
			t.Fatalf("%s: %+v created=%v %v", step.name, u, created, err)
		}
		if n := hook.n.Load() - before; step.maxTrips > 0 && n > step.maxTrips {
			t.Errorf("%s: %d round trips, want at most %d", step.name, n, step.maxTrips)
		}
	}
	users, err := st.UsersByEmail(ctx, "trips@example.com")
	if err != nil || len(users) != 1 || users[0].ID != "usr_trips" {
		t.Errorf("by email: %+v %v", users, err)
	}
	listed, _, err := st.ListUsers(ctx, grants.UserFilter{Query: "trips"})
	if err != nil || !slices.ContainsFunc(listed, func(u grants.User) bool { return u.ID == "usr_trips" }) {
		t.Errorf("listed: %+v %v", listed, err)
	}
}

// UserAndGrant answers what GetUser and GetGrant answer, in one round trip
// on one master, also after the master lost its scripts; an unknown user is
// ErrNotFound.
func TestUserAndGrant(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	hook := &countTrips{}
	rdb := redis.NewClient(&redis.Options{Addr: standalone.addr()})
	rdb.AddHook(hook)
	st := redisstore.New(rdb, redisstore.Options{Prefix: uniquePrefix()})
	t.Cleanup(func() { _ = st.Close() })
	id := grants.Identity{Issuer: "https://idp.example/", Subject: "auth0|ug"}
	if _, _, err := st.ResolveIdentity(ctx, id, grants.Profile{Email: "ug@example.com"}, "usr_ug", time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := st.AddRoles(ctx, "usr_ug", []string{"member"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	wantUser, err := st.GetUser(ctx, "usr_ug")
	if err != nil {
		t.Fatal(err)
	}
	wantGrant, err := st.GetGrant(ctx, "usr_ug")
	if err != nil {
		t.Fatal(err)
	}
	for _, flush := range []bool{false, true} {
		if flush {
			if err := rdb.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		}
		before := hook.n.Load()
		u, g, err := st.UserAndGrant(ctx, "usr_ug")
		if err != nil {
			t.Fatalf("flush=%v: %v", flush, err)
		}
		if n := hook.n.Load() - before; !flush && n != 1 {
			t.Errorf("%d round trips, want 1", n)
		}
		if !reflect.DeepEqual(u, wantUser) || !reflect.DeepEqual(g, wantGrant) {
			t.Errorf("flush=%v: %+v %+v, want %+v %+v", flush, u, g, wantUser, wantGrant)
		}
	}
	if _, _, err := st.UserAndGrant(ctx, "usr_nobody"); !errors.Is(err, grants.ErrNotFound) {
		t.Errorf("unknown user: %v", err)
	}
}
