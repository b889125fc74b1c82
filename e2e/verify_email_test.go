package e2e

import (
	"html"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/internal/testkit"
)

// verificationLink is the newest verification mail devidp sent to email.
func verificationLink(t *testing.T, d *app.Dev, email string, want int) string {
	t.Helper()
	mails := d.IDP.VerificationMails(email)
	if len(mails) != want {
		t.Fatalf("%d verification mails to %s, want %d", len(mails), email, want)
	}
	return mails[len(mails)-1].Link
}

// followVerificationLink opens the mail's link in a browser of its own (the
// mailbox is often elsewhere).
func followVerificationLink(t *testing.T, link string) {
	t.Helper()
	resp, err := http.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("verification link: %d", resp.StatusCode)
	}
}

// An Auth0-style database sign-up is unverified until the verification mail
// is followed. Invited with email_match exact, the person accepts, is asked
// to verify (not told "another email address"), Continue before verifying
// changes nothing, a resend mails again, and Continue after following the
// link redeems: the app gets the roles. (Before this, the same flow ended
// on "This invitation can only go to a verified address" with no way on.)
func TestBrowserVerifyEmailThenContinue(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	api := funnelToken(t, d, "invitations:write invitations:read")
	const email = "ada2@example.com"
	inv := invite(t, d, api, map[string]any{"email": email, "roles": []string{"customer"}, "email_match": "exact", "send_email": false})
	status := func() string {
		return apiCall(t, d, http.MethodGet, "/api/invitations/"+inv["id"].(string), api, nil).body["status"].(string)
	}
	ctx := newBrowser(t)
	do(t, ctx, "following the invitation link", chromedp.Navigate(inv["url"].(string)))
	signUpAtDevIDP(t, ctx, email, "ada2-password-1", "Ada Two")
	pollJS(t, ctx, "waiting for the accept page's unverified note", 20*time.Second, `!!document.querySelector('#unverified')`)
	acceptInBrowser(t, ctx, "Demo SPA", email)

	pollJS(t, ctx, "waiting for the verify page", 20*time.Second,
		`document.querySelector('#title') && document.querySelector('#title').textContent.includes('Verify your email') && !document.querySelector('#note')`)
	if _, err := os.Stat(axePath); err == nil { // make test installs it
		checkA11y(t, ctx, axeSource(t), "the verify page")
	}
	if s := status(); s != "pending" {
		t.Fatalf("invitation %s before verification, want pending", s)
	}
	// Each answer comes back to the page with a note saying what happened.
	waitNote := func(what, want string) {
		pollJS(t, ctx, what, 20*time.Second, `((document.querySelector('#note') || {}).textContent || "").includes(`+strconv.Quote(want)+`)`)
	}
	do(t, ctx, "pressing Continue before verifying", chromedp.Click(chromedp.CSS(`#continue`)))
	waitNote("waiting for the verify page again", "not verified yet")
	do(t, ctx, "pressing Resend", chromedp.Click(chromedp.CSS(`#resend`)))
	waitNote("waiting for the resend note", "on its way")
	followVerificationLink(t, verificationLink(t, d, email, 2))
	do(t, ctx, "pressing Continue after verifying", chromedp.Click(chromedp.CSS(`#continue`)))
	st := waitSignedIn(t, ctx)
	if !slices.Equal(rolesOf(st.IDClaims), []string{"customer"}) || st.IDClaims["email_verified"] != true {
		t.Fatalf("ID token after verification: %v", st.IDClaims)
	}
	if s := status(); s != "redeemed" {
		t.Fatalf("invitation %s after verification, want redeemed", s)
	}
	auditWhen(t, d, "/api/audit?action=invitation.awaiting_verification", api, func(r apiResult) bool {
		recs, _ := r.body["records"].([]any)
		return len(recs) == 1
	})
}

// verifyPageOf is usher's verify page as an agent shows it.
type verifyPageOf struct {
	a          *agent
	body, base string
}

// acceptUnverified signs up as email with the invitation and presses
// Accept: the verify page.
func acceptUnverified(t *testing.T, d *app.Dev, token, email string) verifyPageOf {
	t.Helper()
	a := newAgent(t, d.SPAURL)
	u, _, _ := authorizeURL(d, url.Values{"invitation": {token}, "screen_hint": {"signup"}})
	resp, body := a.get(u)
	resp, body = a.devidpForm(resp, body, "signup", url.Values{"email": {email}, "password": {"password-123456"}, "name": {"V"}})
	if !strings.Contains(body, `id="unverified"`) {
		t.Fatalf("the accept page does not say the email is unverified:\n%s", clipText(body))
	}
	resp, body = a.answerAccept(resp, body, "accept")
	if resp.Request.URL.Path != "/invitation/verify" || !strings.Contains(body, "Verify your email") {
		t.Fatalf("Accept with an unverified email: %d at %s\n%s", resp.StatusCode, resp.Request.URL, clipText(body))
	}
	return verifyPageOf{a: a, body: body, base: resp.Request.URL.Scheme + "://" + resp.Request.URL.Host}
}

