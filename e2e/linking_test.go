package e2e

import (
	"net/url"
	"slices"
	"testing"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
)

// googleSignIn signs in through devidp's simulated Google connection.
func (a *agent) googleSignIn(d *app.Dev, email string, unverified bool) string {
	a.t.Helper()
	connection := "google-oauth2"
	vals := url.Values{"connection": {connection}, "email": {email}, "name": {"G"}}
	if unverified {
		connection = "facebook"
		vals.Set("connection", connection)
		vals.Set("email_unverified", "1")
	}
	u, verifier, _ := authorizeURL(d, url.Values{"connection": {connection}})
	resp, body := a.get(u)
	resp, body = a.devidpForm(resp, body, "social", vals)
	q := a.callbackOf(resp, body)
	tr := exchangeCode(a.t, d, q.Get("code"), verifier)
	return claimString(jwtClaims(a.t, tr.IDToken), "sub")
}

// With link_by_verified_email, a password account and a Google sign-in with
// the same verified email are one user with one grant; an unverified email
// never links. Without the option, they stay apart.
func TestAccountLinkingByVerifiedEmail(t *testing.T) {
	t.Parallel()
	for _, enabled := range []bool{true, false} {
		name := "disabled"
		if enabled {
			name = "enabled"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			d := startDev(t, app.DevOptions{Configure: func(c *config.Config) { c.Upstream.LinkByVerifiedEmail = enabled }})
			api := funnelToken(t, d, "invitations:write invitations:read")
			// Ada (verified password account) has used the app and redeems an invitation.
			code, v0 := newAgent(t, d.SPAURL).signIn(d, app.DevUserEmail, app.DevUserPassword, false)
			exchangeCode(t, d, code, v0)
			inv := invite(t, d, api, map[string]any{"email": app.DevUserEmail, "roles": []string{"customer"}, "send_email": false})
			a := newAgent(t, d.SPAURL)
			u, verifier, _ := authorizeURL(d, url.Values{"invitation": {tokenOf(inv["url"].(string))}})
			resp, body := a.get(u)
			resp, body = a.devidpForm(resp, body, "login", url.Values{"email": {app.DevUserEmail}, "password": {app.DevUserPassword}})
			resp, body = a.answerAccept(resp, body, "accept")
			q := a.callbackOf(resp, body)
			passwordSub := claimString(jwtClaims(t, exchangeCode(t, d, q.Get("code"), verifier).IDToken), "sub")

			googleSub := newAgent(t, d.SPAURL).googleSignIn(d, app.DevUserEmail, false)
			if enabled && googleSub != passwordSub {
				t.Fatalf("Google sign-in with the same verified email: sub %s, want the password user's %s", googleSub, passwordSub)
			}
			if !enabled && googleSub == passwordSub {
				t.Fatalf("identities linked although link_by_verified_email is off")
			}
			if enabled {
				g := apiCall(t, d, "GET", "/api/users/"+googleSub+"/grants", api, nil)
				if !slices.Contains(rolesOf(g.body), "customer") {
					t.Fatalf("grant did not follow the person: %s", g.raw)
				}
			}
			// An unverified email (some Facebook accounts) never links.
			fbSub := newAgent(t, d.SPAURL).googleSignIn(d, app.DevUserEmail, true)
			if fbSub == passwordSub {
				t.Fatalf("an unverified email was linked to the existing user")
			}
		})
	}
}

// An unverified email never links; the same account links once its email
// is verified. A person with a (verified) Google account and a grant signs
// up with a password: unverified, so a user of its own, which stays apart
// while unverified; after the verification mail, the next password sign-in
// is the Google user, grant included.
func TestAccountLinkingOnceVerified(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{Configure: func(c *config.Config) { c.Upstream.LinkByVerifiedEmail = true }})
	api := funnelToken(t, d, "invitations:write invitations:read")
	const email = "link-later@example.com"
	inv := invite(t, d, api, map[string]any{"email": email, "roles": []string{"customer"}, "send_email": false})
	a := newAgent(t, d.SPAURL)
	u, verifier, _ := authorizeURL(d, url.Values{"invitation": {tokenOf(inv["url"].(string))}, "connection": {"google-oauth2"}})
	resp, body := a.get(u)
	resp, body = a.devidpForm(resp, body, "social", url.Values{"connection": {"google-oauth2"}, "email": {email}, "name": {"G"}})
	resp, body = a.answerAccept(resp, body, "accept")
	googleSub := claimString(jwtClaims(t, exchangeCode(t, d, a.callbackOf(resp, body).Get("code"), verifier).IDToken), "sub")

	passwordSignIn := func(signup bool) (sub string, roles []string) {
		code, v := newAgent(t, d.SPAURL).signIn(d, email, "password-123456", signup)
		c := jwtClaims(t, exchangeCode(t, d, code, v).IDToken)
		return claimString(c, "sub"), rolesOf(c)
	}
	steps := []struct {
		name       string
		signup     bool
		before     func()
		wantLinked bool
	}{
		{"sign-up, unverified", true, nil, false},
		{"sign-in, still unverified", false, nil, false},
		{"sign-in after the verification mail", false, func() { followVerificationLink(t, verificationLink(t, d, email, 1)) }, true},
		{"and again", false, nil, true},
	}
	for _, s := range steps {
		if s.before != nil {
			s.before()
		}
		sub, roles := passwordSignIn(s.signup)
		if (sub == googleSub) != s.wantLinked || s.wantLinked != slices.Contains(roles, "customer") {
			t.Fatalf("%s: sub %s (Google user %s), roles %v; want linked %v", s.name, sub, googleSub, roles, s.wantLinked)
		}
	}
}
