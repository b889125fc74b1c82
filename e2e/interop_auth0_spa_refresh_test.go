package e2e

import (
	"context"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/internal/testkit"
)

// Auth0's SPA SDK with refresh tokens (useRefreshTokens, kept in
// localStorage, no iframe fallback), as the README advises an app on
// another site than usher, against usher on Redis: the SDK stores the
// sealed refresh token it is given (broker/refreshseal.go) and refreshes
// with it, each refresh a rotation whose successor it keeps.
func TestInteropAuth0SPARefreshTokens(t *testing.T) {
	t.Parallel()
	_, pageURL := startAuth0SPAPage(t, onRedis(testkit.StartRedis(t), "v6"))

	ctx := newBrowser(t)
	setPageSettings(t, ctx, pageURL, map[string]string{"refreshTokens": "1"})
	do(t, ctx, "reloading the page with refresh tokens on", chromedp.Reload())
	pageState(t, ctx, "waiting for the page to load", "s.loaded")
	callPage(t, ctx, "doLogin")
	signInAtDevIDP(t, ctx, app.DevUserEmail, app.DevUserPassword)
	st := pageState(t, ctx, "waiting for auth0-spa-js to sign in", "s.signedIn")
	sub := claimString(st.IDClaims, "sub")
	rt := sdkRefreshToken(t, ctx)
	sealedParts(t, rt, sub)

	seen := map[string]bool{claimString(st.ATClaims, "jti"): true}
	for i := range 2 {
		if _, err := chromedp.Run(ctx, chromedp.Evaluate[any](`window.interopState.refreshed = null`)); err != nil {
			t.Fatal(err)
		}
		callPage(t, ctx, "doRefresh")
		got := pageState(t, ctx, "waiting for getTokenSilently (refresh_token grant)", "s.refreshed")
		jti := claimString(got.Refreshed.ATClaims, "jti")
		if seen[jti] || claimString(got.Refreshed.ATClaims, "sub") != sub || claimString(got.Refreshed.IDClaims, "sub") != sub {
			t.Fatalf("refresh %d: access token %v, ID token %v", i+1, got.Refreshed.ATClaims, got.Refreshed.IDClaims)
		}
		seen[jti] = true
		next := sdkRefreshToken(t, ctx)
		if next == rt {
			t.Fatalf("refresh %d: the SDK kept the rotated refresh token", i+1)
		}
		sealedParts(t, next, sub)
		rt = next
	}
	// A reload: the session comes back from localStorage.
	do(t, ctx, "reloading the app", chromedp.Reload())
	if st := pageState(t, ctx, "waiting for the reloaded app", "s.loaded"); !st.SignedIn {
		t.Fatalf("after a reload the app is signed out (error %q)", st.Error)
	}
}

// sdkRefreshToken is the refresh token auth0-spa-js keeps in localStorage
// (its cache entry's body.refresh_token).
func sdkRefreshToken(t *testing.T, ctx context.Context) string {
	t.Helper()
	rt, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(() => {
		for (let i = 0; i < localStorage.length; i++) {
			const k = localStorage.key(i);
			if (!k.startsWith("@@auth0spajs@@::") || k.endsWith("@@user@@")) continue;
			const v = JSON.parse(localStorage.getItem(k));
			if (v && v.body && v.body.refresh_token) return v.body.refresh_token;
		}
		return "";
	})()`))
	if err != nil || rt == "" {
		t.Fatalf("the SDK's refresh token in localStorage: %q, %v", rt, err)
	}
	return rt
}
