package conformance

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/store/errs"
)

// RunGrants runs the grants.Store suite. newStore must return a fresh, empty
// store whose notion of now is clock.Now, and clean it up with t.Cleanup.
func RunGrants(t *testing.T, newStore func(t *testing.T, clock *Clock) grants.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, ctx context.Context, s grants.Store, clock *Clock)
	}{
		{"Users/ResolveIdentity", testResolveIdentity},
		{"Users/ConcurrentFirstSignIn", testResolveIdentityConcurrent},
		{"Users/ByEmail", testUsersByEmail},
		{"Users/LinkIdentity", testLinkIdentity},
		{"Grants", testGrants},
		{"Invitations/CreateGet", testInvitationCreateGet},
		{"Invitations/ExternalIDDedupe", testInvitationExternalID},
		{"Invitations/Redeem", testInvitationRedeem},
		{"Invitations/RedeemRefusals", testInvitationRedeemRefusals},
		{"Invitations/ConcurrentRedeem", testInvitationConcurrentRedeem},
		{"Invitations/Revoke", testInvitationRevoke},
		{"Invitations/Decline", testInvitationDecline},
		{"Invitations/DeclineRacesRedeem", testInvitationDeclineRacesRedeem},
		{"Invitations/ReplaceToken", testInvitationReplaceToken},
		{"Invitations/Update", testInvitationUpdate},
		{"Invitations/ListFilters", testInvitationListFilters},
		{"Invitations/ListPagination", testInvitationListPagination},
		{"Lists/BadCursor", testListBadCursor},
		{"Idempotency", testIdempotency},
		{"Idempotency/Concurrent", testIdempotencyConcurrent},
		{"Idempotency/Expiry", testIdempotencyExpiry},
		{"Jobs", testJobs},
		{"Jobs/Order", testJobsOrder},
		{"Jobs/ConcurrentClaim", testJobsConcurrentClaim},
		{"BadInput", testGrantsBadInput},
		{"Invitations/RedeemExtraClaims", testInvitationRedeemExtraClaims},
		{"Audit", testAudit},
		{"Jobs/Peek", testJobsPeek},
		{"Audit/Idempotent", testAuditIdempotent},
		{"Outbox/Claim", testOutboxClaim},
		{"Outbox/ConcurrentClaim", testOutboxConcurrentClaim},
		{"Outbox/Ack", testOutboxAck},
		{"Outbox/AckUnknown", testOutboxAckUnknown},
		{"Outbox/Transitions", testOutboxTransitions},
		{"Outbox/WriterDuringLease", testOutboxWriterDuringLease},
		{"Outbox/RoundTrip", testOutboxRoundTrip},
		{"Outbox/Grants", testOutboxGrants},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clock := NewClock(start())
			tc.fn(t, t.Context(), newStore(t, clock), clock)
		})
	}
}

func identity(sub string) grants.Identity {
	return grants.Identity{
		Issuer: "https://tenant.example.auth0.com/", Subject: sub,
		Connection: "Username-Password-Authentication", Email: sub + "@example.com", EmailVerified: true,
	}
}

func testResolveIdentity(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	now := clock.Now()
	id := identity("auth0|ada")
	p := grants.Profile{Email: "Ada@Example.com", EmailVerified: true, Name: "Ada", Picture: "https://pic.example/ada"}
	u, created, err := s.ResolveIdentity(ctx, id, p, "user-1", now)
	must(t, "first sign-in", err)
	if !created || u.ID != "user-1" || u.Email != p.Email || !u.EmailVerified || u.Name != "Ada" || u.Picture != p.Picture {
		t.Fatalf("first sign-in: created=%v user %+v", created, u)
	}
	if !u.CreatedAt.Equal(now) || !u.LastLoginAt.Equal(now) {
		t.Fatalf("first sign-in times: %+v, want %v", u, now)
	}
	got, err := s.GetUser(ctx, "user-1")
	must(t, "get user", err)
	same(t, "get user", u, got)
	ids, err := s.Identities(ctx, "user-1")
	must(t, "identities", err)
	if len(ids) != 1 || ids[0].Issuer != id.Issuer || ids[0].Subject != id.Subject || ids[0].UserID != "user-1" {
		t.Fatalf("identities: %+v", ids)
	}

	clock.Advance(time.Hour)
	later := clock.Now()
	u2, created, err := s.ResolveIdentity(ctx, id, grants.Profile{Email: p.Email, EmailVerified: true, Name: "Ada Lovelace"}, "user-2", later)
	must(t, "second sign-in", err)
	if created || u2.ID != "user-1" || u2.Name != "Ada Lovelace" || !u2.LastLoginAt.Equal(later) || !u2.CreatedAt.Equal(now) {
		t.Fatalf("second sign-in: created=%v user %+v", created, u2)
	}
	got, err = s.GetUser(ctx, "user-1")
	must(t, "get user after refresh", err)
	same(t, "profile refreshed", u2, got)
	_, err = s.GetUser(ctx, "user-2")
	wantErr(t, "unused new user id", err, grants.ErrNotFound)
	_, err = s.GetUser(ctx, "nobody")
	wantErr(t, "get unknown user", err, grants.ErrNotFound)
	ids, err = s.Identities(ctx, "nobody")
	must(t, "identities of unknown user", err)
	if len(ids) != 0 {
		t.Fatalf("identities of unknown user: %+v", ids)
	}
}

func testResolveIdentityConcurrent(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	id := identity("google-oauth2|123")
	users := make([]*grants.User, 20)
	var mu sync.Mutex
	createdCount := 0
	errs := concurrently(20, func(i int) error {
		u, created, err := s.ResolveIdentity(ctx, id, grants.Profile{Email: "g@example.com"}, fmt.Sprintf("user-%d", i), clock.Now())
		if err == nil {
			mu.Lock()
			defer mu.Unlock()
			users[i] = u
			if created {
				createdCount++
			}
		}
		return err
	})
	if n := countNil(t, "concurrent first sign-in", errs); n != 20 {
		t.Fatalf("%d of 20 sign-ins succeeded", n)
	}
	if createdCount != 1 {
		t.Fatalf("%d sign-ins created a user, want exactly 1", createdCount)
	}
	for i, u := range users {
		if u.ID != users[0].ID {
			t.Fatalf("sign-in %d resolved to %s, sign-in 0 to %s", i, u.ID, users[0].ID)
		}
	}
	found, err := s.UsersByEmail(ctx, "g@example.com")
	must(t, "users by email", err)
	if len(found) != 1 {
		t.Fatalf("%d users exist for one identity, want 1", len(found))
	}
}

func testUsersByEmail(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	now := clock.Now()
	_, _, err := s.ResolveIdentity(ctx, identity("auth0|1"), grants.Profile{Email: "Ada@Example.com"}, "u-1", now)
	must(t, "resolve 1", err)
	_, _, err = s.ResolveIdentity(ctx, identity("google-oauth2|1"), grants.Profile{Email: "ada@example.com"}, "u-2", now.Add(time.Second))
	must(t, "resolve 2", err)
	_, _, err = s.ResolveIdentity(ctx, identity("auth0|2"), grants.Profile{Email: "bob@example.com"}, "u-3", now)
	must(t, "resolve 3", err)

	byID := func(us []grants.User) []string {
		var ids []string
		for _, u := range us {
			ids = append(ids, u.ID)
		}
		slices.Sort(ids)
		return ids
	}
	got, err := s.UsersByEmail(ctx, "ADA@EXAMPLE.COM")
	must(t, "by email", err)
	if ids := byID(got); !slices.Equal(ids, []string{"u-1", "u-2"}) {
		t.Fatalf("UsersByEmail(ADA@EXAMPLE.COM) = %v, want [u-1 u-2]", ids)
	}
	got, err = s.UsersByEmail(ctx, "nobody@example.com")
	must(t, "by unknown email", err)
	if len(got) != 0 {
		t.Fatalf("unknown email matched %v", byID(got))
	}
	// A changed email moves the user.
	_, _, err = s.ResolveIdentity(ctx, identity("auth0|1"), grants.Profile{Email: "ada@new.example"}, "u-x", now)
	must(t, "resolve with new email", err)
	got, err = s.UsersByEmail(ctx, "ada@example.com")
	must(t, "by old email", err)
	if ids := byID(got); !slices.Equal(ids, []string{"u-2"}) {
		t.Fatalf("after email change, old email matches %v, want [u-2]", ids)
	}
	got, err = s.UsersByEmail(ctx, "Ada@New.Example")
	must(t, "by new email", err)
	if ids := byID(got); !slices.Equal(ids, []string{"u-1"}) {
		t.Fatalf("new email matches %v, want [u-1]", ids)
	}
}

