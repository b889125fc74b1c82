package conformance

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/usher-oidc/usher/grants"
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
		{"Invitations/AwaitingVerification", testInvitationAwaitingVerification},
		{"Users/RelinkIdentity", testRelinkIdentity},
		{"Invitations/ListFilters", testInvitationListFilters},
		{"Invitations/ListPagination", testInvitationListPagination},
		{"Invitations/Search", testInvitationSearch},
		{"Invitations/SearchUpdate", testInvitationSearchUpdate},
		{"Invitations/SearchBadCursor", testInvitationSearchBadCursor},
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
		{"Jobs/Fenced", testJobsFenced},
		{"Audit/Idempotent", testAuditIdempotent},
		{"Funnel", testFunnel},
		{"SinkBatch", testSinkBatch},
		{"Outbox/Claim", testOutboxClaim},
		{"Outbox/ConcurrentClaim", testOutboxConcurrentClaim},
		{"Outbox/Ack", testOutboxAck},
		{"Outbox/AckUnknown", testOutboxAckUnknown},
		{"Outbox/Transitions", testOutboxTransitions},
		{"Outbox/WriterDuringLease", testOutboxWriterDuringLease},
		{"Outbox/RoundTrip", testOutboxRoundTrip},
		{"Outbox/Grants", testOutboxGrants},
		{"Outbox/Batch", testOutboxBatch},
		{"Outbox/ReadAck", testOutboxReadAck},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clock := NewClock(start())
			tc.fn(t, t.Context(), newStore(t, clock), clock)
		})
	}
	runUsers(t, newStore)
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

// An identity moves from one user to another only from the user it is
// linked to; the listings follow it.
func testRelinkIdentity(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	now := clock.Now()
	x := grants.Identity{Issuer: "https://idp/", Subject: "auth0|x", Connection: "db", Email: "p@example.com"}
	y := grants.Identity{Issuer: "https://idp/", Subject: "google|y", Connection: "google", Email: "p@example.com", EmailVerified: true}
	target, _, err := s.ResolveIdentity(ctx, y, grants.Profile{Email: y.Email, EmailVerified: true}, "u-target", now)
	must(t, "resolve y", err)
	shell, _, err := s.ResolveIdentity(ctx, x, grants.Profile{Email: x.Email}, "u-shell", now)
	must(t, "resolve x", err)
	moved := x
	moved.UserID, moved.EmailVerified = target.ID, true
	wantErr(t, "relink to a missing user", s.RelinkIdentity(ctx, grants.Identity{Issuer: x.Issuer, Subject: x.Subject, UserID: "u-none"}, shell.ID), grants.ErrNotFound)
	wantErr(t, "relink an unknown identity", s.RelinkIdentity(ctx, grants.Identity{Issuer: x.Issuer, Subject: "nope", UserID: target.ID}, shell.ID), grants.ErrNotFound)
	wantErr(t, "relink from the wrong user", s.RelinkIdentity(ctx, moved, target.ID), grants.ErrConflict)
	must(t, "relink", s.RelinkIdentity(ctx, moved, shell.ID))
	wantErr(t, "relink again", s.RelinkIdentity(ctx, moved, shell.ID), grants.ErrConflict)
	u, created, err := s.ResolveIdentity(ctx, x, grants.Profile{}, "u-new", now)
	must(t, "resolve x after relink", err)
	if created || u.ID != target.ID {
		t.Fatalf("x resolves to %s (created %v), want %s", u.ID, created, target.ID)
	}
	ofTarget, err := s.Identities(ctx, target.ID)
	must(t, "identities of target", err)
	ofShell, err := s.Identities(ctx, shell.ID)
	must(t, "identities of shell", err)
	if len(ofTarget) != 2 || len(ofShell) != 0 {
		t.Fatalf("identities: target %+v, shell %+v", ofTarget, ofShell)
	}
}
