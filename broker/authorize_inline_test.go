package broker

import (
	"context"
	"testing"

	"github.com/usher-oidc/usher/grants"
)

// The user and grant read beside the session answer only a read of the
// user they are of, once; the session ID's hint names a user only after
// its dot.
func TestPreloadedUserGrant(t *testing.T) {
	read := grants.UserGrant{User: &grants.User{ID: "usr_a"}, Grant: &grants.Grant{UserID: "usr_a"}}
	ctx := context.WithValue(context.Background(), ctxPreloadedUserGrant{}, &preloadedUserGrant{userID: "usr_a", read: read})
	if _, ok := preloadedFor(ctx, "usr_b"); ok {
		t.Fatal("usr_a's read answered for usr_b")
	}
	if _, ok := preloadedFor(ctx, ""); ok {
		t.Fatal("answered for no user")
	}
	got, ok := preloadedFor(ctx, "usr_a")
	if !ok || got.User.ID != "usr_a" || got.Grant.UserID != "usr_a" {
		t.Fatalf("usr_a: %+v, %v", got, ok)
	}
	if _, ok := preloadedFor(ctx, "usr_a"); ok {
		t.Fatal("answered twice")
	}
	if _, ok := preloadedFor(context.Background(), "usr_a"); ok {
		t.Fatal("answered with nothing read")
	}
	for id, want := range map[string]string{"abc.usr_a": "usr_a", "abc": "", "": "", "abc.": ""} {
		if got := sessionUserHint(id); got != want {
			t.Errorf("sessionUserHint(%q) = %q, want %q", id, got, want)
		}
	}
}