func testLinkIdentity(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	now := clock.Now()
	_, _, err := s.ResolveIdentity(ctx, identity("auth0|1"), grants.Profile{Email: "a@example.com"}, "u-1", now)
	must(t, "resolve u-1", err)
	_, _, err = s.ResolveIdentity(ctx, identity("auth0|2"), grants.Profile{Email: "b@example.com"}, "u-2", now)
	must(t, "resolve u-2", err)

	google := identity("google-oauth2|1")
	google.UserID = "u-1"
	must(t, "link", s.LinkIdentity(ctx, google))
	must(t, "link again", s.LinkIdentity(ctx, google))
	ids, err := s.Identities(ctx, "u-1")
	must(t, "identities", err)
	if len(ids) != 2 {
		t.Fatalf("u-1 has %d identities after linking, want 2: %+v", len(ids), ids)
	}
	u, created, err := s.ResolveIdentity(ctx, identity("google-oauth2|1"), grants.Profile{}, "u-new", now)
	must(t, "sign in with linked identity", err)
	if created || u.ID != "u-1" {
		t.Fatalf("linked identity resolved to %s (created=%v), want u-1", u.ID, created)
	}
	taken := google
	taken.UserID = "u-2"
	wantErr(t, "link identity of another user", s.LinkIdentity(ctx, taken), grants.ErrConflict)
	orphan := identity("auth0|9")
	orphan.UserID = "nobody"
	wantErr(t, "link to unknown user", s.LinkIdentity(ctx, orphan), grants.ErrNotFound)
}

func testGrants(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	now := clock.Now()
	g, err := s.GetGrant(ctx, "u-1")
	must(t, "get empty grant", err)
	if len(g.Roles) != 0 || len(g.Claims) != 0 || len(g.Invitations) != 0 {
		t.Fatalf("grant of a user with none: %+v", g)
	}
	g, err = s.AddRoles(ctx, "u-1", []string{"member", "beta"}, now)
	must(t, "add roles", err)
	g, err = s.AddRoles(ctx, "u-1", []string{"beta", "admin"}, now)
	must(t, "add roles again", err)
	if !slices.Equal(g.Roles, []string{"member", "beta", "admin"}) {
		t.Fatalf("roles = %v, want [member beta admin]", g.Roles)
	}
	g, err = s.RemoveGrantRole(ctx, "u-1", "beta", now)
	must(t, "remove role", err)
	if !slices.Equal(g.Roles, []string{"member", "admin"}) {
		t.Fatalf("roles after remove = %v", g.Roles)
	}
	g, err = s.RemoveGrantRole(ctx, "u-1", "not-held", now)
	must(t, "remove role not held", err)
	if !slices.Equal(g.Roles, []string{"member", "admin"}) {
		t.Fatalf("roles after removing one not held = %v", g.Roles)
	}
	got, err := s.GetGrant(ctx, "u-1")
	must(t, "get grant", err)
	if got.UserID != "u-1" || !slices.Equal(got.Roles, []string{"member", "admin"}) {
		t.Fatalf("stored grant: %+v", got)
	}

	inv := invitation("inv-c", now)
	inv.Claims = map[string]any{"org": "acme", "plan": "pro"}
	_, err = s.CreateInvitation(ctx, inv)
	must(t, "create invitation", err)
	_, _, err = s.RedeemInvitation(ctx, inv.TokenHash, grants.Redemption{UserID: "u-1", At: now})
	must(t, "redeem", err)
	g, err = s.RemoveGrantClaim(ctx, "u-1", "org", now)
	must(t, "remove claim", err)
	same(t, "claims after remove", map[string]any{"plan": "pro"}, g.Claims)
	g, err = s.GetGrant(ctx, "u-1")
	must(t, "get grant after claim removal", err)
	same(t, "stored claims after remove", map[string]any{"plan": "pro"}, g.Claims)
	if !slices.Equal(g.Roles, []string{"member", "admin"}) || !slices.Equal(g.Invitations, []string{"inv-c"}) {
		t.Fatalf("grant after redemption: %+v", g)
	}
	g, err = s.SetGrantClaim(ctx, "u-1", "plan", map[string]any{"tier": "enterprise"}, now)
	must(t, "set claim", err)
	same(t, "claims after set", map[string]any{"plan": map[string]any{"tier": "enterprise"}}, g.Claims)
	g, err = s.GetGrant(ctx, "u-1")
	must(t, "get grant after set", err)
	same(t, "stored claims after set", map[string]any{"plan": map[string]any{"tier": "enterprise"}}, g.Claims)
}

func invitation(id string, now time.Time) *grants.Invitation {
	return &grants.Invitation{
		ID: id, TokenHash: "hash-" + id, Email: id + "@example.com",
		Roles: []string{"member"}, Claims: map[string]any{"org": "acme"},
		Metadata: map[string]any{"source": "funnel"}, ClientID: "spa", EmailMatch: "any",
		Inviter: "admin@example.com", Status: grants.StatusPending,
		CreatedAt: now, ExpiresAt: now.Add(7 * 24 * time.Hour), SendEmail: true, EmailStatus: "queued",
	}
}

func testInvitationCreateGet(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	inv := invitation("inv-1", clock.Now())
	inv.ExternalID = "crm-1"
	created, err := s.CreateInvitation(ctx, inv)
	must(t, "create", err)
	same(t, "created", inv, created)
	got, err := s.GetInvitation(ctx, "inv-1")
	must(t, "get", err)
	same(t, "get", inv, got)
	got, err = s.GetInvitationByTokenHash(ctx, inv.TokenHash)
	must(t, "get by token", err)
	same(t, "get by token", inv, got)

	dup := invitation("inv-1", clock.Now())
	dup.TokenHash = "other-hash"
	_, err = s.CreateInvitation(ctx, dup)
	wantErr(t, "create same id", err, grants.ErrConflict)
	_, err = s.GetInvitationByTokenHash(ctx, "other-hash")
	wantErr(t, "token of refused create", err, grants.ErrNotFound)
	_, err = s.GetInvitation(ctx, "nope")
	wantErr(t, "get unknown", err, grants.ErrNotFound)
	_, err = s.GetInvitationByTokenHash(ctx, "nope")
	wantErr(t, "get unknown token", err, grants.ErrNotFound)
}

