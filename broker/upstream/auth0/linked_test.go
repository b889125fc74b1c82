package auth0_test

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/usher-oidc/usher/broker/upstream"
	"github.com/usher-oidc/usher/devidp"
	"github.com/usher-oidc/usher/internal/testkit"
)

// Auth0 account linking turns the secondary's user_id into a 404: usher
// looks the identity up and updates the primary account instead of giving
// the job up as "user gone" (which it did before). An identity nobody holds
// is still gone (TestMirrorUnknownUserFails).
func TestMirrorFollowsLinkedAccount(t *testing.T) {
	t.Parallel()
	tenant, _, st, m := startMirror(t, nil, nil)
	ctx := t.Context()

	primary, _ := signUp(t, tenant, st, "pia@example.com")
	secondary, usr := signUp(t, tenant, st, "pia.work@example.com")
	inv := redeem(t, st, usr, secondary, []string{"editor", "viewer"}, map[string]any{"https://app.example.com/plan": "gold"})
	if err := m.EnqueueRedemption(ctx, secondary, inv); err != nil {
		t.Fatal(err)
	}
	if err := tenant.LinkUser(primary, secondary); err != nil {
		t.Fatal(err)
	}
	runMirror(t, m)
	waitStatus(t, m, inv.ID, "synced")
	if got := tenant.UserRoles(primary); !slices.Equal(got, []string{"editor", "viewer"}) {
		t.Errorf("the primary's roles = %v", got)
	}
	want := map[string]any{
		"roles":          []any{"editor", "viewer"},
		"assigned_roles": []any{"editor", "viewer"},
		"claims":         claimList("https://app.example.com/plan", "gold"),
		"invitations":    []any{inv.ID},
	}
	if got := usherMD(t, tenant, primary); !reflect.DeepEqual(got, want) {
		t.Errorf("the primary's app_metadata.usher = %v, want %v", got, want)
	}
	events := testkit.Invitation(t, st, inv.ID).Events
	if last := events[len(events)-1]; last.Type != upstream.EventMirrored || last.Detail["linked_to"] != primary {
		t.Errorf("last timeline event = %+v, want mirrored with linked_to %s", last, primary)
	}

	// A revocation for the secondary's sub reaches the primary too.
	if _, err := st.RemoveGrantRole(ctx, usr, "editor", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := m.EnqueueRevocation(ctx, secondary, "editor", ""); err != nil {
		t.Fatal(err)
	}
	waitQueueDrained(t, m)
	if got := tenant.UserRoles(primary); !slices.Equal(got, []string{"viewer"}) {
		t.Errorf("the primary's roles after revocation = %v", got)
	}
	if got := usherMD(t, tenant, primary)["roles"]; !reflect.DeepEqual(got, []any{"viewer"}) {
		t.Errorf("app_metadata.usher.roles after revocation = %v", got)
	}
}

// The sign-in lookups follow account linking as the mirror does: a sub
// linked into another account (its own read answers 404) gets its
// connection and its email's verification from its identity as the
// primary lists it, not "user gone"; a sub nobody holds stays an error.
func TestLookupsFollowLinkedAccount(t *testing.T) {
	t.Parallel()
	tenant, _, _, m := startMirror(t, nil, nil)
	ctx := t.Context()
	primary, err := tenant.AddUser(devidp.User{Email: "lee@example.com", Password: "pw", EmailVerified: true})
	if err != nil {
		t.Fatal(err)
	}
	secondary, err := tenant.AddUser(devidp.User{Email: "lee@partner.example", Password: "pw", EmailVerified: true, Connection: "Partners-DB"})
	if err != nil {
		t.Fatal(err)
	}
	if err := tenant.LinkUser(primary, secondary); err != nil {
		t.Fatal(err)
	}
	if got, err := m.Connection(ctx, secondary); err != nil || got != "Partners-DB" {
		t.Errorf("Connection(linked secondary) = %q, %v; want Partners-DB", got, err)
	}
	if email, verified, err := m.EmailVerified(ctx, secondary); err != nil || email != "lee@partner.example" || !verified {
		t.Errorf("EmailVerified(linked secondary) = %q, %v, %v; want lee@partner.example, true", email, verified, err)
	}
	if _, err := m.Connection(ctx, "auth0|nobody-holds-this"); err == nil {
		t.Error("Connection of an unknown sub: no error")
	}
	if _, _, err := m.EmailVerified(ctx, "auth0|nobody-holds-this"); err == nil {
		t.Error("EmailVerified of an unknown sub: no error")
	}
}
