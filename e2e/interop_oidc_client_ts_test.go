package e2e

import (
	"slices"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
)

// oidc-client-ts, unmodified, in headless Chromium: usher is its authority.
// The invitation flow with the invitation forwarded as an extra /authorize
// parameter and without it (usher takes it from the cookie its /invite link
// set), for a new user signing up and for an existing user signing in; then
// a refresh with the refresh token (signinSilent).
func TestInteropOIDCClientTS(t *testing.T) {
	t.Parallel()
	requireInteropModules(t, "oidc-client-ts")
	pages := startInteropPages(t)
	pageURL := pages.page("oidc-client-ts.html")
	d := startDev(t, app.DevOptions{Configure: func(c *config.Config) {
		c.Clients = append(c.Clients, spaClient("oidc-client-ts", pageURL))
	}})
	pages.configure(map[string]string{"issuer": d.IssuerURL, "clientId": "oidc-client-ts"})
	api := funnelToken(t, d, "invitations:write invitations:read")

	tests := []struct {
		name    string
		email   string
		forward bool // the page forwards ?invitation= as extraQueryParams
		signup  bool
	}{
		{"sign-up, invitation parameter", "ts-new-param@example.com", true, true},
		{"sign-up, cookie", "ts-new-cookie@example.com", false, true},
		{"sign-in, invitation parameter", "ts-old-param@example.com", true, false},
		{"sign-in, cookie", "ts-old-cookie@example.com", false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const password = "interop-password-1"
			if !tc.signup {
				// An existing user: signed up before, through the demo app.
				a := newAgent(t, d.SPAURL)
				a.signIn(d, tc.email, password, true)
			}
			roles := []string{"customer", "ts"}
			inv := invite(t, d, api, map[string]any{"email": tc.email, "roles": roles,
				"claims": map[string]any{"crm_id": "CRM-" + tc.email}, "client_id": "oidc-client-ts", "send_email": false})

			ctx := newBrowser(t)
			forward := "1"
			if !tc.forward {
				forward = "0"
			}
			setPageSettings(t, ctx, pageURL, map[string]string{"forwardInvitation": forward})
			do(t, ctx, "following the invitation link", chromedp.Navigate(inv["url"].(string)))
			if tc.signup {
				signUpAtDevIDP(t, ctx, tc.email, password, "Interop User")
			} else {
				signInAtDevIDP(t, ctx, tc.email, password)
			}
			acceptInBrowser(t, ctx, "oidc-client-ts", tc.email)
			st := pageState(t, ctx, "waiting for oidc-client-ts to sign in", "s.signedIn")
			for what, claims := range map[string]map[string]any{"profile": st.Profile, "ID token": st.IDClaims, "access token": st.ATClaims} {
				if !slices.Equal(rolesOf(claims), roles) || claims["crm_id"] != "CRM-"+tc.email {
					t.Errorf("%s: roles %v crm_id %v", what, rolesOf(claims), claims["crm_id"])
				}
			}
			if st.Profile["email"] != tc.email || st.IDClaims["iss"] != d.IssuerURL || !audHas(st.IDClaims, "oidc-client-ts") {
				t.Errorf("profile email %v, ID token iss %v aud %v", st.Profile["email"], st.IDClaims["iss"], st.IDClaims["aud"])
			}
			if st.RT == "" {
				t.Fatal("no refresh token")
			}
			r := apiCall(t, d, "GET", "/api/invitations/"+inv["id"].(string), api, nil)
			if r.body["status"] != "redeemed" {
				t.Errorf("invitation after the flow: %s", r.raw)
			}

			callPage(t, ctx, "doRefresh")
			st = pageState(t, ctx, "waiting for signinSilent (refresh token)", "s.refreshed")
			ref := st.Refreshed
			if ref.RT == "" || ref.RT == st.RT {
				t.Errorf("the refresh token was not rotated")
			}
			if ref.IDClaims["sub"] != st.IDClaims["sub"] || !slices.Equal(rolesOf(ref.IDClaims), roles) || !slices.Equal(rolesOf(ref.ATClaims), roles) {
				t.Errorf("after refresh: ID token %v, access token roles %v", ref.IDClaims, rolesOf(ref.ATClaims))
			}
		})
	}
}