func testInvitationExternalID(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	mk := func(id string) *grants.Invitation {
		inv := invitation(id, clock.Now())
		inv.ExternalID = "crm-42"
		inv.ExpiresAt = clock.Now().Add(time.Hour)
		return inv
	}
	_, err := s.CreateInvitation(ctx, mk("inv-a"))
	must(t, "create a", err)
	existing, err := s.CreateInvitation(ctx, mk("inv-b"))
	wantErr(t, "create b with same external id", err, grants.ErrConflict)
	if existing == nil || existing.ID != "inv-a" {
		t.Fatalf("dedupe returned %+v, want inv-a", existing)
	}
	_, err = s.GetInvitation(ctx, "inv-b")
	wantErr(t, "refused duplicate stored", err, grants.ErrNotFound)
	_, err = s.GetInvitationByTokenHash(ctx, "hash-inv-b")
	wantErr(t, "refused duplicate's token stored", err, grants.ErrNotFound)
	// Another external id is independent.
	other := mk("inv-o")
	other.ExternalID = "crm-43"
	_, err = s.CreateInvitation(ctx, other)
	must(t, "create other external id", err)

	// Redeemed → a new one is allowed.
	_, _, err = s.RedeemInvitation(ctx, "hash-inv-a", grants.Redemption{UserID: "u-1", At: clock.Now()})
	must(t, "redeem a", err)
	_, err = s.CreateInvitation(ctx, mk("inv-c"))
	must(t, "create c after a redeemed", err)
	existing, err = s.CreateInvitation(ctx, mk("inv-d"))
	wantErr(t, "create d while c pending", err, grants.ErrConflict)
	if existing == nil || existing.ID != "inv-c" {
		t.Fatalf("dedupe returned %+v, want inv-c", existing)
	}
	// Revoked → allowed.
	_, err = s.RevokeInvitation(ctx, "inv-c", clock.Now())
	must(t, "revoke c", err)
	_, err = s.CreateInvitation(ctx, mk("inv-e"))
	must(t, "create e after c revoked", err)
	// Expired → allowed.
	clock.Advance(time.Hour)
	_, err = s.CreateInvitation(ctx, mk("inv-f"))
	must(t, "create f after e expired", err)
}

func testInvitationRedeem(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	now := clock.Now()
	_, err := s.AddRoles(ctx, "u-1", []string{"default"}, now)
	must(t, "default roles", err)
	inv1 := invitation("inv-1", now)
	inv1.Roles = []string{"a", "b"}
	inv1.Claims = map[string]any{"plan": "pro", "org": "acme"}
	inv2 := invitation("inv-2", now)
	inv2.Roles = []string{"b", "c"}
	inv2.Claims = map[string]any{"plan": "enterprise", "seat": "7"}
	for _, inv := range []*grants.Invitation{inv1, inv2} {
		_, err := s.CreateInvitation(ctx, inv)
		must(t, "create "+inv.ID, err)
	}

	clock.Advance(time.Minute)
	at := clock.Now()
	r := grants.Redemption{UserID: "u-1", Identity: "https://tenant.example.auth0.com/|auth0|1", Connection: "google-oauth2", At: at}
	inv, g, err := s.RedeemInvitation(ctx, inv1.TokenHash, r)
	must(t, "redeem 1", err)
	if inv.Status != grants.StatusRedeemed || inv.RedeemedBy != "u-1" || inv.RedeemedAt == nil || !inv.RedeemedAt.Equal(at) ||
		inv.RedeemedIdentity != r.Identity || inv.RedeemedConnection != r.Connection {
		t.Fatalf("redeemed invitation: %+v", inv)
	}
	if !slices.Equal(g.Roles, []string{"default", "a", "b"}) {
		t.Fatalf("roles after first redemption = %v", g.Roles)
	}
	same(t, "claims after first redemption", inv1.Claims, g.Claims)

	_, g, err = s.RedeemInvitation(ctx, inv2.TokenHash, r)
	must(t, "redeem 2", err)
	if !slices.Equal(g.Roles, []string{"default", "a", "b", "c"}) {
		t.Fatalf("roles after second redemption = %v", g.Roles)
	}
	// A held claim is never overwritten by a later invitation (plan stays "pro").
	same(t, "claims merged, held claims kept", map[string]any{"plan": "pro", "org": "acme", "seat": "7"}, g.Claims)
	if c := grants.ClaimConflicts(g, inv2.Claims); len(c) != 1 || c[0].Claim != "plan" || c[0].Kept != "pro" {
		t.Fatalf("conflicts after second redemption = %+v", c)
	}
	if !slices.Equal(g.Invitations, []string{"inv-1", "inv-2"}) || g.UserID != "u-1" || !g.UpdatedAt.Equal(at) {
		t.Fatalf("grant after second redemption: %+v", g)
	}
	stored, err := s.GetGrant(ctx, "u-1")
	must(t, "get grant", err)
	same(t, "stored grant", g, stored)
	stored2, err := s.GetInvitation(ctx, "inv-2")
	must(t, "get redeemed", err)
	if stored2.Status != grants.StatusRedeemed || stored2.RedeemedBy != "u-1" {
		t.Fatalf("stored redeemed invitation: %+v", stored2)
	}

	_, _, err = s.RedeemInvitation(ctx, inv1.TokenHash, grants.Redemption{UserID: "u-2", At: clock.Now()})
	wantErr(t, "redeem twice", err, grants.ErrInvitationRedeemed)
	g2, err := s.GetGrant(ctx, "u-2")
	must(t, "grant of the second redeemer", err)
	if len(g2.Roles) != 0 || len(g2.Claims) != 0 {
		t.Fatalf("refused redemption left a grant: %+v", g2)
	}
}

func testInvitationRedeemRefusals(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	now := clock.Now()
	revoked := invitation("inv-rev", now)
	expiring := invitation("inv-exp", now)
	expiring.ExpiresAt = now.Add(time.Hour)
	for _, inv := range []*grants.Invitation{revoked, expiring} {
		_, err := s.CreateInvitation(ctx, inv)
		must(t, "create "+inv.ID, err)
	}
	_, err := s.RevokeInvitation(ctx, "inv-rev", now)
	must(t, "revoke", err)
	_, _, err = s.RedeemInvitation(ctx, revoked.TokenHash, grants.Redemption{UserID: "u-1", At: now})
	wantErr(t, "redeem revoked", err, grants.ErrInvitationRevoked)

	clock.Set(expiring.ExpiresAt) // expired from ExpiresAt on
	_, _, err = s.RedeemInvitation(ctx, expiring.TokenHash, grants.Redemption{UserID: "u-1", At: clock.Now()})
	wantErr(t, "redeem expired", err, grants.ErrInvitationExpired)
	got, err := s.GetInvitation(ctx, "inv-exp")
	must(t, "get expired", err)
	if got.Status != grants.StatusPending || got.EffectiveStatus(clock.Now()) != grants.StatusExpired {
		t.Fatalf("expired invitation stored as %q", got.Status)
	}

	_, _, err = s.RedeemInvitation(ctx, "unknown-hash", grants.Redemption{UserID: "u-1", At: clock.Now()})
	wantErr(t, "redeem unknown", err, grants.ErrNotFound)
	g, err := s.GetGrant(ctx, "u-1")
	must(t, "grant", err)
	if len(g.Roles) != 0 || len(g.Invitations) != 0 {
		t.Fatalf("refused redemptions left a grant: %+v", g)
	}
}

func testInvitationConcurrentRedeem(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	inv := invitation("inv-race", clock.Now())
	inv.Roles = []string{"winner"}
	_, err := s.CreateInvitation(ctx, inv)
	must(t, "create", err)
	errs := concurrently(50, func(i int) error {
		_, _, err := s.RedeemInvitation(ctx, inv.TokenHash, grants.Redemption{UserID: fmt.Sprintf("u-%d", i), At: clock.Now()})
		return err
	})
	if n := countNil(t, "concurrent redeem", errs, grants.ErrInvitationRedeemed); n != 1 {
		t.Fatalf("%d of 50 concurrent redemptions succeeded, want exactly 1", n)
	}
	var holders []string
	for i := range 50 {
		g, err := s.GetGrant(ctx, fmt.Sprintf("u-%d", i))
		must(t, "grant", err)
		if slices.Contains(g.Roles, "winner") {
			holders = append(holders, g.UserID)
		}
	}
	got, err := s.GetInvitation(ctx, "inv-race")
	must(t, "get", err)
	if len(holders) != 1 || holders[0] != got.RedeemedBy {
		t.Fatalf("grant holders %v, invitation redeemed by %q; want exactly that one", holders, got.RedeemedBy)
	}
}

