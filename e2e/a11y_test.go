package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/usher-oidc/usher/app"
)

// axeSource reads axe-core, pinned in e2e/interop/package-lock.json and
// installed by make test (npm ci); without it the test is skipped.
func axeSource(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(axePath)
	if err != nil {
		t.Skipf("axe-core is not installed (%v): run `npm ci --prefix e2e/interop` (make test does)", err)
	}
	return string(b)
}

var axePath = filepath.Join("interop", "node_modules", "axe-core", "axe.min.js")

type axeViolation struct {
	ID     string `json:"id"`
	Impact string `json:"impact"`
	Help   string `json:"help"`
	Nodes  []struct {
		Target []any  `json:"target"`
		HTML   string `json:"html"`
	} `json:"nodes"`
}

// checkA11y runs axe-core on the page the browser shows and fails the test on
// every serious or critical violation. The script is evaluated through the
// DevTools protocol, which the pages' CSP (no script-src) does not govern.
func checkA11y(t *testing.T, ctx context.Context, axe, name string) {
	t.Helper()
	pollJS(t, ctx, "waiting for "+name+" to load", 20*time.Second, `document.readyState === "complete"`)
	stepCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if _, err := chromedp.Run(stepCtx, chromedp.Evaluate[chromedp.Void](axe+";void 0")); err != nil {
		failWithPage(t, ctx, "injecting axe-core into "+name, err)
	}
	raw, err := chromedp.Run(stepCtx, chromedp.Evaluate[string](
		`axe.run(document, {resultTypes: ['violations']}).then(r => JSON.stringify(r.violations))`, chromedp.EvalAwaitPromise))
	if err != nil {
		failWithPage(t, ctx, "running axe-core on "+name, err)
	}
	var vs []axeViolation
	if err := json.Unmarshal([]byte(raw), &vs); err != nil {
		t.Fatalf("decoding axe-core's answer on %s: %v", name, err)
	}
	loc, _ := chromedp.Run(ctx, chromedp.Location())
	loc, _, _ = strings.Cut(loc, "?") // no authorization code in the log
	t.Logf("axe-core on %s (%s): %d violations", name, loc, len(vs))
	for _, v := range vs {
		target, html := "", ""
		if len(v.Nodes) > 0 {
			target, html = fmt.Sprint(v.Nodes[0].Target), v.Nodes[0].HTML
		}
		msg := fmt.Sprintf("%s (%s): %s [%s] %s — first node %s %s (%d nodes)", name, loc, v.ID, v.Impact, v.Help, target, html, len(v.Nodes))
		if v.Impact == "serious" || v.Impact == "critical" {
			t.Error(msg)
		} else {
			t.Log(msg)
		}
	}
}

