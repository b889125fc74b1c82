package admin

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/usher-oidc/usher/grants"
)

func TestAPIUsers(t *testing.T) {
	h, store := testAPI(t)
	ctx := t.Context()
	for _, u := range []struct{ id, email string }{{"u-g", "grace@example.com"}, {"u-gh", "Grace.H@example.com"}, {"u-a", "ada@example.com"}} {
		if _, _, err := store.ResolveIdentity(ctx, grants.Identity{Issuer: "https://idp.example.com/", Subject: "s-" + u.id},
			grants.Profile{Email: u.email}, u.id, h.Now()); err != nil {
			t.Fatal(err)
		}
	}
	h.Invitations = grants.NewService(grants.ServiceOptions{Store: store, Now: h.Now,
		UpstreamSubjects: func(_ context.Context, id string) ([]string, error) { return []string{"auth0|" + id}, nil }})
	mux := mounted(h)

	ids := func(a answer) []string {
		var out []string
		users, _ := a.body["users"].([]any)
		for _, u := range users {
			out = append(out, u.(map[string]any)["id"].(string))
		}
		return out
	}
	for _, tc := range []struct {
		path string
		want []string
		next bool
	}{
		{"/api/users", []string{"u-a", "u-gh", "u-g"}, false},
		{"/api/users?q=GRACE", []string{"u-gh", "u-g"}, false},
		{"/api/users?q=gr&limit=1", []string{"u-gh"}, true},
		{"/api/users?email=GRACE@example.com", []string{"u-g"}, false},
	} {
		a := call(t, mux, "GET", tc.path, "read", "")
		if got := ids(a); a.status != http.StatusOK || !slices.Equal(got, tc.want) || (a.body["next_cursor"] != nil) != tc.next {
			t.Errorf("GET %s: %d %v, want %v", tc.path, a.status, a.body, tc.want)
		}
	}

	// An invitation u-g redeemed: its email becomes a pseudonym on erase.
	inv := &grants.Invitation{ID: "inv-1", TokenHash: "h1", Email: "grace@example.com", Roles: []string{"member"},
		Status: grants.StatusPending, CreatedAt: h.Now(), ExpiresAt: h.Now().Add(time.Hour), EmailMatch: "any"}
	if _, err := store.CreateInvitation(ctx, inv); err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.RedeemInvitation(ctx, "h1", grants.Redemption{UserID: "u-g", At: h.Now()}); err != nil {
		t.Fatal(err)
	}

	wantProblem(t, call(t, mux, "POST", "/api/users/u-g/sign-out", "read", ""), http.StatusForbidden, "insufficient-scope")
	if a := call(t, mux, "POST", "/api/users/u-g/sign-out", "write", ""); a.status != http.StatusNoContent {
		t.Fatalf("sign out: %d %v", a.status, a.body)
	}
	g, err := store.GetGrant(ctx, "u-g")
	if err != nil || g.SignedOutAt == nil || !slices.Equal(g.Roles, []string{"member"}) {
		t.Fatalf("grant after sign-out: %+v %v", g, err)
	}
	wantProblem(t, call(t, mux, "POST", "/api/users/nobody/sign-out", "write", ""), http.StatusNotFound, "not-found")

	if a := call(t, mux, "DELETE", "/api/users/u-g", "write", ""); a.status != http.StatusNoContent {
		t.Fatalf("erase: %d %v", a.status, a.body)
	}
	wantProblem(t, call(t, mux, "DELETE", "/api/users/u-g", "write", ""), http.StatusNotFound, "not-found")
	if a := call(t, mux, "GET", "/api/users?q=grace", "read", ""); !slices.Equal(ids(a), []string{"u-gh"}) {
		t.Errorf("list after erase: %v", a.body)
	}
	got, err := store.GetInvitation(ctx, "inv-1")
	if err != nil || got.Email != grants.ErasedEmail("u-g") || got.Status != grants.StatusRedeemed {
		t.Fatalf("redeemed invitation after erase: %+v %v", got, err)
	}
	g, err = store.GetGrant(ctx, "u-g")
	if err != nil || len(g.Roles) != 0 || len(g.Outbox) != 2 {
		t.Fatalf("grant after erase: %+v %v", g, err)
	}
	erased := g.Outbox[len(g.Outbox)-1]
	if erased.Type != grants.EventUserErased || erased.Detail["roles"] != "member" || !slices.Equal(erased.UpstreamUsers, []string{"auth0|u-g"}) || erased.Actor != "client:funnel" {
		t.Errorf("user.erased event: %+v", erased)
	}
}