func testInvitationRevoke(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	now := clock.Now()
	_, err := s.CreateInvitation(ctx, invitation("inv-1", now))
	must(t, "create", err)
	inv, err := s.RevokeInvitation(ctx, "inv-1", now)
	must(t, "revoke", err)
	if inv.Status != grants.StatusRevoked || inv.RevokedAt == nil || !inv.RevokedAt.Equal(now) {
		t.Fatalf("revoked invitation: %+v", inv)
	}
	_, err = s.RevokeInvitation(ctx, "inv-1", now.Add(time.Minute))
	must(t, "revoke twice", err)
	got, err := s.GetInvitationByTokenHash(ctx, "hash-inv-1")
	must(t, "revoked token still resolves", err)
	if got.Status != grants.StatusRevoked {
		t.Fatalf("status by token = %q", got.Status)
	}

	_, err = s.CreateInvitation(ctx, invitation("inv-2", now))
	must(t, "create 2", err)
	_, _, err = s.RedeemInvitation(ctx, "hash-inv-2", grants.Redemption{UserID: "u-1", At: now})
	must(t, "redeem 2", err)
	_, err = s.RevokeInvitation(ctx, "inv-2", now)
	wantErr(t, "revoke redeemed", err, grants.ErrInvitationRedeemed)
	got, err = s.GetInvitation(ctx, "inv-2")
	must(t, "get 2", err)
	if got.Status != grants.StatusRedeemed {
		t.Fatalf("refused revoke changed status to %q", got.Status)
	}
	_, err = s.RevokeInvitation(ctx, "nope", now)
	wantErr(t, "revoke unknown", err, grants.ErrNotFound)
}

func testInvitationDecline(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	now := clock.Now()
	_, err := s.CreateInvitation(ctx, invitation("inv-1", now))
	must(t, "create", err)
	inv, err := s.DeclineInvitation(ctx, "inv-1", "u-1", now)
	must(t, "decline", err)
	if inv.Status != grants.StatusDeclined || inv.DeclinedAt == nil || !inv.DeclinedAt.Equal(now) || inv.DeclinedBy != "u-1" {
		t.Fatalf("declined invitation: %+v", inv)
	}
	if n := len(inv.Events); n == 0 || inv.Events[n-1].Type != "declined" || inv.Events[n-1].Detail["user_id"] != "u-1" {
		t.Fatalf("timeline of the declined invitation: %+v", inv.Events)
	}
	again, err := s.DeclineInvitation(ctx, "inv-1", "u-2", now.Add(time.Minute))
	must(t, "decline twice", err)
	if again.DeclinedBy != "u-1" || len(again.Events) != len(inv.Events) {
		t.Fatalf("declining twice changed the invitation: %+v", again)
	}
	got, err := s.GetInvitationByTokenHash(ctx, "hash-inv-1")
	must(t, "declined token still resolves", err)
	if got.Status != grants.StatusDeclined {
		t.Fatalf("status by token = %q", got.Status)
	}
	// Final: no redemption, revocation or new token afterwards.
	_, _, err = s.RedeemInvitation(ctx, "hash-inv-1", grants.Redemption{UserID: "u-1", At: now})
	wantErr(t, "redeem declined", err, grants.ErrInvitationDeclined)
	_, err = s.RevokeInvitation(ctx, "inv-1", now)
	wantErr(t, "revoke declined", err, grants.ErrInvitationDeclined)
	_, err = s.ReplaceInvitationToken(ctx, "inv-1", "hash-new", now.Add(time.Hour), now)
	wantErr(t, "resend declined", err, grants.ErrInvitationDeclined)
	g, err := s.GetGrant(ctx, "u-1")
	must(t, "grant", err)
	if slices.Contains(g.Roles, "member") {
		t.Fatalf("a declined invitation granted roles: %v", g.Roles)
	}

	// Only a pending, unexpired invitation can be declined.
	_, err = s.CreateInvitation(ctx, invitation("inv-2", now))
	must(t, "create 2", err)
	_, _, err = s.RedeemInvitation(ctx, "hash-inv-2", grants.Redemption{UserID: "u-1", At: now})
	must(t, "redeem 2", err)
	_, err = s.DeclineInvitation(ctx, "inv-2", "u-1", now)
	wantErr(t, "decline redeemed", err, grants.ErrInvitationRedeemed)
	_, err = s.CreateInvitation(ctx, invitation("inv-3", now))
	must(t, "create 3", err)
	_, err = s.RevokeInvitation(ctx, "inv-3", now)
	must(t, "revoke 3", err)
	_, err = s.DeclineInvitation(ctx, "inv-3", "u-1", now)
	wantErr(t, "decline revoked", err, grants.ErrInvitationRevoked)
	exp := invitation("inv-4", now)
	exp.ExpiresAt = now.Add(time.Minute)
	_, err = s.CreateInvitation(ctx, exp)
	must(t, "create 4", err)
	_, err = s.DeclineInvitation(ctx, "inv-4", "u-1", now.Add(time.Hour))
	wantErr(t, "decline expired", err, grants.ErrInvitationExpired)
	got, err = s.GetInvitation(ctx, "inv-4")
	must(t, "get 4", err)
	if got.Status != grants.StatusPending {
		t.Fatalf("refused decline changed status to %q", got.Status)
	}
	_, err = s.DeclineInvitation(ctx, "nope", "u-1", now)
	wantErr(t, "decline unknown", err, grants.ErrNotFound)

	list, _, err := s.ListInvitations(ctx, grants.InvitationFilter{Status: grants.StatusDeclined}, now)
	must(t, "list declined", err)
	if !slices.Equal(ids(list), []string{"inv-1"}) {
		t.Fatalf("status=declined lists %v, want [inv-1]", ids(list))
	}
	list, _, err = s.ListInvitations(ctx, grants.InvitationFilter{Status: grants.StatusPending}, now)
	must(t, "list pending", err)
	if slices.Contains(ids(list), "inv-1") {
		t.Fatalf("a declined invitation is listed as pending: %v", ids(list))
	}
}

// testInvitationDeclineRacesRedeem: Decline and Accept pressed at once (two
// tabs) — exactly one wins, and a declined invitation grants nothing.
func testInvitationDeclineRacesRedeem(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	for round := range 5 {
		id := fmt.Sprintf("inv-%d", round)
		inv := invitation(id, clock.Now())
		inv.Roles = []string{"winner-" + id}
		_, err := s.CreateInvitation(ctx, inv)
		must(t, "create", err)
		errs := concurrently(20, func(i int) error {
			if i%2 == 0 {
				_, err := s.DeclineInvitation(ctx, id, "u-decline", clock.Now())
				return err
			}
			_, _, err := s.RedeemInvitation(ctx, inv.TokenHash, grants.Redemption{UserID: fmt.Sprintf("u-%d", i), At: clock.Now()})
			return err
		})
		got, err := s.GetInvitation(ctx, id)
		must(t, "get", err)
		holders := 0
		for i := 1; i < 20; i += 2 {
			g, err := s.GetGrant(ctx, fmt.Sprintf("u-%d", i))
			must(t, "grant", err)
			if slices.Contains(g.Roles, "winner-"+id) {
				holders++
			}
		}
		switch got.Status {
		case grants.StatusDeclined:
			if holders != 0 {
				t.Fatalf("round %d: declined, yet %d accounts hold its role", round, holders)
			}
			for i, err := range errs {
				if i%2 == 1 && !errors.Is(err, grants.ErrInvitationDeclined) {
					t.Fatalf("round %d: a redemption after the decline answered %v", round, err)
				}
			}
		case grants.StatusRedeemed:
			if holders != 1 {
				t.Fatalf("round %d: redeemed, but %d accounts hold its role", round, holders)
			}
			for i, err := range errs {
				if i%2 == 0 && !errors.Is(err, grants.ErrInvitationRedeemed) {
					t.Fatalf("round %d: a decline after the redemption answered %v", round, err)
				}
			}
		default:
			t.Fatalf("round %d: status %q after the race", round, got.Status)
		}
	}
}

