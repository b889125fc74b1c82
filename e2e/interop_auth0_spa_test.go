package e2e

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
)

// Auth0's SPA SDK, unmodified, with usher's address as its `domain`: the SDK
// calls /authorize, /oauth/token and /v2/logout and expects the ID token's
// iss to be "<domain>/". So usher's issuer ends with "/", as Auth0's do.
//
// The SDK also accepts only RS256 ID tokens ("Signature algorithm of "ES256"
// is not supported. Expected the ID token to be signed with "RS256"."):
// usher's clients get RS256 ID tokens unless they ask otherwise, so the
// defaults serve it (access tokens stay ES256).
func TestInteropAuth0SPA(t *testing.T) {
	t.Parallel()
	d, pageURL := startAuth0SPAPage(t, nil)
	issuer := d.IssuerURL
	api := funnelToken(t, d, "invitations:write invitations:read")

	tests := []struct {
		name   string
		email  string
		signup bool
	}{
		{"sign-up", "auth0-new@example.com", true},
		{"sign-in", "auth0-old@example.com", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const password = "interop-password-2"
			settings := map[string]string{}
			if tc.signup {
				// The app's "Sign up" button: Auth0's screen_hint, passed through.
				settings["screenHint"] = "signup"
			} else {
				a := newAgent(t, d.SPAURL)
				a.signIn(d, tc.email, password, true)
			}
			roles := []string{"customer", "auth0"}
			inv := invite(t, d, api, map[string]any{"email": tc.email, "roles": roles,
				"claims": map[string]any{"crm_id": "CRM-" + tc.email}, "client_id": "auth0-spa-js", "send_email": false})

			ctx := newBrowser(t)
			setPageSettings(t, ctx, pageURL, settings)
			do(t, ctx, "following the invitation link", chromedp.Navigate(inv["url"].(string)))
			if tc.signup {
				signUpAtDevIDP(t, ctx, tc.email, password, "Interop User")
			} else {
				signInAtDevIDP(t, ctx, tc.email, password)
			}
			acceptInBrowser(t, ctx, "auth0-spa-js", tc.email)
			st := pageState(t, ctx, "waiting for auth0-spa-js to sign in", "s.signedIn")
			for what, claims := range map[string]map[string]any{"getUser": st.User, "getIdTokenClaims": st.IDClaims, "access token": st.ATClaims} {
				if !slices.Equal(rolesOf(claims), roles) || claims["crm_id"] != "CRM-"+tc.email {
					t.Errorf("%s: roles %v crm_id %v", what, rolesOf(claims), claims["crm_id"])
				}
			}
			if st.User["email"] != tc.email || st.IDClaims["iss"] != issuer {
				t.Errorf("user email %v, ID token iss %v", st.User["email"], st.IDClaims["iss"])
			}
			r := apiCall(t, d, "GET", "/api/invitations/"+inv["id"].(string), api, nil)
			if r.body["status"] != "redeemed" {
				t.Errorf("invitation after the flow: %s", r.raw)
			}

			// A reload: with the SDK's defaults (memory cache, no refresh
			// token) the session comes back through its hidden iframe
			// (prompt=none, response_mode=web_message), answered from usher's
			// own session.
			do(t, ctx, "reloading the app", chromedp.Reload())
			st = pageState(t, ctx, "waiting for the reloaded app", "s.loaded")
			if !st.SignedIn || st.User["email"] != tc.email {
				t.Fatalf("after a reload the app is signed out (error %q): silent authentication failed", st.Error)
			}

			// getTokenSilently with the cache off: a new token through the iframe.
			callPage(t, ctx, "doRefresh")
			st = pageState(t, ctx, "waiting for getTokenSilently (hidden iframe)", "s.refreshed")
			if st.Refreshed.ATClaims["jti"] == st.ATClaims["jti"] || !slices.Equal(rolesOf(st.Refreshed.ATClaims), roles) {
				t.Errorf("refreshed access token %v (before: %v)", st.Refreshed.ATClaims, st.ATClaims)
			}
			if st.Refreshed.IDClaims["sub"] != st.IDClaims["sub"] || !slices.Equal(rolesOf(st.Refreshed.IDClaims), roles) {
				t.Errorf("refreshed ID token %v", st.Refreshed.IDClaims)
			}

			// logout → /v2/logout → the upstream's logout → back at returnTo.
			if _, err := chromedp.Run(ctx, chromedp.Evaluate[any](`window.beforeLogout = true`)); err != nil {
				t.Fatal(err)
			}
			callPage(t, ctx, "doLogout")
			st = pageState(t, ctx, "waiting to return from logout", "s.loaded && !window.beforeLogout")
			if st.SignedIn {
				t.Errorf("still signed in after logout")
			}
			loc, _ := chromedp.Run(ctx, chromedp.Location())
			if loc != pageURL {
				t.Errorf("logout returned to %s, want %s", loc, pageURL)
			}
			// Both usher's and the upstream's sessions ended: signing in again
			// asks for the password.
			callPage(t, ctx, "doLogin")
			pollJS(t, ctx, "waiting for the devidp login form after logout", 20*time.Second,
				`!!document.querySelector('form[action="/u/login"] input[name=password]')`)
		})
	}
}

// startAuth0SPAPage starts usher (more, if not nil, configures it further)
// with the auth0-spa-js page as a client whose `domain` is usher, and
// returns usher and the page's URL. usher's issuer ends with "/", as
// Auth0's do.
func startAuth0SPAPage(t *testing.T, more func(*config.Config)) (*app.Dev, string) {
	t.Helper()
	requireInteropModules(t, "@auth0/auth0-spa-js")
	pages := startInteropPages(t)
	pageURL := pages.page("auth0-spa-js.html")
	addr := freeLoopbackAddr(t)
	issuer := "http://" + addr + "/"
	d := startDev(t, app.DevOptions{Addr: addr, Issuer: issuer, Configure: func(c *config.Config) {
		c.Clients = append(c.Clients, spaClient("auth0-spa-js", pageURL))
		if more != nil {
			more(c)
		}
	}})
	if d.IssuerURL != issuer {
		t.Fatalf("issuer %q", d.IssuerURL)
	}
	// domain keeps the http:// scheme; a bare host would become https://.
	pages.configure(map[string]string{"domain": strings.TrimSuffix(issuer, "/"), "clientId": "auth0-spa-js"})
	return d, pageURL
}
