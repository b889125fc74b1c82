package auth0_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/usher-oidc/usher/broker/upstream"
	"github.com/usher-oidc/usher/broker/upstream/auth0"
	"github.com/usher-oidc/usher/devidp"
)

func TestConnectionAmbiguous(t *testing.T) {
	t.Parallel()
	for sub, want := range map[string]bool{
		"auth0|1": true, "samlp|2": true, "waad|3": true,
		"samlp|corp|4": false, "google-oauth2|5": false, "facebook|6": false, "email|7": false, "plain": false,
	} {
		if got := auth0.ConnectionAmbiguous(sub); got != want {
			t.Errorf("ConnectionAmbiguous(%q) = %v, want %v", sub, got, want)
		}
	}
}

// userReads counts GET /api/v2/users/{id} calls for sub.
func userReads(tenant *devidp.Server, sub string) int {
	n := 0
	for _, c := range tenant.ManagementCalls() {
		if c.Method == "GET" && strings.HasPrefix(c.Path, "/api/v2/users/") &&
			strings.Contains(c.Path, strings.ReplaceAll(sub, "|", "%7C")) && !strings.HasSuffix(c.Path, "/roles") {
			n++
		}
	}
	return n
}

// Two database connections: both have auth0|… subs; the Management API
// names the second one, and the answer is remembered.
func TestMirrorConnectionOfSecondDatabase(t *testing.T) {
	t.Parallel()
	tenant, domain, _, m := startMirror(t, nil, nil)
	ctx := context.Background()
	first, err := tenant.AddUser(devidp.User{Email: "ann@example.com", Password: "pw", EmailVerified: true})
	if err != nil {
		t.Fatal(err)
	}
	second, err := tenant.AddUser(devidp.User{Email: "bo@example.com", Password: "pw", EmailVerified: true, Connection: "Partners-DB"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(second, "auth0|") {
		t.Fatalf("second database sub = %q, want auth0|…", second)
	}
	if got, err := m.Connection(ctx, first); err != nil || got != "Username-Password-Authentication" {
		t.Errorf("Connection(first) = %q, %v", got, err)
	}
	for range 3 {
		if got, err := m.Connection(ctx, second); err != nil || got != "Partners-DB" {
			t.Errorf("Connection(second) = %q, %v; want Partners-DB", got, err)
		}
	}
	if n := userReads(tenant, second); n != 1 {
		t.Errorf("user reads of the second user = %d, want 1 (then the cache)", n)
	}

	// Through the upstream's capability: social subs are not looked up.
	up := auth0.New(auth0.Options{Issuer: "http://" + domain + "/", ClientID: "c", Mirror: m})
	res, ok := up.(upstream.ConnectionResolver)
	if !ok {
		t.Fatal("the Auth0 upstream with a mirror is not a ConnectionResolver")
	}
	if _, err := res.Connection(ctx, "google-oauth2|123"); !errors.Is(err, upstream.ErrConnectionKnown) {
		t.Errorf("Connection(google) err = %v, want ErrConnectionKnown", err)
	}
	if got, err := res.Connection(ctx, second); err != nil || got != "Partners-DB" {
		t.Errorf("resolver Connection(second) = %q, %v", got, err)
	}
	if _, ok := auth0.New(auth0.Options{Issuer: "http://" + domain + "/", ClientID: "c"}).(upstream.ConnectionResolver); ok {
		t.Error("the Auth0 upstream without a mirror is a ConnectionResolver")
	}
}

// The Management API down: an error, on which the caller keeps the prefix.
func TestMirrorConnectionFailsFast(t *testing.T) {
	t.Parallel()
	tenant, _, _, m := startMirror(t, nil, nil)
	sub, err := tenant.AddUser(devidp.User{Email: "cy@example.com", Password: "pw", Connection: "Partners-DB"})
	if err != nil {
		t.Fatal(err)
	}
	tenant.ManagementDown(true)
	if got, err := m.Connection(context.Background(), sub); err == nil {
		t.Errorf("Connection while down = %q, nil error", got)
	}
	if _, err := m.Connection(context.Background(), "auth0|nobody"); err == nil {
		t.Error("Connection of an unknown user: nil error")
	}
	tenant.ManagementDown(false)
	if got, err := m.Connection(context.Background(), sub); err != nil || got != "Partners-DB" {
		t.Errorf("Connection back up = %q, %v", got, err)
	}
}
