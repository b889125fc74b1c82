package e2e

import (
	"net/url"
	"slices"
	"testing"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
)

// invitations.default_roles go to every new user; invitations.claims_namespace
// prefixes the invitation's claims in tokens (roles stay "roles").
func TestDefaultRolesAndClaimsNamespace(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{Configure: func(c *config.Config) {
		c.Invitations.DefaultRoles = []string{"member"}
		c.Invitations.ClaimsNamespace = "https://example.com/"
	}})
	// A plain self-sign-up: the default role only.
	a := newAgent(t, d.SPAURL)
	code, v := a.signIn(d, "self@example.com", "password-123456", true)
	if c := jwtClaims(t, exchangeCode(t, d, code, v).IDToken); !slices.Equal(rolesOf(c), []string{"member"}) {
		t.Fatalf("self sign-up roles: %v", c["roles"])
	}
	// An invitee: default role + the invitation's, claims namespaced.
	api := funnelToken(t, d, "invitations:write invitations:read")
	inv := invite(t, d, api, map[string]any{"email": "ns@example.com", "roles": []string{"customer"}, "claims": map[string]any{"crm_id": "C-5"}, "send_email": false})
	b := newAgent(t, d.SPAURL)
	resp, body, v2 := b.signInWithInvitation(d, tokenOf(inv["url"].(string)), "signup",
		url.Values{"email": {"ns@example.com"}, "password": {"password-123456"}, "name": {"N"}})
	tr := exchangeCode(t, d, b.callbackOf(resp, body).Get("code"), v2)
	for _, jwt := range []string{tr.IDToken, tr.AccessToken} {
		c := jwtClaims(t, jwt)
		if !slices.Equal(rolesOf(c), []string{"member", "customer"}) || c["https://example.com/crm_id"] != "C-5" || c["crm_id"] != nil {
			t.Fatalf("namespaced token claims: roles %v, claims %v", c["roles"], c)
		}
	}
}
