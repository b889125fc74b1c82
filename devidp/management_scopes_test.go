package devidp_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/auth0/go-auth0/management"

	"github.com/usher-oidc/usher/devidp"
)

// A Management API token holds the scopes its application was granted, and
// each endpoint refuses a token without one it accepts, as Auth0 does:
// 403 insufficient_scope. A PATCH of app_metadata alone takes
// update:users_app_metadata; any other field needs update:users.
func TestManagementScopes(t *testing.T) {
	t.Parallel()
	srv, domain := startTenantWith(t, func(c *devidp.Config) {
		c.ManagementClients = []devidp.Client{
			{ID: "narrow", Secret: "narrow-secret", Scopes: []string{"read:users", "update:users_app_metadata"}},
			{ID: "all", Secret: "all-secret"},
		}
	})
	sub, err := srv.AddUser(devidp.User{Email: "sam@example.com", Password: "pw", EmailVerified: true})
	if err != nil {
		t.Fatal(err)
	}
	api := func(id, secret string) *management.Management {
		a, err := management.New(domain, management.WithInsecure(), management.WithClientCredentials(context.Background(), id, secret))
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	narrow, all := api("narrow", "narrow-secret"), api("all", "all-secret")
	ctx := t.Context()
	forbidden := func(what string, err error) {
		t.Helper()
		var me management.Error
		if err == nil || !errors.As(err, &me) || me.Status() != http.StatusForbidden || !strings.Contains(me.Error(), "Insufficient scope") {
			t.Errorf("%s with the narrow client: %v, want 403 Insufficient scope", what, err)
		}
	}
	if _, err := narrow.User.Read(ctx, sub); err != nil {
		t.Errorf("read:users reads a user: %v", err)
	}
	if err := narrow.User.Update(ctx, sub, &management.User{AppMetadata: &map[string]any{"plan": "pro"}}); err != nil {
		t.Errorf("update:users_app_metadata patches app_metadata: %v", err)
	}
	name := "Sam"
	forbidden("PATCH name", narrow.User.Update(ctx, sub, &management.User{Name: &name}))
	_, err = narrow.Role.List(ctx)
	forbidden("GET /roles", err)
	_, err = narrow.User.Roles(ctx, sub)
	forbidden("GET /users/{id}/roles", err)
	forbidden("POST /jobs/verification-email", narrow.Job.VerifyEmail(ctx, &management.Job{UserID: &sub}))
	if err := all.User.Update(ctx, sub, &management.User{Name: &name}); err != nil {
		t.Errorf("a client granted every scope patches the name: %v", err)
	}
	if _, err := all.Role.List(ctx); err != nil {
		t.Errorf("a client granted every scope lists roles: %v", err)
	}
}
