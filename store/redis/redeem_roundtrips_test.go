package redis_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/usher-oidc/usher/grants"
)

// A redemption that records its event sends the writes that must precede
// the invitation's (its pending-merge entry, its outbox entry) in one round
// trip, confirmed before the invitation's write, which goes with the
// outbox's second mark: 5 round trips on one master (8 the first time, its
// scripts loaded: the create before it runs others), where each of those writes went alone before (7 and 8).
// The grant holds the invitation's role after it, and no pending-merge
// entry is left. A count, not a timing.
func TestRedeemInvitationRoundTrips(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	st, rdb, hook := countedStore(t, uniquePrefix())
	now := time.Now().UTC()
	for i, want := range []int64{8, 5} {
		inv := pendingInvitation(fmt.Sprintf("inv-rt-%d", i), now)
		if _, err := st.CreateInvitation(ctx, inv); err != nil {
			t.Fatal(err)
		}
		user := fmt.Sprintf("usr_rt_%d", i)
		ev := grants.OutboxEvent{ID: fmt.Sprintf("ev-rt-%d", i), Type: grants.EventInvitationRedeemed, At: now}
		before := hook.n.Load()
		_, g, err := st.RedeemInvitation(ctx, inv.TokenHash, grants.Redemption{UserID: user, At: now, Events: []grants.OutboxEvent{ev}})
		if err != nil {
			t.Fatal(err)
		}
		if n := hook.n.Load() - before; n != want {
			t.Errorf("redemption %d: %d round trips, want %d", i, n, want)
		}
		if g == nil || !slices.Contains(g.Roles, "member") {
			t.Errorf("redemption %d: grant %+v, want the invitation's role", i, g)
		}
		if n, err := rdb.HLen(ctx, st.Prefix()+"{g:"+user+"}:p").Result(); err != nil || n != 0 {
			t.Errorf("redemption %d: %d pending-merge entries left (%v), want none", i, n, err)
		}
	}
}

// The service's redemption checks the invitation, then redeems it: the
// store starts from the record the check read (grants.ReadMemo), so the
// whole use case takes 6 round trips on one master instead of 8. A record
// changed in between is caught by the write's version check: an
// invitation the redemption hook revokes is not redeemed.
func TestServiceRedeemRoundTrips(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	st, _, hook := countedStore(t, uniquePrefix())
	svc := grants.NewService(grants.ServiceOptions{Store: st})
	create := func(email string) string {
		t.Helper()
		_, token, _, err := svc.Create(ctx, grants.CreateRequest{Email: email, Roles: []string{"member"}}, "client:test")
		if err != nil {
			t.Fatal(err)
		}
		hash, _ := grants.ParseToken(token)
		return hash
	}
	for i, want := range []int64{-1, 6} { // the first loads the scripts
		hash := create(fmt.Sprintf("svc-rt-%d@example.com", i))
		before := hook.n.Load()
		_, g, _, err := svc.Redeem(ctx, hash, grants.Redeemer{UserID: fmt.Sprintf("usr_svc_%d", i)})
		if err != nil || g == nil || !slices.Contains(g.Roles, "member") {
			t.Fatalf("redemption %d: grant %+v, %v", i, g, err)
		}
		if n := hook.n.Load() - before; want > 0 && n != want {
			t.Errorf("redemption %d: %d round trips, want %d", i, n, want)
		}
	}

	hash := create("svc-revoked@example.com")
	_, g, _, err := svc.Redeem(ctx, hash, grants.Redeemer{UserID: "usr_svc_revoked", Approve: func(ctx context.Context, inv *grants.Invitation) (map[string]any, error) {
		_, err := svc.Revoke(context.WithoutCancel(ctx), inv.ID, "test")
		return nil, err
	}})
	if !errors.Is(err, grants.ErrInvitationRevoked) {
		t.Errorf("an invitation revoked during the redemption hook: grant %+v, %v; want ErrInvitationRevoked", g, err)
	}
	held, err := st.GetGrant(ctx, "usr_svc_revoked")
	if err == nil && held != nil && slices.Contains(held.Roles, "member") {
		t.Errorf("the revoked invitation's role was granted: %+v", held)
	}
}

// A revocation that records its event: the record's read, the outbox
// entry (confirmed before the write), then the write with the outbox's
// second mark, 3 round trips on one master. A count, not a timing.
func TestRevokeInvitationRoundTrips(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	st, _, hook := countedStore(t, uniquePrefix())
	now := time.Now().UTC()
	for i, want := range []int64{-1, 3} { // the first loads the script
		inv := pendingInvitation(fmt.Sprintf("inv-rv-%d", i), now)
		if _, err := st.CreateInvitation(ctx, inv); err != nil {
			t.Fatal(err)
		}
		ev := grants.OutboxEvent{ID: fmt.Sprintf("ev-rv-%d", i), Type: grants.EventInvitationRevoked, At: now}
		before := hook.n.Load()
		got, err := st.RevokeInvitation(ctx, inv.ID, now, ev)
		if err != nil || got.Status != grants.StatusRevoked {
			t.Fatalf("revocation %d: %+v, %v", i, got, err)
		}
		if n := hook.n.Load() - before; want > 0 && n != want {
			t.Errorf("revocation %d: %d round trips, want %d", i, n, want)
		}
	}
}
