package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/usher-oidc/usher/app"
)

// A planted link, in a real browser: a signed-in person visits an attacker's
// page that navigates them to an invitation link (the most a page on
// another site can do). usher shows its accept page naming the person's own
// account and warning that the invitation was sent to someone else; when
// the person ignores it and signs in to the app as usual, the page comes
// again instead of the app; "Not now" lands them in the app without the
// invitation's role, and the invitation stays pending.
func TestBrowserPlantedLinkNeedsAccept(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	api := funnelToken(t, d, "invitations:write invitations:read")
	ctx := newBrowser(t)
	const email = "victim-browser@example.com"
	do(t, ctx, "opening the demo SPA",
		chromedp.Navigate(d.SPAURL),
		chromedp.WaitVisible(chromedp.CSS(`body[data-ready="1"] #signup`)),
		chromedp.Click(chromedp.CSS(`#signup`)),
	)
	signUpAtDevIDP(t, ctx, email, "victim-password-1", "Victim")
	waitSignedIn(t, ctx)

	evil := invite(t, d, api, map[string]any{"email": "mallory@example.com", "roles": []string{"attacker-role"},
		"claims": map[string]any{"crm_id": "C-MALLORY"}, "send_email": false})
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `<!doctype html><title>Free prize</title><script>location.href = %q</script>`, evil["url"])
	}))
	t.Cleanup(attacker.Close)
	do(t, ctx, "visiting the attacker's page", chromedp.Navigate(attacker.URL))
	pollJS(t, ctx, "waiting for usher's accept page", 20*time.Second, `!!document.querySelector('#accept')`)
	account := pollJS(t, ctx, "reading the account line", 5*time.Second, `document.querySelector('#account').textContent`)
	warning := pollJS(t, ctx, "reading the warning", 5*time.Second, `(document.querySelector('#email-differs') || {}).textContent || "none"`)
	if !strings.Contains(account, email) || !strings.Contains(warning, "mallory@example.com") {
		t.Fatalf("accept page: account %q, warning %q", account, warning)
	}

	// The person ignores the page and signs in to the app as usual.
	do(t, ctx, "signing in to the app",
		chromedp.Navigate(d.SPAURL),
		chromedp.WaitVisible(chromedp.CSS(`body[data-ready="1"] #signin`)),
		chromedp.Click(chromedp.CSS(`#signin`)),
	)
	pollJS(t, ctx, "waiting for usher's accept page (not the app)", 20*time.Second, `!!document.querySelector('#accept')`)
	if r := apiCall(t, d, http.MethodGet, "/api/invitations/"+evil["id"].(string), api, nil); r.body["status"] != "pending" {
		t.Fatalf("the planted link was redeemed without Accept: %s", r.raw)
	}
	do(t, ctx, "pressing Not now", chromedp.Click(chromedp.CSS(`#later`)))
	st := waitSignedIn(t, ctx)
	if slices.Contains(rolesOf(st.IDClaims), "attacker-role") || st.IDClaims["crm_id"] != nil {
		t.Fatalf("\"Not now\" bound the invitation: %v", st.IDClaims)
	}
	if r := apiCall(t, d, http.MethodGet, "/api/invitations/"+evil["id"].(string), api, nil); r.body["status"] != "pending" {
		t.Fatalf("after \"Not now\": %s", r.raw)
	}
}