// Every admin and invitee page of usher passes axe-core without a serious or
// critical violation: the accept page, the admin dashboard, an invitation's
// page (with its one-time link shown), a user page, the funnel, the refusal
// page of an unknown invitation and the signed-in invitation landing.
func TestA11yPages(t *testing.T) {
	t.Parallel()
	axe := axeSource(t)
	d := startDev(t, app.DevOptions{Configure: withProvisioner})
	issuer := strings.TrimSuffix(d.IssuerURL, "/")
	const (
		adminEmail = "a11y-admin@example.com"
		adminPass  = "admin-password-1"
	)
	ctx := newBrowser(t)
	do(t, ctx, "sizing the window", chromedp.EmulateViewport(1360, 900))

	// The accept page, reached from an admin invitation.
	boot := invite(t, d, provisionerToken(t, d), map[string]any{"email": adminEmail, "roles": []string{"usher:admin"}, "send_email": false})
	do(t, ctx, "following the admin invitation", chromedp.Navigate(boot["url"].(string)))
	signUpAtDevIDP(t, ctx, adminEmail, adminPass, "A11y Admin")
	pollJS(t, ctx, "waiting for usher's accept page", 20*time.Second, `!!document.querySelector('#accept')`)
	checkA11y(t, ctx, axe, "the accept page")
	acceptInBrowser(t, ctx, "Demo SPA", adminEmail)
	st := waitSignedIn(t, ctx)
	sub := claimString(st.IDClaims, "sub")

	// The admin pages.
	signInToAdmin(t, ctx, d, adminEmail, adminPass)
	pollJS(t, ctx, "waiting for the dashboard", 20*time.Second, `!!document.querySelector('#invite-form')`)
	checkA11y(t, ctx, axe, "the admin dashboard")
	fillInviteForm(t, ctx, "a11y-invitee@example.com", "customer", `{"crm_id": "CRM-1"}`, "")
	do(t, ctx, "creating an invitation", chromedp.Click(chromedp.CSS(`#create`)))
	link := pollJS(t, ctx, "waiting for the one-time link", 20*time.Second, `(document.querySelector('#invite-link') || {}).value || ""`)
	checkA11y(t, ctx, axe, "an invitation's page")
	do(t, ctx, "opening the user page", chromedp.Navigate(issuer+"/admin/users/"+url.PathEscape(sub)))
	pollJS(t, ctx, "waiting for the user page", 20*time.Second, `!!document.querySelector('#user-roles')`)
	checkA11y(t, ctx, axe, "a user page")
	do(t, ctx, "opening the user list", chromedp.Navigate(issuer+"/admin/users?q=a11y"))
	pollJS(t, ctx, "waiting for the user list", 20*time.Second, `!!document.querySelector('#user-list')`)
	checkA11y(t, ctx, axe, "the user list")
	do(t, ctx, "opening the audit log", chromedp.Navigate(issuer+"/admin/audit?action=invitation.created"))
	pollJS(t, ctx, "waiting for the audit log", 20*time.Second, `!!document.querySelector('#audit-filters')`)
	checkA11y(t, ctx, axe, "the audit log")
	do(t, ctx, "opening the funnel", chromedp.Navigate(issuer+"/admin/funnel"))
	pollJS(t, ctx, "waiting for the funnel", 20*time.Second, `!!document.querySelector('main')`)
	checkA11y(t, ctx, axe, "the funnel page")
	do(t, ctx, "opening the filtered dashboard", chromedp.Navigate(issuer+"/admin?status=pending"))
	pollJS(t, ctx, "waiting for the filtered dashboard", 20*time.Second, `!!document.querySelector('#invitation-list')`)
	checkA11y(t, ctx, axe, "the filtered dashboard")

	// The invitee's side: an unknown link's refusal, then a real link while
	// signed in upstream, which lands on usher's accept page again.
	do(t, ctx, "opening an unknown invitation", chromedp.Navigate(issuer+"/invite/inv_unknown0000000000000000000000"))
	pollJS(t, ctx, "waiting for the refusal page", 20*time.Second, `!!document.querySelector('#title')`)
	checkA11y(t, ctx, axe, "the refusal page")
	do(t, ctx, "following the new invitation", chromedp.Navigate(link))
	where := pollJS(t, ctx, "waiting for the invitation landing", 20*time.Second,
		`document.querySelector('#accept') ? "accept" : document.querySelector('form[action="/u/login"]') ? "login" : location.href.startsWith(`+jsString(issuer)+`) && document.readyState === "complete" && document.querySelector('#title') ? "page" : ""`)
	if where != "login" {
		checkA11y(t, ctx, axe, "the invitation landing ("+where+")")
	}

	// The email-mismatch page: an invitation only another address may
	// redeem, opened by the signed-in admin.
	other := invite(t, d, provisionerToken(t, d), map[string]any{"email": "someone-else@example.com", "email_match": "exact", "send_email": false})
	do(t, ctx, "following an invitation for another address", chromedp.Navigate(other["url"].(string)))
	landing := pollJS(t, ctx, "waiting for the accept or problem page", 20*time.Second,
		`location.pathname === "/invitation/problem" && document.readyState === "complete" ? "problem" : document.querySelector('#accept') ? "accept" : ""`)
	if landing == "accept" {
		do(t, ctx, "accepting with the wrong account", chromedp.Click(chromedp.CSS(`#accept`)))
		pollJS(t, ctx, "waiting for the problem page", 20*time.Second, `location.pathname === "/invitation/problem" && document.readyState === "complete"`)
	}
	checkA11y(t, ctx, axe, "the email-mismatch page")
}
