package conformance

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/store/errs"
)

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
	inv.ExternalID, inv.Locale = "crm-1", "fr-CA"
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

// The record of a person awaiting email verification is stored with the
// invitation, listed through the email index, and cleared by the redemption.
func testInvitationAwaitingVerification(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	now := clock.Now()
	_, err := s.CreateInvitation(ctx, invitation("inv-av", now))
	must(t, "create", err)
	want := &grants.AwaitingVerification{UserID: "u-1", Identity: "iss|sub", Email: "inv-av@example.com", Since: now}
	_, err = s.UpdateInvitation(ctx, "inv-av", func(inv *grants.Invitation) error {
		inv.AwaitingVerification = want
		return nil
	})
	must(t, "update", err)
	listed, _, err := s.ListInvitations(ctx, grants.InvitationFilter{Status: grants.StatusPending, Email: "INV-AV@example.com"}, now)
	must(t, "list by email", err)
	if len(listed) != 1 || listed[0].AwaitingVerification == nil {
		t.Fatalf("listed by email: %+v", listed)
	}
	same(t, "awaiting verification", want, listed[0].AwaitingVerification)
	awaiting, err := s.AwaitingVerification(ctx, "u-1", now)
	must(t, "awaiting verification of u-1", err)
	if len(awaiting) != 1 || awaiting[0].ID != "inv-av" {
		t.Fatalf("awaiting verification of u-1: %+v", awaiting)
	}
	// A domain policy: sent to one address, accepted by another of the
	// domain; found by who accepted it.
	domain := invitation("inv-av-domain", now)
	domain.Email, domain.EmailMatch = "boss@acme.example", "domain"
	_, err = s.CreateInvitation(ctx, domain)
	must(t, "create (domain policy)", err)
	_, err = s.UpdateInvitation(ctx, "inv-av-domain", func(inv *grants.Invitation) error {
		inv.AwaitingVerification = &grants.AwaitingVerification{UserID: "u-2", Identity: "iss|dev", Email: "dev@acme.example", Since: now}
		return nil
	})
	must(t, "update (domain policy)", err)
	awaiting, err = s.AwaitingVerification(ctx, "u-2", now)
	must(t, "awaiting verification of u-2", err)
	if len(awaiting) != 1 || awaiting[0].ID != "inv-av-domain" {
		t.Fatalf("awaiting verification of u-2: %+v", awaiting)
	}
	awaiting, err = s.AwaitingVerification(ctx, "u-3", now)
	must(t, "awaiting verification of u-3", err)
	if len(awaiting) != 0 {
		t.Fatalf("another user's invitations: %+v", awaiting)
	}
	inv, _, err := s.RedeemInvitation(ctx, "hash-inv-av", grants.Redemption{UserID: "u-1", Identity: "iss|sub", At: now})
	must(t, "redeem", err)
	stored, err := s.GetInvitation(ctx, "inv-av")
	must(t, "get", err)
	if inv.AwaitingVerification != nil || stored.AwaitingVerification != nil {
		t.Fatalf("the redemption kept the awaiting record: %+v", stored.AwaitingVerification)
	}
	awaiting, err = s.AwaitingVerification(ctx, "u-1", now)
	must(t, "awaiting verification after the redemption", err)
	if len(awaiting) != 0 {
		t.Fatalf("a redeemed invitation still awaits: %+v", awaiting)
	}
	clock.Advance(8 * 24 * time.Hour)
	awaiting, err = s.AwaitingVerification(ctx, "u-2", clock.Now())
	must(t, "awaiting verification after expiry", err)
	if len(awaiting) != 0 {
		t.Fatalf("an expired invitation still awaits: %+v", awaiting)
	}
	_, err = s.AwaitingVerification(ctx, "", now)
	wantErr(t, "no user", err, errs.ErrInvalid)
}
