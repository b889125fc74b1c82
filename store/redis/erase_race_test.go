package redis_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
	redisstore "github.com/usher-oidc/usher/store/redis"
)

// eraseFirst erases a user just before the sign-in's script that would
// create that user's hash is sent: the sign-in has already read the
// identity, the erase then removes identity and user.
type eraseFirst struct {
	once  sync.Once
	key   string
	erase func() error
	err   error
}

func (h *eraseFirst) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *eraseFirst) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, cmd := range cmds {
			h.before(cmd)
		}
		return next(ctx, cmds)
	}
}

func (h *eraseFirst) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.before(cmd)
		return next(ctx, cmd)
	}
}

// before erases once, before the first command that would run ensureUser on
// the key (sent alone or in a pipeline).
func (h *eraseFirst) before(cmd redis.Cmder) {
	a := cmd.Args()
	if len(a) > 3 && fmt.Sprint(a[0]) == "evalsha" && fmt.Sprint(a[1]) == redisstore.EnsureUserHash() && fmt.Sprint(a[3]) == h.key {
		h.once.Do(func() { h.err = h.erase() })
	}
}

// A sign-in that read the identity just before an erase removed it and its
// user must not bring the user back (with the person's email, outliving
// the erase): it signs in as a new user without grants, and the erased
// user stays gone. Before the fix the erased user was re-created.
func TestSignInRacingAnErase(t *testing.T) {
	t.Parallel()
	srv := startServerT(t, 0)
	ctx := ctxT(t)
	const prefix = "race:"
	st := redisstore.New(redis.NewClient(&redis.Options{Addr: srv.addr()}), redisstore.Options{Prefix: prefix})
	t.Cleanup(func() { _ = st.Close() })
	id := grants.Identity{Issuer: "https://idp.example/", Subject: "auth0|race"}
	prof := grants.Profile{Email: "race@example.com", EmailVerified: true}
	if _, _, err := st.ResolveIdentity(ctx, id, prof, "usr_first", time.Now()); err != nil {
		t.Fatal(err)
	}

	hook := &eraseFirst{key: prefix + "u:usr_first", erase: func() error { return st.EraseUser(ctx, "usr_first", time.Now()) }}
	rdb := redis.NewClient(&redis.Options{Addr: srv.addr()})
	rdb.AddHook(hook)
	racing := redisstore.New(rdb, redisstore.Options{Prefix: prefix})
	t.Cleanup(func() { _ = racing.Close() })
	u, created, err := racing.ResolveIdentity(ctx, id, prof, "usr_second", time.Now())
	if err != nil || hook.err != nil {
		t.Fatalf("sign-in racing the erase: %v (erase: %v)", err, hook.err)
	}
	if u.ID != "usr_second" || !created {
		t.Errorf("signed in as %s (created %v), want a new user usr_second", u.ID, created)
	}
	if _, err := st.GetUser(ctx, "usr_first"); !errors.Is(err, grants.ErrNotFound) {
		t.Errorf("the erased user after the racing sign-in: %v, want ErrNotFound", err)
	}
	users, err := st.UsersByEmail(ctx, "race@example.com")
	if err != nil || len(users) != 1 || users[0].ID != "usr_second" {
		t.Errorf("users with the email: %+v %v, want only usr_second", users, err)
	}
}
