package e2e

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
	"github.com/usher-oidc/usher/devidp"
)

// signInWith is agent.signIn with extra authorization parameters; it returns
// the callback's query (code or error).
func (a *agent) signInWith(d *app.Dev, email, password string, extra url.Values) (url.Values, string) {
	a.t.Helper()
	extra.Set("screen_hint", "signup")
	u, verifier, _ := authorizeURL(d, extra)
	resp, body := a.get(u)
	if !strings.HasPrefix(resp.Header.Get("Location"), a.stopAt) && !strings.Contains(resp.Header.Get("Location"), "error=") {
		resp, body = a.devidpForm(resp, body, "signup", url.Values{"email": {email}, "password": {password}, "name": {"T"}})
	}
	return a.callbackOf(resp, body), verifier
}

// The Auth0 sub, an Action's namespaced custom claim and the organization
// reach usher's ID token, access token and userinfo, and survive a refresh;
// usher's own claim of the same name wins; a restricted or unlisted
// upstream claim does not pass.
func TestUpstreamClaimsAndOrganization(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{
		IDPOrganizations: []devidp.Organization{{ID: "org_abc123", Name: "acme"}},
		Configure: func(c *config.Config) {
			c.Upstream.PassThroughClaims = []string{"https://example.com/plan", "https://example.com/tier"}
		},
	})
	d.IDP.SetIDTokenClaims(map[string]any{"https://example.com/plan": "pro", "https://example.com/other": "x", "sub": "evil"})
	a := newAgent(t, d.SPAURL)
	q, v := a.signInWith(d, "org@example.com", "password-123456", url.Values{"organization": {"org_abc123"}})
	if q.Get("code") == "" {
		t.Fatalf("sign-in: %v", q)
	}
	tr := exchangeCode(t, d, q.Get("code"), v)
	sub, ok := d.IDP.UserSub(devidp.ConnectionPassword, "org@example.com")
	if !ok {
		t.Fatal("no devidp user")
	}
	check := func(what string, c map[string]any) {
		t.Helper()
		if c["auth0_user_id"] != sub || c["https://example.com/plan"] != "pro" || c["org_id"] != "org_abc123" || c["org_name"] != "acme" {
			t.Fatalf("%s: upstream claims missing: %v", what, c)
		}
		if c["https://example.com/other"] != nil || c["https://example.com/tier"] != nil || strings.HasPrefix(c["sub"].(string), "auth0|") {
			t.Fatalf("%s: unexpected claims: %v", what, c)
		}
	}
	check("ID token", jwtClaims(t, tr.IDToken))
	check("access token", jwtClaims(t, tr.AccessToken))
	var ui map[string]any
	if err := json.Unmarshal(userinfoJSON(t, d, tr.AccessToken), &ui); err != nil {
		t.Fatal(err)
	}
	check("userinfo", ui)
	// The Action's value changes; a refresh repeats the sign-in's.
	d.IDP.SetIDTokenClaims(map[string]any{"https://example.com/plan": "free"})
	rt := refresh(t, d, tr.RefreshToken)
	if rt.Error != "" {
		t.Fatalf("refresh: %s %s", rt.Error, rt.Description)
	}
	check("refreshed ID token", jwtClaims(t, rt.IDToken))
	check("refreshed access token", jwtClaims(t, rt.AccessToken))
	if err := json.Unmarshal(userinfoJSON(t, d, rt.AccessToken), &ui); err != nil {
		t.Fatal(err)
	}
	check("userinfo after refresh", ui)

	// usher's session answers a request for another organization only
	// through the upstream; an unknown organization is refused there.
	q, _ = a.signInWith(d, "org@example.com", "password-123456", url.Values{"organization": {"org_nope"}})
	if q.Get("error") == "" {
		t.Fatalf("unknown organization: %v", q)
	}
}

// usher's own claim wins over an upstream claim of the same name.
func TestUpstreamClaimLosesToGrant(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{Configure: func(c *config.Config) {
		c.Upstream.PassThroughClaims = []string{"crm_id"}
		c.Upstream.Auth0.UserIDClaim = ""
	}})
	d.IDP.SetIDTokenClaims(map[string]any{"crm_id": "from-auth0"})
	api := funnelToken(t, d, "invitations:write invitations:read")
	inv := invite(t, d, api, map[string]any{"email": "g@example.com", "roles": []string{"customer"}, "claims": map[string]any{"crm_id": "C-5"}, "send_email": false})
	b := newAgent(t, d.SPAURL)
	resp, body, v := b.signInWithInvitation(d, tokenOf(inv["url"].(string)), "signup",
		url.Values{"email": {"g@example.com"}, "password": {"password-123456"}, "name": {"N"}})
	tr := exchangeCode(t, d, b.callbackOf(resp, body).Get("code"), v)
	for _, jwt := range []string{tr.IDToken, tr.AccessToken} {
		c := jwtClaims(t, jwt)
		if c["crm_id"] != "C-5" || c["auth0_user_id"] != nil {
			t.Fatalf("claims: %v", c)
		}
	}
}
