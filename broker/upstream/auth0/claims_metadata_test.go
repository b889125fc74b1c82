package auth0_test

import (
	"reflect"
	"testing"
	"time"
)

// Auth0 refuses app_metadata field names with "." or a leading "$" (devidp
// too), so a namespaced claim must travel as a value: usher stores claims as
// a list of {name, value}. Before, the whole update was refused (400) and
// the invitation's mirror failed.
func TestMirrorNamespacedClaims(t *testing.T) {
	t.Parallel()
	tenant, _, st, m := startMirror(t, nil, nil)
	runMirror(t, m)
	ctx := t.Context()

	sub, usr := signUp(t, tenant, st, "nina@example.com")
	const plan = "https://app.example.com/plan"
	inv := redeem(t, st, usr, sub, []string{"viewer"}, map[string]any{plan: "gold", "$tier": 2, "team": "red"})
	if err := m.EnqueueRedemption(ctx, sub, inv); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, m, inv.ID, "synced")
	want := map[string]any{
		"roles":          []any{"viewer"},
		"assigned_roles": []any{"viewer"},
		"claims":         claimList("$tier", float64(2), plan, "gold", "team", "red"),
		"invitations":    []any{inv.ID},
	}
	if got := usherMD(t, tenant, sub); !reflect.DeepEqual(got, want) {
		t.Errorf("app_metadata.usher = %v, want %v", got, want)
	}

	// Revoking the namespaced claim takes its entry out of the list.
	if _, err := st.RemoveGrantClaim(ctx, usr, plan, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := m.EnqueueRevocation(ctx, sub, "", plan); err != nil {
		t.Fatal(err)
	}
	waitQueueDrained(t, m)
	want["claims"] = claimList("$tier", float64(2), "team", "red")
	if got := usherMD(t, tenant, sub); !reflect.DeepEqual(got, want) {
		t.Errorf("app_metadata.usher after revocation = %v, want %v", got, want)
	}
}

// A tenant mirrored by an older usher holds claims as an object keyed by
// claim name: usher reads it and writes it back as the list, on a
// redemption and on a revocation alike.
func TestMirrorConvertsOldClaimsObject(t *testing.T) {
	t.Parallel()
	tenant, _, st, m := startMirror(t, nil, nil)
	runMirror(t, m)
	ctx := t.Context()
	old := func(sub string) {
		t.Helper()
		if err := tenant.PatchAppMetadata(sub, map[string]any{"usher": map[string]any{
			"roles": []any{"viewer"}, "claims": map[string]any{"tier": 1, "region": "eu"}, "invitations": []any{"inv-old"},
		}}); err != nil {
			t.Fatal(err)
		}
	}

	sub, usr := signUp(t, tenant, st, "olga@example.com")
	old(sub)
	inv := redeem(t, st, usr, sub, []string{"editor"}, map[string]any{"team": "red", "tier": 3})
	if err := m.EnqueueRedemption(ctx, sub, inv); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, m, inv.ID, "synced")
	want := map[string]any{
		"roles":          []any{"editor", "viewer"},
		"assigned_roles": []any{"editor", "viewer"},
		"claims":         claimList("region", "eu", "team", "red", "tier", float64(3)),
		"invitations":    []any{"inv-old", inv.ID},
	}
	if got := usherMD(t, tenant, sub); !reflect.DeepEqual(got, want) {
		t.Errorf("after a redemption: app_metadata.usher = %v, want %v", got, want)
	}

	sub2, _ := signUp(t, tenant, st, "otto@example.com")
	old(sub2)
	if err := m.EnqueueRevocation(ctx, sub2, "", "region"); err != nil {
		t.Fatal(err)
	}
	waitQueueDrained(t, m)
	want = map[string]any{"roles": []any{"viewer"}, "claims": claimList("tier", float64(1)), "invitations": []any{"inv-old"}}
	if got := usherMD(t, tenant, sub2); !reflect.DeepEqual(got, want) {
		t.Errorf("after a revocation: app_metadata.usher = %v, want %v", got, want)
	}
}