func testInvitationReplaceToken(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	now := clock.Now()
	inv := invitation("inv-1", now)
	inv.ExpiresAt = now.Add(time.Hour)
	_, err := s.CreateInvitation(ctx, inv)
	must(t, "create", err)
	clock.Advance(2 * time.Hour) // expired invitations can be resent
	newExp := clock.Now().Add(7 * 24 * time.Hour)
	got, err := s.ReplaceInvitationToken(ctx, "inv-1", "hash-new", newExp, clock.Now())
	must(t, "replace", err)
	if got.TokenHash != "hash-new" || !got.ExpiresAt.Equal(newExp) || got.Status != grants.StatusPending {
		t.Fatalf("replaced: %+v", got)
	}
	_, err = s.GetInvitationByTokenHash(ctx, "hash-inv-1")
	wantErr(t, "old token", err, grants.ErrNotFound)
	_, _, err = s.RedeemInvitation(ctx, "hash-inv-1", grants.Redemption{UserID: "u-1", At: clock.Now()})
	wantErr(t, "redeem old token", err, grants.ErrNotFound)
	got, err = s.GetInvitationByTokenHash(ctx, "hash-new")
	must(t, "new token", err)
	if got.ID != "inv-1" {
		t.Fatalf("new token resolves to %s", got.ID)
	}
	_, _, err = s.RedeemInvitation(ctx, "hash-new", grants.Redemption{UserID: "u-1", At: clock.Now()})
	must(t, "redeem new token", err)
	_, err = s.ReplaceInvitationToken(ctx, "inv-1", "hash-newer", newExp, clock.Now())
	wantErr(t, "replace redeemed", err, grants.ErrInvitationRedeemed)

	_, err = s.CreateInvitation(ctx, invitation("inv-2", clock.Now()))
	must(t, "create 2", err)
	_, err = s.RevokeInvitation(ctx, "inv-2", clock.Now())
	must(t, "revoke 2", err)
	_, err = s.ReplaceInvitationToken(ctx, "inv-2", "hash-2-new", newExp, clock.Now())
	wantErr(t, "replace revoked", err, grants.ErrInvitationRevoked)
	_, err = s.GetInvitationByTokenHash(ctx, "hash-2-new")
	wantErr(t, "token of refused replace", err, grants.ErrNotFound)
	_, err = s.ReplaceInvitationToken(ctx, "nope", "hash-x", newExp, clock.Now())
	wantErr(t, "replace unknown", err, grants.ErrNotFound)
}

func testInvitationUpdate(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	now := clock.Now()
	_, err := s.CreateInvitation(ctx, invitation("inv-1", now))
	must(t, "create", err)
	got, err := s.UpdateInvitation(ctx, "inv-1", func(inv *grants.Invitation) error {
		inv.EmailStatus = "sent"
		inv.Events = append(inv.Events, grants.Event{Type: "mailed", At: now, Detail: map[string]string{"to": inv.Email}})
		return nil
	})
	must(t, "update", err)
	stored, err := s.GetInvitation(ctx, "inv-1")
	must(t, "get", err)
	same(t, "returned vs stored", got, stored)
	if stored.EmailStatus != "sent" || len(stored.Events) == 0 || stored.Events[len(stored.Events)-1].Type != "mailed" {
		t.Fatalf("update not stored: %+v", stored)
	}

	boom := errors.New("boom")
	_, err = s.UpdateInvitation(ctx, "inv-1", func(inv *grants.Invitation) error {
		inv.EmailStatus = "failed"
		return boom
	})
	wantErr(t, "fn error", err, boom)
	_, err = s.UpdateInvitation(ctx, "inv-1", func(inv *grants.Invitation) error {
		inv.Status = grants.StatusRedeemed
		return nil
	})
	if err == nil {
		t.Fatal("UpdateInvitation let fn change Status")
	}
	after, err := s.GetInvitation(ctx, "inv-1")
	must(t, "get after refused updates", err)
	same(t, "refused updates changed nothing", stored, after)
	_, err = s.UpdateInvitation(ctx, "nope", func(*grants.Invitation) error { return nil })
	wantErr(t, "update unknown", err, grants.ErrNotFound)
}

func ids(invs []grants.Invitation) []string {
	out := make([]string, len(invs))
	for i, inv := range invs {
		out[i] = inv.ID
	}
	return out
}

func testInvitationListFilters(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	now := clock.Now()
	mk := func(id string, age time.Duration, email, client, ext string) *grants.Invitation {
		inv := invitation(id, now.Add(-age))
		inv.Email, inv.ClientID, inv.ExternalID = email, client, ext
		return inv
	}
	p1 := mk("p1", 5*time.Minute, "Ada@Example.com", "spa", "crm-1")
	p2 := mk("p2", 4*time.Minute, "bob@example.com", "admin", "")
	e1 := mk("e1", 3*time.Minute, "carol@example.com", "admin", "")
	e1.ExpiresAt = now.Add(-time.Minute)
	r1 := mk("r1", 2*time.Minute, "ada@example.com", "admin", "")
	v1 := mk("v1", time.Minute, "dan@example.com", "spa", "crm-2")
	for _, inv := range []*grants.Invitation{p1, p2, e1, r1, v1} {
		_, err := s.CreateInvitation(ctx, inv)
		must(t, "create "+inv.ID, err)
	}
	_, _, err := s.RedeemInvitation(ctx, r1.TokenHash, grants.Redemption{UserID: "u-1", At: now})
	must(t, "redeem r1", err)
	_, err = s.RevokeInvitation(ctx, "v1", now)
	must(t, "revoke v1", err)

	for _, c := range []struct {
		name string
		f    grants.InvitationFilter
		now  time.Time
		want []string
	}{
		{"all", grants.InvitationFilter{}, now, []string{"v1", "r1", "e1", "p2", "p1"}},
		{"pending", grants.InvitationFilter{Status: grants.StatusPending}, now, []string{"p2", "p1"}},
		{"expired", grants.InvitationFilter{Status: grants.StatusExpired}, now, []string{"e1"}},
		{"redeemed", grants.InvitationFilter{Status: grants.StatusRedeemed}, now, []string{"r1"}},
		{"revoked", grants.InvitationFilter{Status: grants.StatusRevoked}, now, []string{"v1"}},
		{"email any case", grants.InvitationFilter{Email: "ADA@example.COM"}, now, []string{"r1", "p1"}},
		{"email pending", grants.InvitationFilter{Email: "ada@example.com", Status: grants.StatusPending}, now, []string{"p1"}},
		{"client", grants.InvitationFilter{ClientID: "spa"}, now, []string{"v1", "p1"}},
		{"external id", grants.InvitationFilter{ExternalID: "crm-1"}, now, []string{"p1"}},
		{"external id revoked", grants.InvitationFilter{ExternalID: "crm-2", Status: grants.StatusRevoked}, now, []string{"v1"}},
		{"external id no match", grants.InvitationFilter{ExternalID: "crm-2", Status: grants.StatusPending}, now, nil},
		{"unknown email", grants.InvitationFilter{Email: "zed@example.com"}, now, nil},
		{"pending, later", grants.InvitationFilter{Status: grants.StatusPending}, now.Add(8 * 24 * time.Hour), nil},
		{"expired, later", grants.InvitationFilter{Status: grants.StatusExpired}, now.Add(8 * 24 * time.Hour), []string{"e1", "p2", "p1"}},
	} {
		got, next, err := s.ListInvitations(ctx, c.f, c.now)
		must(t, "list "+c.name, err)
		if !slices.Equal(ids(got), c.want) && !(len(got) == 0 && len(c.want) == 0) {
			t.Errorf("list %s = %v, want %v", c.name, ids(got), c.want)
		}
		if next != "" {
			t.Errorf("list %s: cursor %q on the only page", c.name, next)
		}
	}
	_, _, err = s.ListInvitations(ctx, grants.InvitationFilter{Cursor: "!!not a cursor!!"}, now)
	if err == nil {
		t.Error("ListInvitations accepted a garbage cursor")
	}
}

