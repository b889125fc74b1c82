package grants_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/internal/testkit"
)

func outboxTypes(inv *grants.Invitation) []string {
	var ts []string
	for _, e := range inv.Outbox {
		ts = append(ts, e.Type)
	}
	return ts
}

// Each use case records its event in the same write as its change, once;
// a refused or idempotent call records nothing.
func TestServiceRecordsOneEventPerChange(t *testing.T) {
	st, _ := testkit.OpenBolt(t)
	ctx := t.Context()
	clock := time.Now()
	sealed := 0
	svc := grants.NewService(grants.ServiceOptions{Store: st, Now: func() time.Time { return clock },
		SealLink: func(inv *grants.Invitation, token string) (string, error) { sealed++; return "sealed:" + token, nil }})

	mailed, token, _, err := svc.Create(ctx, grants.CreateRequest{Email: "m@example.com", Roles: []string{"viewer"}}, "client:funnel")
	if err != nil {
		t.Fatal(err)
	}
	stored := testkit.Invitation(t, st, mailed.ID)
	if got := outboxTypes(stored); !slices.Equal(got, []string{grants.EventInvitationCreated}) || stored.EmailStatus != "queued" {
		t.Fatalf("after create: outbox %v, email status %q", got, stored.EmailStatus)
	}
	ev := stored.Outbox[0]
	if ev.SealedLink != "sealed:"+token || ev.TokenHash != stored.TokenHash || ev.Actor != "client:funnel" || ev.Detail["roles"] != "viewer" {
		t.Fatalf("created event: %+v", ev)
	}
	noMail := false
	quiet, _, _, err := svc.Create(ctx, grants.CreateRequest{Email: "q@example.com", SendEmail: &noMail}, "client:funnel")
	if err != nil {
		t.Fatal(err)
	}
	if q := testkit.Invitation(t, st, quiet.ID); q.Outbox[0].SealedLink != "" || q.EmailStatus != "not_requested" || sealed != 1 {
		t.Fatalf("an unmailed invitation: event %+v, status %q, sealed %d links", q.Outbox[0], q.EmailStatus, sealed)
	}

	if _, _, err := svc.Resend(ctx, mailed.ID, "usr_admin"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Revoke(ctx, mailed.ID, "usr_admin"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Revoke(ctx, mailed.ID, "usr_admin"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.Resend(ctx, mailed.ID, "usr_admin"); !errors.Is(err, grants.ErrInvitationRevoked) {
		t.Fatalf("resend of a revoked invitation: %v", err)
	}
	want := []string{grants.EventInvitationCreated, grants.EventInvitationResent, grants.EventInvitationRevoked}
	if got := outboxTypes(testkit.Invitation(t, st, mailed.ID)); !slices.Equal(got, want) {
		t.Fatalf("outbox %v, want %v", got, want)
	}

	// Redeem: the event says who, how, and which claims were kept.
	if _, err := st.SetGrantClaim(ctx, "usr_1", "crm_id", "C-1", clock); err != nil {
		t.Fatal(err)
	}
	offer, tok, _, err := svc.Create(ctx, grants.CreateRequest{Email: "r@example.com", Claims: map[string]any{"crm_id": "C-2"}}, "client:funnel")
	if err != nil {
		t.Fatal(err)
	}
	hash, _ := grants.ParseToken(tok)
	if _, _, _, err := svc.Redeem(ctx, hash, grants.Redeemer{UserID: "usr_1", Identity: "iss|auth0|1", Connection: "google-oauth2",
		UpstreamUser: "auth0|1", Signup: true, Email: "r@example.com", EmailVerified: true}); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := svc.Redeem(ctx, hash, grants.Redeemer{UserID: "usr_2", Identity: "iss|auth0|2"}); !errors.Is(err, grants.ErrInvitationRedeemed) {
		t.Fatalf("second redemption: %v", err)
	}
	got := testkit.Invitation(t, st, offer.ID)
	if ts := outboxTypes(got); !slices.Equal(ts, []string{grants.EventInvitationCreated, grants.EventInvitationRedeemed}) {
		t.Fatalf("redeemed outbox %v", ts)
	}
	red := got.Outbox[1]
	if red.Actor != "usr_1" || red.UpstreamUser != "auth0|1" || !red.Signup || red.Detail["claims_kept"] != "crm_id" || len(red.Conflicts) != 1 {
		t.Fatalf("redeemed event: %+v", red)
	}

	// Expire: noted once per expiry, by one write.
	short := int64(60)
	late, _, _, err := svc.Create(ctx, grants.CreateRequest{Email: "e@example.com", ExpiresIn: &short, SendEmail: &noMail}, "client:funnel")
	if err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(2 * time.Minute)
	for range 2 {
		if _, err := svc.Expire(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if ts := outboxTypes(testkit.Invitation(t, st, late.ID)); !slices.Equal(ts, []string{grants.EventInvitationCreated, grants.EventInvitationExpired}) {
		t.Fatalf("expired outbox %v", ts)
	}
}
