package e2e

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/usher-oidc/usher/app"
)

// A newcomer's path: the demo SPA → usher → devidp sign-up → back with
// tokens; refresh; sign out; sign in again to the same user.
func TestBrowserSignUpRefreshSignOutSignIn(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	ctx := newBrowser(t)
	email := "grace@example.com"

	do(t, ctx, "opening the demo SPA",
		chromedp.Navigate(d.SPAURL),
		chromedp.WaitVisible(chromedp.CSS(`body[data-ready="1"] #signup`)),
		chromedp.Click(chromedp.CSS(`#signup`)),
	)
	signUpAtDevIDP(t, ctx, email, "correct horse battery", "Grace Hopper")
	first := waitSignedIn(t, ctx)

	sub := claimString(first.IDClaims, "sub")
	if !strings.HasPrefix(sub, "usr_") {
		t.Fatalf("ID token sub = %q, want an usher user id", sub)
	}
	if got := claimString(first.IDClaims, "iss"); got != d.IssuerURL {
		t.Errorf("ID token iss = %q, want %q", got, d.IssuerURL)
	}
	if got := claimString(first.IDClaims, "email"); got != email {
		t.Errorf("ID token email = %q, want %q", got, email)
	}
	if got := claimString(first.IDClaims, "name"); got != "Grace Hopper" {
		t.Errorf("ID token name = %q", got)
	}
	if roles, ok := first.IDClaims["roles"].([]any); !ok || len(roles) != 0 {
		t.Errorf("self sign-up: ID token roles = %v, want an empty list", first.IDClaims["roles"])
	}
	at, ok := first.ATClaims.(map[string]any)
	if !ok {
		t.Fatalf("access token is not a JWT: %v", first.ATClaims)
	}
	if claimString(at, "sub") != sub || claimString(at, "client_id") != app.DevSPAClientID {
		t.Errorf("access token claims = %v", at)
	}
	if scope := strings.Fields(claimString(at, "scope")); !slices.Contains(scope, "offline_access") {
		t.Errorf("access token scope = %v", scope)
	}
	if claimString(first.Userinfo, "sub") != sub || claimString(first.Userinfo, "email") != email {
		t.Errorf("userinfo = %v", first.Userinfo)
	}
	if !first.RefreshToken {
		t.Fatalf("no refresh token issued for offline_access")
	}

	do(t, ctx, "refreshing", chromedp.Click(chromedp.CSS(`#refresh`)))
	pollJS(t, ctx, "waiting for the refresh", 15*time.Second,
		`document.querySelector("#refresh-status").textContent.startsWith("refreshed at")`)

	do(t, ctx, "signing out", chromedp.Click(chromedp.CSS(`#signout`)))
	pollJS(t, ctx, "waiting to be signed out", 20*time.Second,
		`location.origin === `+jsString(d.SPAURL)+` && document.body.dataset.ready === "1" && document.querySelector("#status").textContent.includes("signed out")`)

	// Signed out of usher and of the upstream: signing in shows the form again.
	do(t, ctx, "signing in again", chromedp.Click(chromedp.CSS(`#signin`)))
	signInAtDevIDP(t, ctx, email, "correct horse battery")
	second := waitSignedIn(t, ctx)
	if got := claimString(second.IDClaims, "sub"); got != sub {
		t.Fatalf("second sign-in sub = %q, want the same user %q", got, sub)
	}
}

func jsString(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"`
}