// A cursor the store did not issue is refused with errs.ErrBadCursor (and
// errs.ErrInvalid), never read as a storage failure: the API answers 400 and
// the admin page falls back to the first page on errors.Is alone.
func testListBadCursor(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	now := clock.Now()
	for _, id := range []string{"inv-1", "inv-2"} {
		inv := invitation(id, now)
		inv.ExternalID = "crm-" + id
		_, err := s.CreateInvitation(ctx, inv)
		must(t, "create "+id, err)
	}
	must(t, "append audit", s.AppendAudit(ctx, &grants.AuditRecord{ID: "a-1", At: now, Action: "invitation.created", Actor: "test", Target: "inv-1"}))
	b64 := base64.RawURLEncoding.EncodeToString
	for _, cursor := range []string{
		"!!not a cursor!!", "!!", "%%%", "eA==", // not unpadded base64url
		b64([]byte("x")), b64([]byte("NaN|inv-1")), b64([]byte("Inf|x")), // decodes, but to no position
	} {
		for _, c := range []struct {
			name string
			list func() error
		}{
			{"ListInvitations", func() error {
				_, _, err := s.ListInvitations(ctx, grants.InvitationFilter{Cursor: cursor}, now)
				return err
			}},
			{"ListInvitations(email)", func() error {
				_, _, err := s.ListInvitations(ctx, grants.InvitationFilter{Email: "inv-1@example.com", Cursor: cursor}, now)
				return err
			}},
			{"ListInvitations(external_id)", func() error {
				_, _, err := s.ListInvitations(ctx, grants.InvitationFilter{ExternalID: "crm-inv-1", Cursor: cursor}, now)
				return err
			}},
			{"ListAudit", func() error {
				_, _, err := s.ListAudit(ctx, grants.AuditFilter{Cursor: cursor})
				return err
			}},
		} {
			err := noPanic(t, c.name, c.list)
			if !errors.Is(err, errs.ErrBadCursor) || !errors.Is(err, errs.ErrInvalid) {
				t.Errorf("%s(cursor %q) = %v, want errs.ErrBadCursor and errs.ErrInvalid", c.name, cursor, err)
			}
		}
	}
	// Not a cursor problem: a valid listing is no ErrBadCursor.
	_, next, err := s.ListInvitations(ctx, grants.InvitationFilter{Limit: 1}, now)
	must(t, "list first page", err)
	if _, _, err := s.ListInvitations(ctx, grants.InvitationFilter{Limit: 1, Cursor: next}, now); err != nil {
		t.Errorf("ListInvitations with the cursor it issued: %v", err)
	}
}

func testInvitationListPagination(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	now := clock.Now()
	all := map[string]*grants.Invitation{}
	for i := range 23 {
		// Pairs share a creation time, so the order must break ties itself.
		inv := invitation(fmt.Sprintf("inv-%02d", i), now.Add(time.Duration(i/2)*time.Second))
		if i%3 == 0 {
			inv.Email = "Page@Example.com"
		}
		if i%2 == 1 {
			inv.ClientID = "odd"
		}
		_, err := s.CreateInvitation(ctx, inv)
		must(t, "create "+inv.ID, err)
		all[inv.ID] = inv
	}
	walk := func(name string, f grants.InvitationFilter, wantPages []int) []string {
		t.Helper()
		var seen []string
		var sizes []int
		for page := 0; ; page++ {
			if page > len(wantPages) {
				t.Fatalf("%s: more than %d pages", name, len(wantPages))
			}
			got, next, err := s.ListInvitations(ctx, f, now)
			must(t, name, err)
			sizes = append(sizes, len(got))
			for _, inv := range got {
				if slices.Contains(seen, inv.ID) {
					t.Fatalf("%s: %s listed twice", name, inv.ID)
				}
				if len(seen) > 0 {
					prev := all[seen[len(seen)-1]]
					if inv.CreatedAt.After(prev.CreatedAt) {
						t.Fatalf("%s: %s (%v) listed after newer %s (%v)", name, inv.ID, inv.CreatedAt, prev.ID, prev.CreatedAt)
					}
				}
				seen = append(seen, inv.ID)
			}
			if next == "" {
				break
			}
			f.Cursor = next
		}
		if !slices.Equal(sizes, wantPages) {
			t.Fatalf("%s: page sizes %v, want %v", name, sizes, wantPages)
		}
		return seen
	}
	seen := walk("all", grants.InvitationFilter{Limit: 10}, []int{10, 10, 3})
	if len(seen) != 23 || seen[0] != "inv-22" {
		t.Fatalf("all: listed %v", seen)
	}
	seen = walk("by email", grants.InvitationFilter{Email: "page@example.com", Limit: 3}, []int{3, 3, 2})
	for _, id := range seen {
		if all[id].Email != "Page@Example.com" {
			t.Fatalf("by email listed %s", id)
		}
	}
	seen = walk("by client", grants.InvitationFilter{ClientID: "odd", Limit: 5}, []int{5, 5, 1})
	for _, id := range seen {
		if all[id].ClientID != "odd" {
			t.Fatalf("by client listed %s", id)
		}
	}
	walk("default limit", grants.InvitationFilter{}, []int{23})
}

func testIdempotency(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	now := clock.Now()
	rec := func(key, hash string) *grants.IdempotencyRecord {
		return &grants.IdempotencyRecord{Key: key, RequestHash: hash, CreatedAt: now, ExpiresAt: now.Add(24 * time.Hour)}
	}
	got, err := s.ReserveIdempotencyKey(ctx, rec("k1", "h1"))
	if got != nil || err != nil {
		t.Fatalf("reserve new key = %+v, %v; want nil, nil", got, err)
	}
	got, err = s.ReserveIdempotencyKey(ctx, rec("k1", "h1"))
	wantErr(t, "reserve in progress", err, grants.ErrIdempotencyInProgress)
	if got == nil || got.RequestHash != "h1" || got.Status != 0 {
		t.Fatalf("in-progress record: %+v", got)
	}
	got, err = s.ReserveIdempotencyKey(ctx, rec("k1", "h2"))
	wantErr(t, "reserve other body in progress", err, grants.ErrIdempotencyMismatch)
	if got == nil || got.RequestHash != "h1" {
		t.Fatalf("mismatch record: %+v", got)
	}

	body := json.RawMessage(`{"id":"inv-1","status":"pending"}`)
	must(t, "complete", s.CompleteIdempotencyKey(ctx, "k1", 201, body))
	got, err = s.ReserveIdempotencyKey(ctx, rec("k1", "h1"))
	must(t, "reserve completed", err)
	if got == nil || got.Status != 201 || got.Key != "k1" {
		t.Fatalf("completed record: %+v", got)
	}
	same(t, "replayed response", body, got.Response)
	_, err = s.ReserveIdempotencyKey(ctx, rec("k1", "h2"))
	wantErr(t, "reserve other body completed", err, grants.ErrIdempotencyMismatch)
	wantErr(t, "complete unknown", s.CompleteIdempotencyKey(ctx, "nope", 200, nil), grants.ErrNotFound)

	_, err = s.ReserveIdempotencyKey(ctx, rec("k2", "h1"))
	must(t, "reserve k2", err)
	must(t, "release k2", s.ReleaseIdempotencyKey(ctx, "k2"))
	got, err = s.ReserveIdempotencyKey(ctx, rec("k2", "h2"))
	if got != nil || err != nil {
		t.Fatalf("reserve after release = %+v, %v; want nil, nil", got, err)
	}
	must(t, "release unknown", s.ReleaseIdempotencyKey(ctx, "nope"))
}