// signInOffered signs in with a fresh agent and reports whether usher
// offered the invitation (its accept page) before the app got a code.
func signInOffered(t *testing.T, d *app.Dev, email string) (offered bool, roles []string) {
	t.Helper()
	a := newAgent(t, d.SPAURL)
	u, verifier, _ := authorizeURL(d, nil)
	resp, body := a.get(u)
	resp, body = a.devidpForm(resp, body, "login", url.Values{"email": {email}, "password": {"password-123456"}})
	if offered = isAcceptPage(resp, body); offered {
		resp, body = a.answerAccept(resp, body, "accept")
	}
	q := a.callbackOf(resp, body)
	return offered, rolesOf(jwtClaims(t, exchangeCode(t, d, q.Get("code"), verifier).IDToken))
}

// Verifying takes days and happens elsewhere: the record is server-side.
// Before verification a fresh sign-in in a new browser does not offer the
// invitation; after it, one does (the accept page again: the invitation
// binds only when the person accepts), and the grant follows. The wait is
// announced once by an invitation.awaiting_verification webhook; "Not now"
// on the verify page leaves it waiting.
func TestVerifiedLaterFreshSignInOffersInvitation(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		policy, invited, person string
	}{
		{"exact", "later@example.com", "later@example.com"},
		// A domain policy: sent to one address, accepted with another of the
		// domain; the next sign-in finds it by who accepted, not by address.
		{"domain", "boss@later.example", "dev@later.example"},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			t.Parallel()
			verifiedLaterFreshSignIn(t, tc.policy, tc.invited, tc.person)
		})
	}
}

func verifiedLaterFreshSignIn(t *testing.T, policy, invited, person string) {
	d, rc := startDevWithWebhooks(t, "invitation.awaiting_verification")
	api := funnelToken(t, d, "invitations:write invitations:read")
	inv := invite(t, d, api, map[string]any{"email": invited, "roles": []string{"customer"}, "email_match": policy, "send_email": false})
	p := acceptUnverified(t, d, tokenOf(inv["url"].(string)), person)
	// "Not now": the sign-in goes on without the invitation (never blocking).
	resp, body := p.answer("later")
	if q := p.a.callbackOf(resp, body); q.Get("code") == "" {
		t.Fatalf("Not now on the verify page: %v", q)
	}
	testkit.Eventually(t, "the invitation.awaiting_verification webhook", func() bool {
		return slices.Contains(rc.types(), "invitation.awaiting_verification")
	})

	if offered, roles := signInOffered(t, d, person); offered || len(roles) != 0 {
		t.Fatalf("before verification a fresh sign-in: offered %v, roles %v", offered, roles)
	}
	followVerificationLink(t, verificationLink(t, d, person, 1))
	if offered, roles := signInOffered(t, d, person); !offered || !slices.Equal(roles, []string{"customer"}) {
		t.Fatalf("after verification a fresh sign-in: offered %v, roles %v", offered, roles)
	}
	if r := apiCall(t, d, http.MethodGet, "/api/invitations/"+inv["id"].(string), api, nil); r.body["status"] != "redeemed" {
		t.Fatalf("invitation: %s", r.raw)
	}
}

// Expiry still applies: an invitation that expired while the person was
// verifying is not redeemed by Continue (the expired refusal is shown),
// nor offered at the next sign-in.
func TestVerifiedAfterExpiryNotRedeemed(t *testing.T) {
	t.Parallel()
	clock := &testClock{}
	d := startDev(t, app.DevOptions{Now: clock.Now})
	api := funnelToken(t, d, "invitations:write invitations:read")
	const email = "slow@example.com"
	inv := invite(t, d, api, map[string]any{"email": email, "roles": []string{"customer"}, "email_match": "exact", "send_email": false, "expires_in": 60})
	p := acceptUnverified(t, d, tokenOf(inv["url"].(string)), email)
	followVerificationLink(t, verificationLink(t, d, email, 1))
	clock.Advance(2 * time.Minute)

	resp, body := p.answer("continue")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "expired") {
		t.Fatalf("Continue after expiry: %d at %s\n%s", resp.StatusCode, resp.Request.URL, clipText(body))
	}
	if r := apiCall(t, d, http.MethodGet, "/api/invitations/"+inv["id"].(string), api, nil); r.body["status"] != "expired" {
		t.Fatalf("invitation: %s", r.raw)
	}
	if offered, roles := signInOffered(t, d, email); offered || len(roles) != 0 {
		t.Fatalf("an expired invitation at the next sign-in: offered %v, roles %v", offered, roles)
	}
}

