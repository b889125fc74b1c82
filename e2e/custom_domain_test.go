package e2e

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
	"github.com/usher-oidc/usher/devidp"
	"github.com/usher-oidc/usher/internal/testkit"
)

// With a custom login domain, the Management API mirror still works: usher
// asks for the token at the canonical domain (upstream.auth0.management.domain),
// as Auth0 refuses the custom domain's audience.
func TestAuth0CustomDomainMirror(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{CustomDomain: true})
	if got := d.Config.Upstream.EffectiveIssuer(); got != d.IDPCustomURL || got == d.IDPURL {
		t.Fatalf("upstream issuer %q, want the custom domain %q", got, d.IDPCustomURL)
	}
	api := funnelToken(t, d, "invitations:write invitations:read")
	inv := invite(t, d, api, map[string]any{"email": "custom@example.com", "roles": []string{"customer"}, "send_email": false})
	a := newAgent(t, d.SPAURL)
	resp, body, v := a.signInWithInvitation(d, tokenOf(inv["url"].(string)), "signup",
		url.Values{"email": {"custom@example.com"}, "password": {"password-123456"}, "name": {"C"}})
	tr := exchangeCode(t, d, a.callbackOf(resp, body).Get("code"), v)
	if !slices.Contains(rolesOf(jwtClaims(t, tr.IDToken)), "customer") {
		t.Fatal("the invitee lost the grant")
	}
	sub, ok := d.IDP.UserSub(devidp.ConnectionPassword, "custom@example.com")
	if !ok {
		t.Fatal("devidp does not know the new user")
	}
	var st any
	synced := testkit.Within(20*time.Second, func() bool {
		st = apiCall(t, d, http.MethodGet, "/api/invitations/"+inv["id"].(string), api, nil).body["mirror_status"]
		return st == "synced"
	})
	if !synced || !slices.Contains(d.IDP.UserRoles(sub), "customer") {
		t.Fatalf("mirror_status %v, Auth0 roles %v", st, d.IDP.UserRoles(sub))
	}
}

// Switching upstream.auth0.domain from the canonical domain to a custom
// domain changes the upstream iss; returning people keep their usher user
// (same sub) and grants.
func TestAuth0DomainChangeKeepsUsers(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{CustomDomain: true, Configure: func(c *config.Config) {
		c.Upstream.Auth0.Domain = c.Upstream.Auth0.Management.Domain // canonical first
	}})
	if d.Config.Upstream.EffectiveIssuer() != d.IDPURL {
		t.Fatalf("upstream issuer %q, want the canonical %q", d.Config.Upstream.EffectiveIssuer(), d.IDPURL)
	}
	const email, password = "returning@example.com", "password-123456"
	api := funnelToken(t, d, "invitations:write invitations:read")
	inv := invite(t, d, api, map[string]any{"email": email, "roles": []string{"customer"}, "send_email": false})
	a := newAgent(t, d.SPAURL)
	resp, body, v := a.signInWithInvitation(d, tokenOf(inv["url"].(string)), "signup",
		url.Values{"email": {email}, "password": {password}, "name": {"R"}})
	first := jwtClaims(t, exchangeCode(t, d, a.callbackOf(resp, body).Get("code"), v).IDToken)
	if !slices.Contains(rolesOf(first), "customer") {
		t.Fatal("no grant after accepting the invitation")
	}

	custom := strings.TrimSuffix(d.IDPCustomURL, "/")
	if err := d.RestartUsher(context.Background(), func(c *config.Config) { c.Upstream.Auth0.Domain = custom }); err != nil {
		t.Fatal(err)
	}
	if d.Config.Upstream.EffectiveIssuer() != d.IDPCustomURL {
		t.Fatalf("after the switch the upstream issuer is %q", d.Config.Upstream.EffectiveIssuer())
	}
	b := newAgent(t, d.SPAURL)
	code, v2 := b.signIn(d, email, password, false)
	again := jwtClaims(t, exchangeCode(t, d, code, v2).IDToken)
	if again["sub"] != first["sub"] || !slices.Contains(rolesOf(again), "customer") {
		t.Fatalf("after the domain change: sub %v (was %v), roles %v", again["sub"], first["sub"], rolesOf(again))
	}
}