func testIdempotencyConcurrent(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	var mu sync.Mutex
	reserved := 0
	errs := concurrently(20, func(int) error {
		got, err := s.ReserveIdempotencyKey(ctx, &grants.IdempotencyRecord{Key: "k", RequestHash: "h", CreatedAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour)})
		if got == nil && err == nil {
			mu.Lock()
			reserved++
			mu.Unlock()
		}
		return err
	})
	countNil(t, "concurrent reserve", errs, grants.ErrIdempotencyInProgress)
	if reserved != 1 {
		t.Fatalf("%d of 20 concurrent reservations reserved the key, want exactly 1", reserved)
	}
}

func testIdempotencyExpiry(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	now := clock.Now()
	_, err := s.ReserveIdempotencyKey(ctx, &grants.IdempotencyRecord{Key: "k", RequestHash: "h1", CreatedAt: now, ExpiresAt: now.Add(time.Hour)})
	must(t, "reserve", err)
	must(t, "complete", s.CompleteIdempotencyKey(ctx, "k", 200, json.RawMessage(`{}`)))
	clock.Advance(time.Hour)
	got, err := s.ReserveIdempotencyKey(ctx, &grants.IdempotencyRecord{Key: "k", RequestHash: "h2", CreatedAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour)})
	if got != nil || err != nil {
		t.Fatalf("reserve over expired record = %+v, %v; want nil, nil", got, err)
	}
}

func job(id, kind string, runAt time.Time) *grants.Job {
	return &grants.Job{ID: id, Kind: kind, Payload: json.RawMessage(`{"to":"ada@example.com"}`), RunAt: runAt, CreatedAt: runAt}
}

func testJobs(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	t0 := clock.Now()
	lease := 5 * time.Minute
	must(t, "enqueue j1", s.EnqueueJob(ctx, job("j1", "mail", t0)))
	must(t, "enqueue j2", s.EnqueueJob(ctx, job("j2", "mail", t0.Add(time.Hour))))
	must(t, "enqueue j3", s.EnqueueJob(ctx, job("j3", "webhook", t0)))
	wantErr(t, "enqueue j1 again", s.EnqueueJob(ctx, job("j1", "mail", t0)), grants.ErrConflict)
	count := func(kind string, want int) {
		t.Helper()
		n, err := s.JobCount(ctx, kind)
		must(t, "job count", err)
		if n != want {
			t.Fatalf("JobCount(%s) = %d, want %d", kind, n, want)
		}
	}
	count("mail", 2)
	count("webhook", 1)
	count("none", 0)
	claim := func(now time.Time, want ...string) []grants.Job {
		t.Helper()
		got, err := s.ClaimJobs(ctx, "mail", now, 10, lease)
		must(t, "claim", err)
		var gotIDs []string
		for _, j := range got {
			gotIDs = append(gotIDs, j.ID)
		}
		if !slices.Equal(gotIDs, want) {
			t.Fatalf("claim at %v: got %v, want %v", now.Sub(t0), gotIDs, want)
		}
		return got
	}

	got := claim(t0, "j1")
	if got[0].Attempts != 1 || !got[0].LeaseUntil.Equal(t0.Add(lease)) || got[0].Kind != "mail" {
		t.Fatalf("claimed job: %+v", got[0])
	}
	same(t, "payload", json.RawMessage(`{"to":"ada@example.com"}`), got[0].Payload)
	claim(t0) // leased
	clock.Advance(lease - time.Second)
	claim(clock.Now()) // still leased
	clock.Advance(2 * time.Second)
	got = claim(clock.Now(), "j1") // the lease lapsed: a dead worker's job comes back
	if got[0].Attempts != 2 {
		t.Fatalf("attempts after second claim = %d", got[0].Attempts)
	}

	must(t, "retry", s.RetryJob(ctx, "j1", t0.Add(10*time.Minute), "smtp down"))
	claim(clock.Now())
	clock.Set(t0.Add(10 * time.Minute))
	got = claim(clock.Now(), "j1")
	if got[0].Attempts != 3 || got[0].LastError != "smtp down" {
		t.Fatalf("retried job: %+v", got[0])
	}
	count("mail", 2)
	must(t, "complete j1", s.CompleteJob(ctx, "j1"))
	count("mail", 1)
	wantErr(t, "complete j1 again", s.CompleteJob(ctx, "j1"), grants.ErrNotFound)
	wantErr(t, "retry completed", s.RetryJob(ctx, "j1", t0, ""), grants.ErrNotFound)
	claim(t0.Add(time.Hour), "j2")

	hooks, err := s.ClaimJobs(ctx, "webhook", t0, 10, lease)
	must(t, "claim webhook", err)
	if len(hooks) != 1 || hooks[0].ID != "j3" {
		t.Fatalf("claim webhook: %+v", hooks)
	}
}

func testJobsOrder(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	t0 := clock.Now()
	for i, d := range []time.Duration{3, 1, 2} {
		must(t, "enqueue", s.EnqueueJob(ctx, job(fmt.Sprintf("j%d", i), "order", t0.Add(d*time.Second))))
	}
	got, err := s.ClaimJobs(ctx, "order", t0.Add(10*time.Second), 2, time.Minute)
	must(t, "claim", err)
	if len(got) != 2 || got[0].ID != "j1" || got[1].ID != "j2" {
		t.Fatalf("claimed %v, want the two due first [j1 j2]", got)
	}
}

func testJobsConcurrentClaim(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	for i := range 30 {
		must(t, "enqueue", s.EnqueueJob(ctx, job(fmt.Sprintf("bulk-%02d", i), "bulk", clock.Now())))
	}
	var mu sync.Mutex
	claims := map[string]int{}
	errs := concurrently(10, func(int) error {
		// Bounded, so a backend that hands jobs out again fails instead of hanging.
		for range 100 {
			got, err := s.ClaimJobs(ctx, "bulk", clock.Now(), 2, time.Hour)
			if err != nil || len(got) == 0 {
				return err
			}
			mu.Lock()
			for _, j := range got {
				claims[j.ID]++
			}
			mu.Unlock()
		}
		return errors.New("still claiming after 100 rounds")
	})
	countNil(t, "concurrent claim", errs)
	if len(claims) != 30 {
		t.Fatalf("%d distinct jobs claimed, want 30", len(claims))
	}
	for id, n := range claims {
		if n != 1 {
			t.Errorf("job %s claimed %d times", id, n)
		}
	}
}

