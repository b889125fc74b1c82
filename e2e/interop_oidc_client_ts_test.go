package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
)

// oidc-client-ts, unmodified and with its default settings, in headless
// Chromium: usher is its authority. The invitation flow with the invitation
// forwarded as an extra /authorize parameter and without it (usher takes it
// from the cookie its /invite link set), for a new user signing up and for
// an existing user signing in; then signinSilent, which without a refresh
// token (default scope "openid") goes through the SDK's hidden iframe with
// prompt=none, answered from usher's session.
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
			ctx := newBrowser(t)
			roles := []string{"customer", "ts"}
			st := tsSignInByInvitation(t, d, api, ctx, pageURL, tc.email, roles, tc.forward, tc.signup)

			callPage(t, ctx, "doRefresh")
			st = pageState(t, ctx, "waiting for signinSilent (hidden iframe)", "s.refreshed")
			ref := st.Refreshed
			if ref.ATClaims["jti"] == nil || ref.ATClaims["jti"] == st.ATClaims["jti"] {
				t.Errorf("signinSilent: access token jti %v, before %v: not a new token", ref.ATClaims["jti"], st.ATClaims["jti"])
			}
			if ref.IDClaims["sub"] != st.IDClaims["sub"] || !slices.Equal(rolesOf(ref.IDClaims), roles) || !slices.Equal(rolesOf(ref.ATClaims), roles) {
				t.Errorf("after signinSilent: ID token %v, access token roles %v", ref.IDClaims, rolesOf(ref.ATClaims))
			}
			if ref.RT != "" {
				t.Errorf("a refresh token without offline_access")
			}
		})
	}
}

// automaticSilentRenew (on by default) keeps the app signed in across an
// access token's expiry: with a 4 s access token the SDK's "expiring" event
// (60 s before expiry by default, so at once) renews through the iframe.
func TestInteropOIDCClientTSAutomaticRenew(t *testing.T) {
	t.Parallel()
	requireInteropModules(t, "oidc-client-ts")
	pages := startInteropPages(t)
	pageURL := pages.page("oidc-client-ts.html")
	d := startDev(t, app.DevOptions{Configure: func(c *config.Config) {
		c.Tokens.AccessTokenTTL = config.Duration(4 * time.Second)
		c.Clients = append(c.Clients, spaClient("oidc-client-ts", pageURL))
	}})
	pages.configure(map[string]string{"issuer": d.IssuerURL, "clientId": "oidc-client-ts"})
	api := funnelToken(t, d, "invitations:write invitations:read")

	ctx := newBrowser(t)
	roles := []string{"customer", "renew"}
	st := tsSignInByInvitation(t, d, api, ctx, pageURL, "ts-renew@example.com", roles, false, true)
	exp, _ := st.ATClaims["exp"].(float64)
	if exp == 0 {
		t.Fatalf("access token without exp: %v", st.ATClaims)
	}
	// Past the first token's expiry, the SDK holds a later one, unexpired.
	st = pageState(t, ctx, "waiting for automaticSilentRenew past the first token's expiry", fmt.Sprintf(
		`Date.now()/1000 > %[1]v + 1 && s.current && s.current.atClaims.exp > Date.now()/1000 && s.current.atClaims.exp > %[1]v`, exp))
	cur := st.Current
	if cur.ATClaims["jti"] == st.ATClaims["jti"] || cur.IDClaims["sub"] != st.IDClaims["sub"] || !slices.Equal(rolesOf(cur.ATClaims), roles) {
		t.Errorf("renewed: access token %v, ID token sub %v; first access token %v", cur.ATClaims, cur.IDClaims["sub"], st.ATClaims)
	}
}

// tsSignInByInvitation invites email to the oidc-client-ts page's client and
// signs in through the invitation link in the browser (signing up when
// signup; an existing user signs up through the demo app first), then checks
// the tokens the page holds.
func tsSignInByInvitation(t *testing.T, d *app.Dev, api string, ctx context.Context, pageURL, email string, roles []string, forward, signup bool) interopState {
	t.Helper()
	const password = "interop-password-1"
	if !signup {
		a := newAgent(t, d.SPAURL)
		a.signIn(d, email, password, true)
	}
	inv := invite(t, d, api, map[string]any{"email": email, "roles": roles,
		"claims": map[string]any{"crm_id": "CRM-" + email}, "client_id": "oidc-client-ts", "send_email": false})
	fwd := "1"
	if !forward {
		fwd = "0"
	}
	setPageSettings(t, ctx, pageURL, map[string]string{"forwardInvitation": fwd})
	do(t, ctx, "following the invitation link", chromedp.Navigate(inv["url"].(string)))
	if signup {
		signUpAtDevIDP(t, ctx, email, password, "Interop User")
	} else {
		signInAtDevIDP(t, ctx, email, password)
	}
	acceptInBrowser(t, ctx, "oidc-client-ts", email)
	st := pageState(t, ctx, "waiting for oidc-client-ts to sign in", "s.signedIn")
	// The default loadUserInfo is false: the profile is the ID token's claims.
	for what, claims := range map[string]map[string]any{"profile": st.Profile, "ID token": st.IDClaims, "access token": st.ATClaims} {
		if !slices.Equal(rolesOf(claims), roles) || claims["crm_id"] != "CRM-"+email {
			t.Errorf("%s: roles %v crm_id %v", what, rolesOf(claims), claims["crm_id"])
		}
	}
	if st.Profile["sub"] != st.IDClaims["sub"] || st.IDClaims["iss"] != d.IssuerURL || !audHas(st.IDClaims, "oidc-client-ts") {
		t.Errorf("profile sub %v, ID token sub %v iss %v aud %v", st.Profile["sub"], st.IDClaims["sub"], st.IDClaims["iss"], st.IDClaims["aud"])
	}
	// Default scope "openid": no email claim, no refresh token.
	if st.IDClaims["email"] != nil || st.RT != "" {
		t.Errorf("scope openid: ID token email %v, refresh token %q", st.IDClaims["email"], st.RT)
	}
	r := apiCall(t, d, "GET", "/api/invitations/"+inv["id"].(string), api, nil)
	if r.body["status"] != "redeemed" {
		t.Errorf("invitation after the flow: %s", r.raw)
	}
	return st
}
