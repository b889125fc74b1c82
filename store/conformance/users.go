package conformance

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/store/errs"
)

// runUsers is the user list, sign out everywhere and erase (RunGrants runs it).
func runUsers(t *testing.T, newStore func(t *testing.T, clock *Clock) grants.Store) {
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, ctx context.Context, s grants.Store, clock *Clock)
	}{
		{"Users/List", testListUsers},
		{"Users/SignOut", testSignOutUser},
		{"Users/Erase", testEraseUser},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clock := NewClock(start())
			tc.fn(t, t.Context(), newStore(t, clock), clock)
		})
	}
}

func userIDs(us []grants.User) []string {
	ids := []string{}
	for _, u := range us {
		ids = append(ids, u.ID)
	}
	return ids
}

// listAll pages through ListUsers with page size limit.
func listAllUsers(t *testing.T, ctx context.Context, s grants.Store, q string, limit int) []string {
	t.Helper()
	var ids []string
	cursor := ""
	for range 20 {
		page, next, err := s.ListUsers(ctx, grants.UserFilter{Query: q, Limit: limit, Cursor: cursor})
		must(t, "list users", err)
		ids = append(ids, userIDs(page)...)
		if next == "" {
			return ids
		}
		cursor = next
	}
	t.Fatalf("list users %q: no end after 20 pages", q)
	return nil
}

func testListUsers(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	now := clock.Now()
	for _, u := range []struct{ sub, email, id string }{
		{"auth0|g", "grace@example.com", "u-g"},
		{"auth0|gh", "Grace.H@Example.com", "u-gh"},
		{"auth0|a", "ada@example.com", "u-a"},
		{"auth0|n", "", "u-n"},
		{"auth0|b", "bob@example.org", "u-b"},
	} {
		_, _, err := s.ResolveIdentity(ctx, identity(u.sub), grants.Profile{Email: u.email}, u.id, now)
		must(t, "resolve "+u.id, err)
	}
	all := []string{"u-n", "u-a", "u-b", "u-gh", "u-g"} // by lower(email); no email first
	for _, tc := range []struct {
		q     string
		limit int
		want  []string
	}{
		{"", 2, all},
		{"", 100, all},
		{"GRA", 1, []string{"u-gh", "u-g"}},
		{"grace@", 10, []string{"u-g"}},
		{"b", 10, []string{"u-b"}},
		{"nobody", 10, nil},
	} {
		if got := listAllUsers(t, ctx, s, tc.q, tc.limit); !slices.Equal(got, tc.want) {
			t.Errorf("list q=%q limit=%d = %v, want %v", tc.q, tc.limit, got, tc.want)
		}
	}
	// An email change moves the entry; the old prefix no longer finds it.
	_, _, err := s.ResolveIdentity(ctx, identity("auth0|a"), grants.Profile{Email: "zed@example.com"}, "u-x", now)
	must(t, "change email", err)
	if got := listAllUsers(t, ctx, s, "ada", 10); len(got) != 0 {
		t.Errorf("old email prefix still lists %v", got)
	}
	if got := listAllUsers(t, ctx, s, "zed", 10); !slices.Equal(got, []string{"u-a"}) {
		t.Errorf("new email prefix lists %v, want [u-a]", got)
	}
	_, _, err = s.ListUsers(ctx, grants.UserFilter{Cursor: "!!not a cursor"})
	wantErr(t, "bad cursor", err, errs.ErrBadCursor)
}

