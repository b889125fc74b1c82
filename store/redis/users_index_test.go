package redis_test

import (
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
	redisstore "github.com/usher-oidc/usher/store/redis"
)

// Users stored before the user list index existed (here: their entries and
// the "built" marker removed) are indexed by the first listing, once.
func TestUserListIndexesOlderUsers(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	c := redis.NewClient(&redis.Options{Addr: standalone.addr()})
	t.Cleanup(func() { _ = c.Close() })
	prefix := uniquePrefix()
	s := redisstore.New(c, redisstore.Options{Prefix: prefix})
	t.Cleanup(func() { _ = s.Close() })
	for _, u := range []struct{ id, email string }{{"u-1", "old@example.com"}, {"u-2", "older@example.com"}} {
		if _, _, err := s.ResolveIdentity(ctx, grants.Identity{Issuer: "https://idp/", Subject: u.id}, grants.Profile{Email: u.email}, u.id, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Del(ctx, prefix+"users:idx", prefix+"users:idx:built").Err(); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second listing reads the index the first one built
		users, _, err := s.ListUsers(ctx, grants.UserFilter{Query: "old"})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, u := range users {
			ids = append(ids, u.ID)
		}
		if !slices.Equal(ids, []string{"u-1", "u-2"}) {
			t.Fatalf("listed %v, want [u-1 u-2]", ids)
		}
	}
	if n, _ := c.Exists(ctx, prefix+"users:idx:built").Result(); n != 1 {
		t.Error("the index is not marked built")
	}
}