// answer presses a button of the verify page.
func (p verifyPageOf) answer(action string) (*http.Response, string) {
	p.a.t.Helper()
	form := url.Values{"action": {action}}
	for _, m := range acceptFieldRE.FindAllStringSubmatch(p.body, -1) {
		form.Set(m[1], html.UnescapeString(m[2]))
	}
	req, _ := http.NewRequest(http.MethodPost, p.base+"/invitation/verify", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", p.base)
	r, err := p.a.client.Do(req)
	if err != nil {
		p.a.t.Fatalf("POST /invitation/verify: %v", err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return r, string(b)
}

// Without an answer from the Management API (down here; absent for a
// generic upstream), Continue asks through a new upstream round trip past
// usher's own session: unverified, the verify page again; verified, the
// accept page again, then the roles.
func TestVerifyContinueThroughUpstreamRoundTrip(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	api := funnelToken(t, d, "invitations:write invitations:read")
	const email = "roundtrip@example.com"
	inv := invite(t, d, api, map[string]any{"email": email, "roles": []string{"customer"}, "email_match": "exact", "send_email": false})
	p := acceptUnverified(t, d, tokenOf(inv["url"].(string)), email)
	d.IDP.ManagementDown(true)

	resp, body := p.answer("continue")
	if resp.Request.URL.Path != "/invitation/verify" || !strings.Contains(body, "not verified yet") {
		t.Fatalf("Continue before verifying: %d at %s\n%s", resp.StatusCode, resp.Request.URL, clipText(body))
	}
	followVerificationLink(t, verificationLink(t, d, email, 1))
	p.body = body
	resp, body = p.answer("continue")
	resp, body = p.a.answerAccept(resp, body, "accept")
	q := p.a.callbackOf(resp, body)
	if q.Get("code") == "" {
		t.Fatalf("after the round trip: %v", q)
	}
	if r := apiCall(t, d, http.MethodGet, "/api/invitations/"+inv["id"].(string), api, nil); r.body["status"] != "redeemed" {
		t.Fatalf("invitation: %s", r.raw)
	}
}

// Resend asks Auth0 (devidp) for a new mail at most once a minute per page;
// the page answers only the browser and account it was shown to.
func TestVerifyPageResendAndBinding(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	api := funnelToken(t, d, "invitations:write invitations:read")
	const email = "resend@example.com"
	inv := invite(t, d, api, map[string]any{"email": email, "roles": []string{"customer"}, "email_match": "exact", "send_email": false})
	p := acceptUnverified(t, d, tokenOf(inv["url"].(string)), email)
	other := p
	other.a = newAgent(t, d.SPAURL) // another browser with the page's fields
	steps := []struct {
		name      string
		page      *verifyPageOf
		action    string
		wantBody  string
		wantMails int
	}{
		{"resend", &p, "resend", "on its way", 2},
		{"resend again at once", &p, "resend", "on its way", 2},
		{"another browser", &other, "continue", "This page expired", 2},
		{"another browser resends", &other, "resend", "This page expired", 2},
	}
	for _, s := range steps {
		resp, body := s.page.answer(s.action)
		if !strings.Contains(body, s.wantBody) {
			t.Fatalf("%s: %d at %s\n%s", s.name, resp.StatusCode, resp.Request.URL, clipText(body))
		}
		if s.page == &p {
			p.body = body // each answer gives the page a new CSRF token
		}
		if n := len(d.IDP.VerificationMails(email)); n != s.wantMails {
			t.Fatalf("%s: %d verification mails, want %d", s.name, n, s.wantMails)
		}
	}
	if r := apiCall(t, d, http.MethodGet, "/api/invitations/"+inv["id"].(string), api, nil); r.body["status"] != "pending" {
		t.Fatalf("invitation: %s", r.raw)
	}
}

// The same browser days later, still signed in to usher: a sign-in that
// usher's own session would answer asks the upstream first (the Management
// API, else a round trip), and offers the invitation once verified.
func TestVerifiedLaterSameBrowserSession(t *testing.T) {
	t.Parallel()
	for _, managementDown := range []bool{false, true} {
		t.Run(map[bool]string{false: "management API", true: "upstream round trip"}[managementDown], func(t *testing.T) {
			t.Parallel()
			d := startDev(t, app.DevOptions{})
			api := funnelToken(t, d, "invitations:write invitations:read")
			const email = "samebrowser@example.com"
			inv := invite(t, d, api, map[string]any{"email": email, "roles": []string{"customer"}, "email_match": "exact", "send_email": false})
			p := acceptUnverified(t, d, tokenOf(inv["url"].(string)), email)
			p.answer("later") // into the app without it; usher's session stays
			signIn := func() (offered bool, roles []string) {
				u, verifier, _ := authorizeURL(d, nil)
				resp, body := p.a.get(u)
				if offered = isAcceptPage(resp, body); offered {
					resp, body = p.a.answerAccept(resp, body, "accept")
				}
				return offered, rolesOf(jwtClaims(t, exchangeCode(t, d, p.a.callbackOf(resp, body).Get("code"), verifier).IDToken))
			}
			if offered, roles := signIn(); offered || len(roles) != 0 {
				t.Fatalf("unverified, from the session: offered %v, roles %v", offered, roles)
			}
			followVerificationLink(t, verificationLink(t, d, email, 1))
			d.IDP.ManagementDown(managementDown)
			if offered, roles := signIn(); !offered || !slices.Equal(roles, []string{"customer"}) {
				t.Fatalf("verified, same browser: offered %v, roles %v", offered, roles)
			}
			if offered, roles := signIn(); offered || !slices.Equal(roles, []string{"customer"}) {
				t.Fatalf("after the redemption: offered %v, roles %v", offered, roles)
			}
		})
	}
}