func testSignOutUser(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	now := clock.Now()
	_, _, err := s.ResolveIdentity(ctx, identity("auth0|1"), grants.Profile{Email: "ada@example.com"}, "u-1", now)
	must(t, "resolve", err)
	_, err = s.AddRoles(ctx, "u-1", []string{"member"}, now)
	must(t, "add roles", err)
	at := now.Add(time.Minute)
	ev := grants.OutboxEvent{ID: "so-1", Type: grants.EventUserSignedOutEverywhere, At: at, UserID: "u-1"}
	g, err := s.SignOutUser(ctx, "u-1", at, ev)
	must(t, "sign out", err)
	g2, err := s.GetGrant(ctx, "u-1")
	must(t, "get grant", err)
	for _, g := range []*grants.Grant{g, g2} {
		if g.SignedOutAt == nil || !g.SignedOutAt.Equal(at) || !slices.Equal(g.Roles, []string{"member"}) {
			t.Fatalf("grant after sign-out: %+v", g)
		}
		if !g.SignedOut(at) || !g.SignedOut(time.Time{}) || g.SignedOut(at.Add(time.Millisecond)) {
			t.Fatalf("SignedOut around %v is wrong", at)
		}
	}
	if ids := eventIDs(g2.Outbox); !slices.Equal(ids, []string{"so-1"}) {
		t.Fatalf("grant outbox = %v, want [so-1]", ids)
	}
	wantClaim(t, ctx, s, "after sign-out", at, grants.UserOutboxID("u-1"), true)
}

func testEraseUser(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	now := clock.Now()
	id := identity("auth0|erase")
	_, _, err := s.ResolveIdentity(ctx, id, grants.Profile{Email: "Erin@Example.com", Name: "Erin"}, "u-e", now)
	must(t, "resolve", err)
	must(t, "link", s.LinkIdentity(ctx, grants.Identity{Issuer: "https://other.example/", Subject: "x", UserID: "u-e"}))
	_, err = s.AddRoles(ctx, "u-e", []string{"member"}, now)
	must(t, "add roles", err)
	_, err = s.SetGrantClaim(ctx, "u-e", "crm_id", "C-1", now)
	must(t, "set claim", err)
	_, _, err = s.ResolveIdentity(ctx, identity("auth0|keep"), grants.Profile{Email: "erin@example.com"}, "u-k", now)
	must(t, "resolve other", err)

	at := now.Add(time.Minute)
	ev := grants.OutboxEvent{ID: "er-1", Type: grants.EventUserErased, At: at, UserID: "u-e"}
	must(t, "erase", s.EraseUser(ctx, "u-e", at, ev))

	_, err = s.GetUser(ctx, "u-e")
	wantErr(t, "get erased user", err, grants.ErrNotFound)
	byEmail, err := s.UsersByEmail(ctx, "erin@example.com")
	must(t, "by email", err)
	if ids := userIDs(byEmail); !slices.Equal(ids, []string{"u-k"}) {
		t.Fatalf("UsersByEmail after erase = %v, want [u-k]", ids)
	}
	idents, err := s.Identities(ctx, "u-e")
	must(t, "identities", err)
	if len(idents) != 0 {
		t.Fatalf("identities after erase: %+v", idents)
	}
	if got := listAllUsers(t, ctx, s, "", 10); !slices.Equal(got, []string{"u-k"}) {
		t.Fatalf("list after erase = %v, want [u-k]", got)
	}
	g, err := s.GetGrant(ctx, "u-e")
	must(t, "grant", err)
	if len(g.Roles) != 0 || len(g.Claims) != 0 || g.SignedOutAt == nil || !g.SignedOutAt.Equal(at) {
		t.Fatalf("grant after erase: %+v", g)
	}
	if ids := eventIDs(g.Outbox); !slices.Equal(ids, []string{"er-1"}) {
		t.Fatalf("grant outbox after erase = %v, want [er-1]", ids)
	}
	wantErr(t, "erase again", s.EraseUser(ctx, "u-e", at), grants.ErrNotFound)

	// The same upstream account signs in again: a new user, without grants.
	u, created, err := s.ResolveIdentity(ctx, id, grants.Profile{Email: "erin@example.com"}, "u-new", at)
	must(t, "sign in again", err)
	if !created || u.ID != "u-new" {
		t.Fatalf("sign-in after erase: user %s created=%v, want a new u-new", u.ID, created)
	}
	g, err = s.GetGrant(ctx, "u-new")
	must(t, "new grant", err)
	if len(g.Roles) != 0 || len(g.Claims) != 0 || g.SignedOutAt != nil {
		t.Fatalf("new user's grant: %+v", g)
	}
}
