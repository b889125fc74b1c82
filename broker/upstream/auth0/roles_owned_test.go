package auth0_test

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/usher-oidc/usher/grants"
)

// A role the user already held in Auth0 (an administrator gave it there)
// is not usher's: an invitation granting it too leaves it out of
// assigned_roles, and taking the invitation's role back, or erasing the
// user, removes from Auth0 only what usher assigned.
func TestMirrorTakesBackOnlyWhatItAssigned(t *testing.T) {
	t.Parallel()
	tenant, _, st, m := startMirror(t, nil, nil)
	runMirror(t, m)
	ctx := t.Context()
	sub, usr := signUp(t, tenant, st, "ines@example.com")
	if err := tenant.AssignRole(sub, "admin"); err != nil {
		t.Fatal(err)
	}
	inv := redeem(t, st, usr, sub, []string{"admin", "viewer"}, nil)
	if err := m.EnqueueRedemption(ctx, sub, inv); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, m, inv.ID, "synced")
	if got := tenant.UserRoles(sub); !slices.Equal(got, []string{"admin", "viewer"}) {
		t.Fatalf("Auth0 roles = %v", got)
	}
	md := usherMD(t, tenant, sub)
	if want := []any{"viewer"}; !reflect.DeepEqual(md["assigned_roles"], want) {
		t.Errorf("assigned_roles = %v, want %v (admin was the administrator's)", md["assigned_roles"], want)
	}

	for _, role := range []string{"admin", "viewer"} {
		if _, err := st.RemoveGrantRole(ctx, usr, role, time.Now()); err != nil {
			t.Fatal(err)
		}
		ev := grants.OutboxEvent{ID: "evt-" + role, Type: grants.EventGrantChanged, UserID: usr, UpstreamUsers: []string{sub},
			Detail: map[string]string{"removed_role": role}}
		if err := m.Consume(ctx, nil, ev); err != nil {
			t.Fatal(err)
		}
	}
	waitQueueDrained(t, m)
	if got := tenant.UserRoles(sub); !slices.Equal(got, []string{"admin"}) {
		t.Errorf("Auth0 roles after both revocations = %v, want [admin]: usher assigned only viewer", got)
	}
	md = usherMD(t, tenant, sub)
	roles, _ := md["roles"].([]any)
	owned, _ := md["assigned_roles"].([]any)
	if len(roles) != 0 || len(owned) != 0 {
		t.Errorf("app_metadata.usher after the revocations = %v", md)
	}
}
