package grants_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/internal/testkit"
)

// An unverified but matching email waits for verification: one record with
// one event (not repeated), found by the user's email; the redemption once
// verified clears it; expiry still applies; another address never waits.
func TestAwaitVerification(t *testing.T) {
	cases := []struct {
		name, policy, invited, email string
		advance                      time.Duration // before the verified redemption
		wantAwait                    error
		wantRedeem                   error
	}{
		{"exact", grants.MatchExact, "ada2@example.com", "Ada2@example.com", time.Hour, nil, nil},
		{"domain", grants.MatchDomain, "team@example.com", "bob@example.com", time.Hour, nil, nil},
		{"expired meanwhile", grants.MatchExact, "ada2@example.com", "ada2@example.com", 8 * 24 * time.Hour, nil, grants.ErrInvitationExpired},
		{"another address", grants.MatchExact, "ada2@example.com", "eve@example.com", 0, grants.ErrEmailMismatch, grants.ErrEmailMismatch},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st, _ := testkit.OpenBolt(t)
			ctx := t.Context()
			clock := time.Now()
			svc := grants.NewService(grants.ServiceOptions{Store: st, Now: func() time.Time { return clock }})
			noMail := false
			inv, token, _, err := svc.Create(ctx, grants.CreateRequest{Email: c.invited, Roles: []string{"customer"}, EmailMatch: c.policy, SendEmail: &noMail}, "client:funnel")
			if err != nil {
				t.Fatal(err)
			}
			hash := grants.HashToken(token)
			who := grants.Redeemer{UserID: "usr_ada", Identity: "iss|auth0|1", Email: c.email}
			if _, _, _, err := svc.Redeem(ctx, hash, who); !errors.Is(err, c.wantAwait) && !errors.Is(err, grants.ErrEmailUnverified) {
				t.Fatalf("unverified redemption: %v", err)
			}
			for range 2 { // the second call records nothing more
				if _, err := svc.AwaitVerification(ctx, hash, who); !errors.Is(err, c.wantAwait) || (err == nil) != (c.wantAwait == nil) {
					t.Fatalf("AwaitVerification = %v, want %v", err, c.wantAwait)
				}
			}
			stored := testkit.Invitation(t, st, inv.ID)
			if c.wantAwait != nil {
				if stored.AwaitingVerification != nil || len(stored.Outbox) != 1 {
					t.Fatalf("a refused wait was recorded: %+v, outbox %v", stored.AwaitingVerification, outboxTypes(stored))
				}
				return
			}
			a := stored.AwaitingVerification
			if a == nil || a.UserID != "usr_ada" || a.Identity != "iss|auth0|1" || !a.Since.Equal(clock) ||
				!slices.Equal(outboxTypes(stored), []string{grants.EventInvitationCreated, grants.EventInvitationAwaitingVerification}) {
				t.Fatalf("awaiting: %+v, outbox %v", a, outboxTypes(stored))
			}
			found, err := svc.AwaitingVerificationOf(ctx, "usr_ada")
			if err != nil || len(found) != 1 || found[0].ID != inv.ID {
				t.Fatalf("AwaitingVerificationOf = %v, %v", found, err)
			}
			if other, _ := svc.AwaitingVerificationOf(ctx, "usr_eve"); len(other) != 0 {
				t.Fatalf("another user's wait was found: %v", other)
			}

			clock = clock.Add(c.advance)
			who.EmailVerified = true
			_, _, _, err = svc.Redeem(ctx, hash, who)
			if !errors.Is(err, c.wantRedeem) || (err == nil) != (c.wantRedeem == nil) {
				t.Fatalf("verified redemption = %v, want %v", err, c.wantRedeem)
			}
			if err == nil {
				if got := testkit.Invitation(t, st, inv.ID); got.AwaitingVerification != nil || got.Status != grants.StatusRedeemed {
					t.Fatalf("after the redemption: status %s, awaiting %+v", got.Status, got.AwaitingVerification)
				}
			}
		})
	}
}