func testGrantsBadInput(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	now := clock.Now()
	_, err := s.CreateInvitation(ctx, invitation("inv-ok", now))
	must(t, "create valid", err)
	noInv := invitation("", now)
	noHash := invitation("inv-nohash", now)
	noHash.TokenHash = ""
	badInput(t, map[string]func() error{
		"ResolveIdentity(no iss/sub)": func() error {
			_, _, err := s.ResolveIdentity(ctx, grants.Identity{}, grants.Profile{}, "u-1", now)
			return err
		},
		"ResolveIdentity(no new user id)": func() error {
			_, _, err := s.ResolveIdentity(ctx, identity("auth0|x"), grants.Profile{}, "", now)
			return err
		},
		"LinkIdentity(empty)":            func() error { return s.LinkIdentity(ctx, grants.Identity{}) },
		"GetUser(\"\")":                  func() error { _, err := s.GetUser(ctx, ""); return err },
		"UsersByEmail(\"\")":             func() error { _, err := s.UsersByEmail(ctx, ""); return err },
		"Identities(\"\")":               func() error { _, err := s.Identities(ctx, ""); return err },
		"GetGrant(\"\")":                 func() error { _, err := s.GetGrant(ctx, ""); return err },
		"AddRoles(\"\")":                 func() error { _, err := s.AddRoles(ctx, "", []string{"r"}, now); return err },
		"RemoveGrantRole(\"\")":          func() error { _, err := s.RemoveGrantRole(ctx, "", "r", now); return err },
		"RemoveGrantClaim(\"\")":         func() error { _, err := s.RemoveGrantClaim(ctx, "", "k", now); return err },
		"SetGrantClaim(\"\")":            func() error { _, err := s.SetGrantClaim(ctx, "", "k", 1, now); return err },
		"SetGrantClaim(key \"\")":        func() error { _, err := s.SetGrantClaim(ctx, "u-1", "", 1, now); return err },
		"CreateInvitation(nil)":          func() error { _, err := s.CreateInvitation(ctx, nil); return err },
		"CreateInvitation(no id)":        func() error { _, err := s.CreateInvitation(ctx, noInv); return err },
		"CreateInvitation(no hash)":      func() error { _, err := s.CreateInvitation(ctx, noHash); return err },
		"GetInvitation(\"\")":            func() error { _, err := s.GetInvitation(ctx, ""); return err },
		"GetInvitationByTokenHash(\"\")": func() error { _, err := s.GetInvitationByTokenHash(ctx, ""); return err },
		"RedeemInvitation(\"\")": func() error {
			_, _, err := s.RedeemInvitation(ctx, "", grants.Redemption{UserID: "u-1", At: now})
			return err
		},
		"RedeemInvitation(no user)": func() error {
			_, _, err := s.RedeemInvitation(ctx, "hash-inv-ok", grants.Redemption{At: now})
			return err
		},
		"RevokeInvitation(\"\")": func() error { _, err := s.RevokeInvitation(ctx, "", now); return err },
		"ReplaceInvitationToken(no id)": func() error {
			_, err := s.ReplaceInvitationToken(ctx, "", "h", now.Add(time.Hour), now)
			return err
		},
		"ReplaceInvitationToken(no hash)": func() error {
			_, err := s.ReplaceInvitationToken(ctx, "inv-ok", "", now.Add(time.Hour), now)
			return err
		},
		"UpdateInvitation(\"\")": func() error {
			_, err := s.UpdateInvitation(ctx, "", func(*grants.Invitation) error { return nil })
			return err
		},
		"UpdateInvitation(nil fn)":   func() error { _, err := s.UpdateInvitation(ctx, "inv-ok", nil); return err },
		"ReserveIdempotencyKey(nil)": func() error { _, err := s.ReserveIdempotencyKey(ctx, nil); return err },
		"ReserveIdempotencyKey(no key)": func() error {
			_, err := s.ReserveIdempotencyKey(ctx, &grants.IdempotencyRecord{RequestHash: "h", ExpiresAt: now.Add(time.Hour)})
			return err
		},
		"CompleteIdempotencyKey(\"\")": func() error { return s.CompleteIdempotencyKey(ctx, "", 200, nil) },
		"ReleaseIdempotencyKey(\"\")":  func() error { return s.ReleaseIdempotencyKey(ctx, "") },
		"EnqueueJob(nil)":              func() error { return s.EnqueueJob(ctx, nil) },
		"EnqueueJob(no id)":            func() error { return s.EnqueueJob(ctx, job("", "mail", now)) },
		"EnqueueJob(no kind)":          func() error { return s.EnqueueJob(ctx, job("j", "", now)) },
		"ClaimJobs(\"\")":              func() error { _, err := s.ClaimJobs(ctx, "", now, 1, time.Minute); return err },
		"CompleteJob(\"\")":            func() error { return s.CompleteJob(ctx, "") },
		"RetryJob(\"\")":               func() error { return s.RetryJob(ctx, "", now, "") },
		"JobCount(\"\")":               func() error { _, err := s.JobCount(ctx, ""); return err },
	})
	got, err := s.GetInvitation(ctx, "inv-ok")
	must(t, "get valid after bad input", err)
	if got.Status != grants.StatusPending || got.TokenHash != "hash-inv-ok" {
		t.Fatalf("bad input changed a valid invitation: %+v", got)
	}
}

// A redemption's own claims (a hook's) are merged after the invitation's.
func testInvitationRedeemExtraClaims(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	inv := invitation("inv-x", clock.Now())
	inv.Claims = map[string]any{"plan": "pro", "org": "acme"}
	_, err := s.CreateInvitation(ctx, inv)
	must(t, "create", err)
	_, g, err := s.RedeemInvitation(ctx, inv.TokenHash, grants.Redemption{UserID: "u-x", Identity: "i|x", At: clock.Now(),
		Claims: map[string]any{"plan": "enterprise", "hooked": true}})
	must(t, "redeem", err)
	same(t, "claims", map[string]any{"plan": "enterprise", "org": "acme", "hooked": true}, g.Claims)
}

func testAudit(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	base := clock.Now()
	for i := range 25 {
		action := "invitation.created"
		if i%5 == 0 {
			action = "invitation.revoked"
		}
		rec := &grants.AuditRecord{ID: fmt.Sprintf("a%02d", i), At: base.Add(time.Duration(i) * time.Second), Action: action,
			Actor: "funnel", Target: fmt.Sprintf("inv-%d", i), Detail: map[string]string{"n": fmt.Sprint(i)}}
		must(t, "append", s.AppendAudit(ctx, rec))
	}
	var seen []string
	cursor := ""
	for page := 0; ; page++ {
		recs, next, err := s.ListAudit(ctx, grants.AuditFilter{Limit: 10, Cursor: cursor})
		must(t, "list", err)
		for _, r := range recs {
			seen = append(seen, r.ID)
		}
		if next == "" {
			break
		}
		cursor = next
		if page > 5 {
			t.Fatal("pagination does not end")
		}
	}
	if len(seen) != 25 || seen[0] != "a24" || seen[24] != "a00" {
		t.Fatalf("audit pages = %v, want a24…a00 once each", seen)
	}
	revoked, _, err := s.ListAudit(ctx, grants.AuditFilter{Action: "invitation.revoked"})
	must(t, "filter action", err)
	if len(revoked) != 5 {
		t.Fatalf("%d revoked records, want 5", len(revoked))
	}
	one, _, err := s.ListAudit(ctx, grants.AuditFilter{Target: "inv-7"})
	must(t, "filter target", err)
	if len(one) != 1 || one[0].Detail["n"] != "7" {
		t.Fatalf("target filter: %+v", one)
	}
	window, _, err := s.ListAudit(ctx, grants.AuditFilter{Since: base.Add(10 * time.Second), Until: base.Add(12 * time.Second)})
	must(t, "time window", err)
	if len(window) != 3 {
		t.Fatalf("time window: %d records, want 3", len(window))
	}
	if err := s.AppendAudit(ctx, &grants.AuditRecord{}); err == nil {
		t.Fatal("an empty audit record was accepted")
	}
	if _, _, err := s.ListAudit(ctx, grants.AuditFilter{Cursor: "!!"}); err == nil {
		t.Fatal("a garbage cursor was accepted")
	}
}

// PeekJobs reads without claiming: the jobs stay claimable, unchanged.
func testJobsPeek(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	now := clock.Now()
	for _, id := range []string{"j-c", "j-a", "j-b"} {
		must(t, "enqueue", s.EnqueueJob(ctx, &grants.Job{ID: id, Kind: "peek", Payload: []byte(`{"x":1}`), RunAt: now, LastError: "e-" + id}))
	}
	must(t, "other kind", s.EnqueueJob(ctx, &grants.Job{ID: "j-z", Kind: "other", Payload: []byte(`{}`), RunAt: now}))
	got, err := s.PeekJobs(ctx, "peek", 2)
	must(t, "peek", err)
	if len(got) != 2 || got[0].ID != "j-a" || got[1].ID != "j-b" || got[0].LastError != "e-j-a" || got[0].Attempts != 0 || string(got[0].Payload) != `{"x":1}` {
		t.Fatalf("peek = %+v", got)
	}
	claimed, err := s.ClaimJobs(ctx, "peek", now, 10, time.Minute)
	must(t, "claim after peek", err)
	if len(claimed) != 3 {
		t.Fatalf("peeking consumed jobs: %d claimable, want 3", len(claimed))
	}
	if _, err := s.PeekJobs(ctx, "peek", 0); err == nil {
		t.Fatal("limit 0 accepted")
	}
}
