package e2e

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/usher-oidc/usher/app"
)

// The admin page as an operator lives it: the first admin is bootstrapped
// through an API invitation carrying usher:admin (from a client holding
// invitations:admin), accepted on usher's page, signs in to /admin through
// usher itself, invites someone through the form (errors shown inline first),
// copies the one-time link, and watches the invitation get redeemed by a
// second browser; a non-admin gets 403, and a POST without the CSRF token or
// from another origin is refused. Screenshots of every admin screen are saved.
func TestAdminPage(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{Configure: withProvisioner})
	issuer := strings.TrimSuffix(d.IssuerURL, "/")
	api := funnelToken(t, d, "invitations:write invitations:read")
	shots := adminArtifactsDir(t)
	const (
		adminEmail   = "root-admin@example.com"
		adminPass    = "admin-password-1"
		inviteeEmail = "invitee@example.com"
	)

	admin := newBrowser(t)
	do(t, admin, "sizing the window", chromedp.EmulateViewport(1360, 900))

	// Nobody signed in: /admin sends the browser to sign in upstream.
	do(t, admin, "opening /admin signed out", chromedp.Navigate(issuer+"/admin"))
	pollJS(t, admin, "waiting for the upstream login form", 20*time.Second,
		`location.href.startsWith(`+jsString(d.IDPURL)+`) && !!document.querySelector('form[action="/u/login"]')`)
	adminScreenshot(t, admin, shots, "01-login-redirect.png")

	// Bootstrap the first admin: an invitation carrying usher:admin, redeemed by signing up.
	// The funnel may not invite to the admin role; the provisioning client may.
	if r := apiCall(t, d, http.MethodPost, "/api/invitations", api, map[string]any{"email": adminEmail, "roles": []string{"usher:admin"}, "send_email": false}); r.status != http.StatusBadRequest || !strings.Contains(r.raw, "invitations:admin") {
		t.Fatalf("funnel inviting to usher:admin: %d %s", r.status, r.raw)
	}
	boot := invite(t, d, provisionerToken(t, d), map[string]any{"email": adminEmail, "roles": []string{"usher:admin"}, "send_email": false})
	do(t, admin, "following the admin invitation", chromedp.Navigate(boot["url"].(string)))
	signUpAtDevIDP(t, admin, adminEmail, adminPass, "Root Admin")
	acceptInBrowser(t, admin, "Demo SPA", adminEmail)
	st := waitSignedIn(t, admin)
	if !slices.Contains(rolesOf(st.IDClaims), "usher:admin") {
		t.Fatalf("bootstrap admin roles = %v", rolesOf(st.IDClaims))
	}

	signInToAdmin(t, admin, d, adminEmail, adminPass)
	pollJS(t, admin, "waiting for the dashboard", 20*time.Second, `!!document.querySelector('#invite-form') && !!document.querySelector('#invitations')`)
	if got := adminText(t, admin, `#admin-email`); got != adminEmail {
		t.Errorf("header shows %q, want %q", got, adminEmail)
	}
	if got := adminText(t, admin, `#invitation-list tr[data-status="redeemed"] td`); got != adminEmail {
		t.Errorf("first row of the list = %q, want the redeemed bootstrap invitation", got)
	}
	adminScreenshot(t, admin, shots, "02-dashboard.png")

	// Invalid first: a bad email and claims that are not JSON, shown inline, values kept.
	fillInviteForm(t, admin, "not-an-email", "customer beta", `{"crm_id": "CRM-42",}`, `{"source": "admin-e2e"}`)
	do(t, admin, "submitting the invalid form", chromedp.Click(chromedp.CSS(`#create`)))
	pollJS(t, admin, "waiting for the inline errors", 20*time.Second, `!!document.querySelector('#error-email') && !!document.querySelector('#error-claims')`)
	if e := adminText(t, admin, `#error-email`); !strings.Contains(e, "not a valid email") {
		t.Errorf("email error = %q", e)
	}
	if e := adminText(t, admin, `#error-claims`); !strings.Contains(e, "not valid JSON") {
		t.Errorf("claims error = %q", e)
	}
	kept := adminEval(t, admin, `[document.querySelector('#email').value, document.querySelector('#roles_text').value,
		document.querySelector('#claims').value, document.querySelector('#metadata').value,
		String(document.querySelector('#delivery-link').checked)].join("|")`)
	if kept != `not-an-email|customer beta|{"crm_id": "CRM-42",}|{"source": "admin-e2e"}|true` {
		t.Errorf("form values after the error: %q", kept)
	}
	adminScreenshot(t, admin, shots, "03-form-errors.png")

	// A registered claim is refused by the service, under the claims field.
	fillInviteForm(t, admin, inviteeEmail, "customer beta", `{"sub": "someone-else"}`, `{"source": "admin-e2e"}`)
	do(t, admin, "submitting a reserved claim", chromedp.Click(chromedp.CSS(`#create`)))
	pollJS(t, admin, "waiting for the reserved-claim error", 20*time.Second,
		`(document.querySelector('#error-claims') || {}).textContent?.includes("registered claim") || false`)
	if adminEval(t, admin, `document.querySelector('#error-email') ? "shown" : ""`) != "" {
		t.Errorf("an email error is shown for a valid email")
	}

	// Valid, with "copy link": the detail page shows the link once.
	fillInviteForm(t, admin, inviteeEmail, "customer beta", `{"crm_id": "CRM-42"}`, `{"source": "admin-e2e"}`)
	do(t, admin, "submitting the valid form", chromedp.Click(chromedp.CSS(`#create`)))
	link := pollJS(t, admin, "waiting for the one-time link", 20*time.Second, `(document.querySelector('#invite-link') || {}).value || ""`)
	if !strings.HasPrefix(link, issuer+"/invite/inv_") {
		t.Fatalf("one-time link = %q", link)
	}
	detailURL := adminLocation(t, admin)
	if !regexp.MustCompile(`/admin/invitations/inv-[A-Za-z0-9_-]+$`).MatchString(detailURL) || strings.Contains(detailURL, "inv_") {
		t.Fatalf("detail page URL = %q (the token must never be in a URL)", detailURL)
	}
	if got := adminText(t, admin, `#inv-status`); got != "pending" {
		t.Errorf("status = %q, want pending", got)
	}
	if got := adminText(t, admin, `#inv-roles`); got != "customer, beta" {
		t.Errorf("roles = %q", got)
	}
	if got := adminText(t, admin, `#inv-claims`); !strings.Contains(got, `"crm_id": "CRM-42"`) {
		t.Errorf("claims = %q", got)
	}
	adminScreenshot(t, admin, shots, "04-detail-pending.png")
	// Revoke asks first: its summary opens a disclosure with the real submit.
	if adminEval(t, admin, `document.querySelector('#revoke').parentElement.open || document.querySelector('#revoke-confirm').checkVisibility() ? "visible" : ""`) != "" {
		t.Errorf("the revoke confirmation is visible before asking")
	}
	do(t, admin, "opening the revoke confirmation", chromedp.Click(chromedp.CSS(`#revoke`)))
	pollJS(t, admin, "waiting for the revoke confirmation", 10*time.Second, `document.querySelector('#revoke').parentElement.open && document.querySelector('#revoke-confirm').checkVisibility()`)
	adminScreenshot(t, admin, shots, "04b-revoke-confirm.png")
	do(t, admin, "reloading the detail page", chromedp.Reload())
	pollJS(t, admin, "waiting for the reloaded detail page", 20*time.Second, `!!document.querySelector('#timeline')`)
	if adminEval(t, admin, `document.querySelector('#invite-link') ? document.querySelector('#invite-link').value : ""`) != "" {
		t.Fatalf("the one-time link is shown a second time")
	}

	// The list: pending, and found by a search on the email.
	do(t, admin, "listing pending invitations", chromedp.Navigate(issuer+"/admin?status=pending"))
	rows := adminEval(t, admin, `[...document.querySelectorAll('#invitation-list tbody tr')].map(r => r.dataset.status + " " + r.querySelector('td').textContent.trim()).join("\n")`)
	if rows != "pending "+inviteeEmail {
		t.Errorf("pending list = %q", rows)
	}
	do(t, admin, "searching by email", chromedp.Navigate(issuer+"/admin?q="+url.QueryEscape(inviteeEmail)))
	if n := adminEval(t, admin, `String(document.querySelectorAll('#invitation-list tbody tr').length)`); n != "1" {
		t.Errorf("search by email found %s rows", n)
	}
	// The filter form: the start of the email in any case, a status and a
	// date, submitted as a GET whose URL keeps them.
	do(t, admin, "opening the dashboard", chromedp.Navigate(issuer+"/admin"))
	fillAndSubmit(t, admin, "searching by the start of the email", `form:has(#filter)`, map[string]string{
		"q": "INVITEE", "status": "pending", "from": time.Now().UTC().AddDate(0, 0, -1).Format(time.DateOnly)})
	pollJS(t, admin, "waiting for the filtered list", 20*time.Second, `location.search.includes("q=INVITEE") && !!document.querySelector('#invitation-list')`)
	if got := adminEval(t, admin, `[...new URLSearchParams(location.search)].map(p => p[0] + "=" + (p[0] === "from" ? "date" : p[1])).join("&") + " " + document.querySelectorAll('#invitation-list tbody tr').length`); got != "status=pending&q=INVITEE&from=date&to= 1" {
		t.Errorf("the filter form's URL and rows = %q", got)
	}

	// On a phone (390 px): the page does not scroll sideways; the list scrolls in its own box.
	do(t, admin, "sizing the window as a phone", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
	for _, page := range []struct{ url, shot string }{{issuer + "/admin", "07-phone-dashboard.png"}, {detailURL, "08-phone-detail.png"}} {
		do(t, admin, "opening "+page.url+" on a phone", chromedp.Navigate(page.url))
		pollJS(t, admin, "waiting for the page on a phone", 20*time.Second, `document.readyState === "complete" && !!document.querySelector('main')`)
		if got := adminEval(t, admin, `document.documentElement.scrollWidth + " " + window.innerWidth`); !fitsWidth(got) {
			t.Errorf("%s on a phone scrolls sideways: scrollWidth innerWidth = %s", page.url, got)
		}
		if got := adminEval(t, admin, `String(Math.round(document.querySelector('header.top').getBoundingClientRect().width) === window.innerWidth)`); got != "true" {
			t.Errorf("%s on a phone: the header does not span the page", page.url)
		}
		adminScreenshot(t, admin, shots, page.shot)
	}
	do(t, admin, "back to the phone dashboard", chromedp.Navigate(issuer+"/admin"))
	if got := adminEval(t, admin, `(() => { const w = document.querySelector('#invitation-scroll'); return String(getComputedStyle(w).overflowX === "auto" && w.scrollWidth > w.clientWidth) })()`); got != "true" {
		t.Errorf("on a phone the invitation list does not scroll in its own box")
	}
	do(t, admin, "sizing the window back", chromedp.EmulateViewport(1360, 900))

	// The invitee, in another browser, follows the link and signs up.
	invitee := newBrowser(t)
	do(t, invitee, "following the copied link", chromedp.Navigate(link))
	signUpAtDevIDP(t, invitee, inviteeEmail, "invitee-password-1", "In Vitee")
	pollJS(t, invitee, "waiting for usher's accept page", 20*time.Second, `!!document.querySelector('#accept')`)
	adminScreenshot(t, invitee, shots, "05-accept-page.png")
	acceptInBrowser(t, invitee, "Demo SPA", inviteeEmail)
	ist := waitSignedIn(t, invitee)
	sub := claimString(ist.IDClaims, "sub")
	if !slices.Equal(rolesOf(ist.IDClaims), []string{"customer", "beta"}) || ist.IDClaims["crm_id"] != "CRM-42" {
		t.Errorf("invitee's ID token: roles %v crm_id %v", rolesOf(ist.IDClaims), ist.IDClaims["crm_id"])
	}

	// The admin sees it redeemed, with its timeline.
	do(t, admin, "reopening the detail page", chromedp.Navigate(detailURL))
	pollJS(t, admin, "waiting for the redeemed status", 20*time.Second, `(document.querySelector('#inv-status') || {}).textContent === "redeemed"`)
	types := adminEval(t, admin, `[...document.querySelectorAll('#timeline li')].map(li => li.dataset.type).join(",")`)
	for _, want := range []string{"created", "opened", "redeemed"} {
		if !slices.Contains(strings.Split(types, ","), want) {
			t.Errorf("timeline %q lacks %q", types, want)
		}
	}
	if got := adminText(t, admin, `#timeline li[data-type="redeemed"] a.user`); got != sub {
		t.Errorf("timeline redeemed by %q, want %q", got, sub)
	}
	if got := adminText(t, admin, `#timeline li[data-type="redeemed"] .connection`); got != "Username-Password-Authentication" {
		t.Errorf("timeline redeemed with connection %q", got)
	}
	if got := adminText(t, admin, `#timeline li[data-type="created"]`); !strings.Contains(got, "Root Admin") {
		t.Errorf("timeline created entry %q does not name the inviter", got)
	}
	if adminEval(t, admin, `document.querySelector('#revoke') ? "shown" : ""`) != "" {
		t.Errorf("a redeemed invitation offers Revoke")
	}
	adminScreenshot(t, admin, shots, "05-detail-redeemed.png")
	do(t, admin, "opening the redeemer", chromedp.Click(chromedp.CSS(`#timeline li[data-type="redeemed"] a.user`)))
	pollJS(t, admin, "waiting for the user page", 20*time.Second, `(document.querySelector('#user-roles') || {}).textContent === "customer, beta"`)
	// Changing a held claim is the operator's action (an invitation never does it).
	// Filled and submitted in one script: node IDs looked up step by step
	// went stale under load right after the navigation ("No node with
	// given id found").
	do(t, admin, "setting crm_id on the user page", chromedp.Evaluate[chromedp.Void](`(() => {
		const f = document.querySelector('#set-claim');
		f.querySelector('input[name=claim]').value = 'crm_id';
		f.querySelector('input[name=value]').value = 'CRM-43';
		document.querySelector('#set-claim-submit').click();
	})()`))
	pollJS(t, admin, "waiting for the changed claim", 20*time.Second, `(document.querySelector('#user-claims') || {}).textContent.includes('"CRM-43"')`)
	if g := apiCall(t, d, http.MethodGet, "/api/users/"+sub+"/grants", api, nil); !strings.Contains(g.raw, `"crm_id":"CRM-43"`) {
		t.Errorf("grant after the admin set crm_id: %s", g.raw)
	}

	// The link form: "authorize" gives an /authorize?…&invitation= link.
	do(t, admin, "back to the dashboard", chromedp.Navigate(issuer+"/admin"))
	fillInviteForm(t, admin, "link-form@example.com", "customer", "", "")
	do(t, admin, "choosing the authorize link form", chromedp.Evaluate[chromedp.Void](`document.getElementById('link').value = 'authorize'`),
		chromedp.Click(chromedp.CSS(`#create`)))
	if link := pollJS(t, admin, "waiting for the authorize link", 20*time.Second, `(document.querySelector('#invite-link') || {}).value || ""`); !strings.HasPrefix(link, issuer+"/authorize?client_id=") || !strings.Contains(link, "invitation=inv_") {
		t.Errorf("admin page, link form authorize: %q", link)
	}

	// CSRF: a POST from the admin's own browser without the token is refused.
	do(t, admin, "back to the dashboard", chromedp.Navigate(issuer+"/admin"))
	fillInviteForm(t, admin, "csrf-victim@example.com", "customer", "", "")
	do(t, admin, "removing the CSRF token", chromedp.Evaluate[chromedp.Void](`document.querySelector('#invite-form input[name=csrf]').remove()`))
	do(t, admin, "submitting without the token", chromedp.Click(chromedp.CSS(`#create`)))
	pollJS(t, admin, "waiting for the refusal", 20*time.Second, `(document.querySelector('#title') || {}).textContent === "Form expired"`)
	if r := apiCall(t, d, http.MethodGet, "/api/invitations?email=csrf-victim@example.com", api, nil); r.status != http.StatusOK || strings.Contains(r.raw, "csrf-victim") {
		t.Errorf("an invitation was created without the CSRF token: %d %s", r.status, r.raw)
	}
	// …and a cross-origin POST is refused before anything else.
	req, _ := http.NewRequest(http.MethodPost, issuer+"/admin/invitations", strings.NewReader("csrf=x&email=evil%40example.com"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://evil.example")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-origin POST: %d, want 403", resp.StatusCode)
	}
	for k, want := range map[string]string{"X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") ||
		!strings.Contains(csp, "script-src 'nonce-") || strings.Contains(csp, "unsafe-inline") {
		t.Errorf("Content-Security-Policy = %q", csp)
	}

	// A non-admin: self sign-up through the demo SPA, then /admin → 403.
	other := newBrowser(t)
	do(t, other, "sizing the window", chromedp.EmulateViewport(1360, 900))
	do(t, other, "opening the demo SPA",
		chromedp.Navigate(d.SPAURL),
		chromedp.WaitVisible(chromedp.CSS(`body[data-ready="1"] #signup`)),
		chromedp.Click(chromedp.CSS(`#signup`)),
	)
	signUpAtDevIDP(t, other, "plain-user@example.com", "plain-password-1", "Plain User")
	waitSignedIn(t, other)
	signInToAdmin(t, other, d, "plain-user@example.com", "plain-password-1")
	pollJS(t, other, "waiting for the 403 page", 20*time.Second,
		`location.href === `+jsString(issuer+"/admin")+` && (document.querySelector('#title') || {}).textContent === "You cannot use the admin page"`)
	if msg := adminText(t, other, `#message`); msg != "You are signed in as plain-user@example.com, who does not hold the role usher:admin." {
		t.Errorf("403 message = %q", msg)
	}
	adminScreenshot(t, other, shots, "06-forbidden.png")
	forbidden, err := chromedp.Run(other, chromedp.NavigateResponse(issuer+"/admin"))
	if err != nil {
		failWithPage(t, other, "reloading /admin as a non-admin", err)
	}
	if forbidden.Status != http.StatusForbidden {
		t.Errorf("/admin for a non-admin answered %d, want 403", forbidden.Status)
	}
	if csp, _ := forbidden.Headers["Content-Security-Policy"].(string); !strings.Contains(csp, "frame-ancestors 'none'") ||
		!strings.Contains(csp, "style-src 'nonce-") || strings.Contains(csp, "unsafe-inline") {
		t.Errorf("admin page CSP = %q", csp)
	}
	if xfo, _ := forbidden.Headers["X-Frame-Options"].(string); xfo != "DENY" {
		t.Errorf("admin page X-Frame-Options = %q", xfo)
	}

	// Sign out clears the session.
	do(t, admin, "signing out", chromedp.Navigate(issuer+"/admin"), chromedp.Click(chromedp.CSS(`#signout`)))
	pollJS(t, admin, "waiting for the signed-out page", 20*time.Second,
		`location.pathname === "/admin/signed-out" && (document.querySelector('#title') || {}).textContent.includes("signed out")`)
	cookies := adminEval(t, admin, `document.cookie`) // HttpOnly: the session cookie never shows here
	if strings.Contains(cookies, "usher_session") {
		t.Errorf("session cookie readable from script: %q", cookies)
	}
}

// signInToAdmin opens /admin and completes the upstream sign-in, which may
// happen silently when the browser is still signed in upstream.
func signInToAdmin(t *testing.T, ctx context.Context, d *app.Dev, email, password string) {
	t.Helper()
	issuer := strings.TrimSuffix(d.IssuerURL, "/")
	do(t, ctx, "opening /admin", chromedp.Navigate(issuer+"/admin"))
	where := pollJS(t, ctx, "waiting for the admin page or the upstream login", 20*time.Second,
		`location.href.startsWith(`+jsString(issuer+"/admin")+`) && document.readyState === "complete" && !!document.querySelector('main') ? "usher" :
		 document.querySelector('form[action="/u/login"]') ? "login" : ""`)
	if where == "login" {
		signInAtDevIDP(t, ctx, email, password)
	}
}

func fillInviteForm(t *testing.T, ctx context.Context, email, roles, claims, metadata string) {
	t.Helper()
	// Values set from script (chromedp.SetValue refuses an empty value).
	set := func(id, v string) string {
		return `document.getElementById(` + jsString(id) + `).value = ` + strconv.Quote(v) + `;`
	}
	do(t, ctx, "filling the invite form",
		chromedp.WaitVisible(chromedp.CSS(`#invite-form #email`)),
		chromedp.Evaluate[chromedp.Void](set("email", email)+set("roles_text", roles)+set("claims", claims)+set("metadata", metadata)),
		chromedp.Click(chromedp.CSS(`#delivery-link`)),
	)
}

func adminEval(t *testing.T, ctx context.Context, js string) string {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
	if err != nil {
		failWithPage(t, ctx, "evaluating "+js, err)
	}
	return v
}

func adminText(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	return strings.TrimSpace(adminEval(t, ctx, `(document.querySelector(`+jsString(sel)+`) || {}).textContent || ""`))
}

func adminLocation(t *testing.T, ctx context.Context) string {
	t.Helper()
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		failWithPage(t, ctx, "reading the location", err)
	}
	return loc
}

// fitsWidth reads "scrollWidth innerWidth" and reports scrollWidth <= innerWidth.
func fitsWidth(s string) bool {
	w, iw, ok := strings.Cut(s, " ")
	a, err1 := strconv.Atoi(w)
	b, err2 := strconv.Atoi(iw)
	return ok && err1 == nil && err2 == nil && a <= b
}

// adminArtifactsDir is the test's artifact directory (testing.T.ArtifactDir):
// kept under -outputdir with `go test -artifacts` (make test-artifacts),
// a temporary directory otherwise.
func adminArtifactsDir(t *testing.T) string {
	t.Helper()
	return t.ArtifactDir()
}

// adminScreenshot saves a full-page PNG (quality 100; below it chromedp
// captures JPEG, which the project's image viewers do not open).
func adminScreenshot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		failWithPage(t, ctx, "taking the screenshot "+name, err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", p)
}
