package auth0_test

import (
	"slices"
	"testing"
	"time"

	"github.com/usher-oidc/usher/broker/upstream/auth0"
	"github.com/usher-oidc/usher/grants"
)

// readmeScopes are the scopes the README's set-up guide grants usher's
// machine-to-machine application (step 3), without the optional ones
// (create:roles, update:users).
var readmeScopes = []string{"read:users", "update:users_app_metadata", "read:roles", "create:role_members", "delete:role_members"}

// With exactly the scopes the guide lists, against a devidp that refuses
// what a token's scopes do not cover (as Auth0 does), every call usher
// makes works: the sign-in lookups, a redemption's roles and app_metadata,
// a revocation. Only the optional resend of the verification mail is
// refused, as the guide says.
func TestLeastPrivilegeScopesSuffice(t *testing.T) {
	t.Parallel()
	tenant, _, st, m := startMirror(t, readmeScopes, func(o *auth0.MirrorOptions) { o.CreateRoles = false })
	runMirror(t, m)
	ctx := t.Context()
	for _, role := range []string{"editor", "viewer"} {
		if _, err := tenant.CreateRole(role, ""); err != nil {
			t.Fatal(err)
		}
	}
	sub, usr := signUp(t, tenant, st, "lena@example.com")
	if has, err := m.HasAccount(ctx, "lena@example.com"); err != nil || !has {
		t.Errorf("HasAccount = %v, %v", has, err)
	}
	if got, err := m.Connection(ctx, sub); err != nil || got != "Username-Password-Authentication" {
		t.Errorf("Connection = %q, %v", got, err)
	}
	if _, verified, err := m.EmailVerified(ctx, sub); err != nil || !verified {
		t.Errorf("EmailVerified = %v, %v", verified, err)
	}
	inv := redeem(t, st, usr, sub, []string{"editor", "viewer"}, map[string]any{"plan": "gold"})
	if err := m.EnqueueRedemption(ctx, sub, inv); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, m, inv.ID, "synced")
	if got := tenant.UserRoles(sub); !slices.Equal(got, []string{"editor", "viewer"}) {
		t.Errorf("Auth0 roles after the redemption = %v", got)
	}
	if md := usherMD(t, tenant, sub); md["claims"] == nil {
		t.Errorf("app_metadata.usher after the redemption = %v", md)
	}
	if _, err := st.RemoveGrantRole(ctx, usr, "editor", time.Now()); err != nil {
		t.Fatal(err)
	}
	ev := grants.OutboxEvent{ID: "evt-revoke", Type: grants.EventGrantChanged, UserID: usr, UpstreamUsers: []string{sub},
		Detail: map[string]string{"removed_role": "editor"}}
	if err := m.Consume(ctx, nil, ev); err != nil {
		t.Fatal(err)
	}
	waitQueueDrained(t, m)
	if got := tenant.UserRoles(sub); !slices.Equal(got, []string{"viewer"}) {
		t.Errorf("Auth0 roles after the revocation = %v, want [viewer]", got)
	}
	if err := m.ResendVerification(ctx, sub); err == nil {
		t.Error("the verification resend succeeded without update:users")
	}
	for _, c := range tenant.ManagementCalls() {
		if c.Status == 403 && c.Path != "/api/v2/jobs/verification-email" {
			t.Errorf("refused for lack of scope: %s %s", c.Method, c.Path)
		}
	}
}
