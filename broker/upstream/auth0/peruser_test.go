package auth0_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/usher-oidc/usher/grants"
)

// Three replicas share one Redis and one Auth0 tenant, and one Auth0 user
// redeems many invitations at once: every job reads app_metadata.usher,
// merges and writes it back, so two replicas working the same user at the
// same time would lose one's update. The per-user lease makes them take
// turns: every invitation and claim reaches the metadata.
func TestMirrorOneUserAcrossReplicas(t *testing.T) {
	t.Parallel()
	const n = 24
	r := startReplicas(t, 3, 1000, 100)
	sub, usr := signUp(t, r.tenant, r.st, "busy@example.com")
	var ids []string
	for i := range n {
		inv := redeem(t, r.st, usr, sub, nil, map[string]any{fmt.Sprintf("k%02d", i): i})
		if err := r.m[i%len(r.m)].EnqueueRedemption(t.Context(), sub, inv); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, inv.ID)
	}
	for _, m := range r.m {
		runMirror(t, m)
	}
	for _, id := range ids {
		waitStatus(t, r.m[0], id, "synced")
	}
	md := usherMD(t, r.tenant, sub)
	got, _ := md["invitations"].([]any)
	claims := storedClaims(t, r.tenant, sub)
	var missing []string
	for i, id := range ids {
		if !slices.Contains(got, any(id)) {
			missing = append(missing, id)
		}
		if _, ok := claims[fmt.Sprintf("k%02d", i)]; !ok {
			missing = append(missing, fmt.Sprintf("claim k%02d", i))
		}
	}
	if len(missing) > 0 {
		t.Fatalf("app_metadata.usher lost %d of %d updates: %v", len(missing), 2*n, missing)
	}
}

// A revocation whose job runs after the role was granted anew (its job
// retried, or queued behind the new redemption) leaves the role: the mirror
// follows the grant, not the order its jobs ran in.
func TestMirrorRevocationAfterRegrant(t *testing.T) {
	t.Parallel()
	tenant, _, st, m := startMirror(t, nil, nil)
	ctx := t.Context()
	sub, usr := signUp(t, tenant, st, "dora@example.com")
	inv1 := redeem(t, st, usr, sub, []string{"editor"}, map[string]any{"region": "eu"})
	if err := m.EnqueueRedemption(ctx, sub, inv1); err != nil {
		t.Fatal(err)
	}
	stop := runMirror(t, m)
	waitStatus(t, m, inv1.ID, "synced")
	stop()

	// Taken back, then granted again, while the mirror is down; the
	// re-grant's job happens to run first.
	for _, take := range []func() error{
		func() error { _, err := st.RemoveGrantRole(ctx, usr, "editor", time.Now()); return err },
		func() error { _, err := st.RemoveGrantClaim(ctx, usr, "region", time.Now()); return err },
	} {
		if err := take(); err != nil {
			t.Fatal(err)
		}
	}
	inv2 := redeem(t, st, usr, sub, []string{"editor"}, map[string]any{"region": "us"})
	if err := m.EnqueueRedemption(ctx, sub, inv2); err != nil {
		t.Fatal(err)
	}
	revoked := grants.OutboxEvent{ID: "evt-revoke", Type: grants.EventGrantChanged, UserID: usr, UpstreamUsers: []string{sub},
		Detail: map[string]string{"removed_role": "editor", "removed_claim": "region"}}
	if err := m.Consume(ctx, nil, revoked); err != nil {
		t.Fatal(err)
	}
	runMirror(t, m)
	waitQueueDrained(t, m)
	if got := tenant.UserRoles(sub); !slices.Equal(got, []string{"editor"}) {
		t.Errorf("Auth0 roles = %v, want [editor]: the grant holds it again", got)
	}
	if c := storedClaims(t, tenant, sub); c["region"] != "us" {
		t.Errorf("app_metadata.usher claims = %v, want region us", c)
	}
}
