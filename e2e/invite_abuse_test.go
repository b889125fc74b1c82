package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
)

// testClock is usher's clock in tests that need days to pass.
type testClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

func tokenOf(link string) string { return link[strings.LastIndex(link, "/")+1:] }

// signInWithInvitation runs authorize with the invitation parameter,
// submits the devidp form the upstream shows (login or signup) and, when
// usher shows its accept page, presses Accept; it returns the final
// response: a redirect to the SPA, or usher's interstitial.
func (a *agent) signInWithInvitation(d *app.Dev, invToken, form string, vals url.Values) (*http.Response, string, string) {
	a.t.Helper()
	extra := url.Values{}
	if invToken != "" {
		extra.Set("invitation", invToken)
	}
	if form == "signup" {
		extra.Set("screen_hint", "signup")
	}
	u, verifier, _ := authorizeURL(d, extra)
	resp, body := a.get(u)
	if !strings.HasPrefix(resp.Header.Get("Location"), a.stopAt) {
		resp, body = a.devidpForm(resp, body, form, vals)
	}
	if isAcceptPage(resp, body) {
		resp, body = a.answerAccept(resp, body, "accept")
	}
	return resp, body, verifier
}

func subOf(t *testing.T, d *app.Dev, a *agent, resp *http.Response, body, verifier string) string {
	t.Helper()
	if resp.StatusCode == http.StatusOK && strings.Contains(body, "could not be used") {
		// Interstitial: continue without the invitation.
		i := strings.Index(body, `id="continue" href="`)
		link := body[i+len(`id="continue" href="`):]
		link = strings.ReplaceAll(link[:strings.Index(link, `"`)], "&amp;", "&")
		resp, body = a.get(link)
	}
	q := a.callbackOf(resp, body)
	tr := exchangeCode(t, d, q.Get("code"), verifier)
	if tr.IDToken == "" {
		t.Fatalf("no ID token: %+v", tr)
	}
	a.lastIDClaims = jwtClaims(t, tr.IDToken)
	return claimString(a.lastIDClaims, "sub")
}

// Used, expired, revoked and altered links each show their page with the
// right status, and grant nothing even when pushed through /authorize.
func TestInvitationLinkStates(t *testing.T) {
	t.Parallel()
	clock := &testClock{}
	d := startDev(t, app.DevOptions{Now: clock.Now})
	api := funnelToken(t, d, "invitations:write invitations:read")

	used := invite(t, d, api, map[string]any{"email": "used@example.com", "roles": []string{"r"}, "send_email": false})
	a := newAgent(t, d.SPAURL)
	resp, body, v := a.signInWithInvitation(d, tokenOf(used["url"].(string)), "signup",
		url.Values{"email": {"used@example.com"}, "password": {"password-123456"}, "name": {"U"}})
	subOf(t, d, a, resp, body, v)

	revoked := invite(t, d, api, map[string]any{"email": "rev@example.com", "roles": []string{"r"}, "send_email": false})
	if r := apiCall(t, d, http.MethodDelete, "/api/invitations/"+revoked["id"].(string), api, nil); r.status != http.StatusOK || r.body["status"] != "revoked" {
		t.Fatalf("revoke: %d %s", r.status, r.raw)
	}
	if r := apiCall(t, d, http.MethodDelete, "/api/invitations/"+used["id"].(string), api, nil); r.status != http.StatusConflict {
		t.Fatalf("revoking a redeemed invitation: %d %s, want 409", r.status, r.raw)
	}
	expiring := invite(t, d, api, map[string]any{"email": "exp@example.com", "roles": []string{"r"}, "send_email": false, "expires_in": 60})
	resent := invite(t, d, api, map[string]any{"email": "resent@example.com", "roles": []string{"r"}, "send_email": false})
	rs := apiCall(t, d, http.MethodPost, "/api/invitations/"+resent["id"].(string)+"/resend", api, nil)
	if rs.status != http.StatusOK || rs.body["url"] == resent["url"] || rs.body["url"] == nil {
		t.Fatalf("resend: %d %s", rs.status, rs.raw)
	}
	clock.Advance(2 * time.Minute)

	good := tokenOf(invite(t, d, api, map[string]any{"email": "x@example.com", "send_email": false})["url"].(string))
	altered := []byte(good)
	if altered[10] == 'A' {
		altered[10] = 'B'
	} else {
		altered[10] = 'A'
	}

	tests := []struct {
		name, token string
		status      int
		text        string
	}{
		{"used", tokenOf(used["url"].(string)), http.StatusGone, "already been used"},
		{"revoked", tokenOf(revoked["url"].(string)), http.StatusGone, "withdrawn"},
		{"expired", tokenOf(expiring["url"].(string)), http.StatusGone, "expired"},
		{"replaced by resend", tokenOf(resent["url"].(string)), http.StatusNotFound, "not valid"},
		{"one character changed", string(altered), http.StatusNotFound, "not valid"},
		{"garbage", "inv_%3Cscript%3E", http.StatusNotFound, "not valid"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := newAgent(t, d.SPAURL)
			resp, body := a.get(strings.TrimSuffix(d.IssuerURL, "/") + "/invite/" + tc.token)
			if resp.StatusCode != tc.status || !strings.Contains(body, tc.text) || !strings.Contains(body, "Sign in without the invitation") {
				t.Fatalf("GET /invite: %d, want %d with %q\n%s", resp.StatusCode, tc.status, tc.text, clipText(body))
			}
			if resp.Header.Get("Referrer-Policy") != "no-referrer" || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
				t.Errorf("invitation page headers: %v", resp.Header)
			}
			// Pushing the token through /authorize grants nothing either.
			email := "abuse-" + strings.ReplaceAll(tc.name, " ", "-") + "@example.com"
			resp, body, v := a.signInWithInvitation(d, tc.token, "signup", url.Values{"email": {email}, "password": {"password-123456"}, "name": {"A"}})
			if tc.name != "garbage" && tc.name != "one character changed" {
				if resp.StatusCode != http.StatusOK || !strings.Contains(body, "could not be used") {
					t.Fatalf("want the interstitial, got %d\n%s", resp.StatusCode, clipText(body))
				}
			}
			sub := subOf(t, d, a, resp, body, v)
			g := apiCall(t, d, http.MethodGet, "/api/users/"+sub+"/grants", api, nil)
			if roles, _ := g.body["roles"].([]any); len(roles) != 0 {
				t.Errorf("grant after a refused invitation: %s", g.raw)
			}
		})
	}
}

// 50 people redeem one link at the same moment: exactly one gets the grant.
func TestInvitationConcurrentRedemption(t *testing.T) {
	t.Parallel()
	// The 50 racers share one address: lift the per-IP invitation limit.
	d := startDev(t, app.DevOptions{Configure: func(c *config.Config) { c.RateLimits.InvitePerMinute = 1000 }})
	api := funnelToken(t, d, "invitations:write invitations:read")
	inv := invite(t, d, api, map[string]any{"email": "shared@example.com", "roles": []string{"winner"}, "send_email": false})
	tok := tokenOf(inv["url"].(string))

	const n = 50
	type result struct {
		sub     string
		granted bool
	}
	results := make([]result, n)
	type pending struct {
		a        *agent
		resp     *http.Response
		body     string
		verifier string
	}
	// Each person signs up and reaches usher's accept page; then all press
	// Accept at once.
	ready := make([]pending, n)
	for i := range n {
		a := newAgent(t, d.SPAURL)
		u, verifier, _ := authorizeURL(d, url.Values{"invitation": {tok}})
		resp, body := a.get(u)
		resp, body = a.devidpForm(resp, body, "signup", url.Values{"email": {fmt.Sprintf("racer%d@example.com", i)}, "password": {"password-123456"}, "name": {"R"}})
		ready[i] = pending{a, resp, body, verifier}
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			p := ready[i]
			resp, body := p.a.answerAccept(p.resp, p.body, "accept")
			granted := resp.StatusCode == http.StatusFound
			results[i] = result{sub: subOf(t, d, p.a, resp, body, p.verifier), granted: granted}
		}(i)
	}
	wg.Wait()
	winners := 0
	for _, r := range results {
		g := apiCall(t, d, http.MethodGet, "/api/users/"+r.sub+"/grants", api, nil)
		roles, _ := g.body["roles"].([]any)
		if len(roles) > 0 {
			winners++
		}
		if (len(roles) > 0) != r.granted {
			t.Errorf("user %s: grant %v but redirect-without-interstitial %v", r.sub, roles, r.granted)
		}
	}
	if winners != 1 {
		t.Fatalf("%d users hold the invitation's grant, want exactly 1", winners)
	}
}

// email_match exact: a different email gets the interstitial and no grant;
// the invited email gets the grant. An existing usher user is sent to the
// login screen, not sign-up; days later the grant is still in the tokens.
func TestInvitationEmailMatchAndExistingUser(t *testing.T) {
	t.Parallel()
	clock := &testClock{}
	d := startDev(t, app.DevOptions{Now: clock.Now})
	api := funnelToken(t, d, "invitations:write invitations:read")
	// Ada has used the app before: usher knows her.
	ada := newAgent(t, d.SPAURL)
	code, v := ada.signIn(d, app.DevUserEmail, app.DevUserPassword, false)
	exchangeCode(t, d, code, v)

	inv := invite(t, d, api, map[string]any{"email": app.DevUserEmail, "roles": []string{"admin", "billing"},
		"claims": map[string]any{"crm_id": "C-7", "plan": "pro"}, "email_match": "exact", "send_email": false})
	tok := tokenOf(inv["url"].(string))

	// Someone else with the link, signed up with another (unverified) email.
	other := newAgent(t, d.SPAURL)
	u, verifier, _ := authorizeURL(d, url.Values{"invitation": {tok}, "screen_hint": {"signup"}})
	resp, body := other.get(u)
	resp, body = other.devidpForm(resp, body, "signup", url.Values{"email": {"mallory@example.com"}, "password": {"password-123456"}, "name": {"M"}})
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "mallory@example.com") || !strings.Contains(body, app.DevUserEmail) || !strings.Contains(body, "Continue without the invitation") {
		t.Fatalf("email mismatch: want the interstitial, got %d\n%s", resp.StatusCode, clipText(body))
	}
	if r := apiCall(t, d, http.MethodGet, "/api/invitations/"+inv["id"].(string), api, nil); r.body["status"] != "pending" {
		t.Fatalf("a refused redemption consumed the invitation: %s", r.raw)
	}
	mallory := subOf(t, d, other, resp, body, verifier)
	if g := apiCall(t, d, http.MethodGet, "/api/users/"+mallory+"/grants", api, nil); len(g.body["roles"].([]any)) != 0 {
		t.Fatalf("mismatched email got a grant: %s", g.raw)
	}

	// Ada follows her link in a fresh browser: login screen (she exists), prefilled.
	fresh := newAgent(t, d.SPAURL)
	fresh.followInvite(inv["url"].(string))
	u, verifier, _ = authorizeURL(d, nil) // cookie path: the SPA passes nothing
	resp, body = fresh.get(u)
	if !strings.Contains(body, `action="/u/login"`) || !strings.Contains(body, app.DevUserEmail) {
		t.Fatalf("an existing user should get the prefilled login screen:\n%s", clipText(body))
	}
	resp, body = fresh.devidpForm(resp, body, "login", url.Values{"email": {app.DevUserEmail}, "password": {app.DevUserPassword}})
	resp, body = fresh.answerAccept(resp, body, "accept")
	q := fresh.callbackOf(resp, body)
	tr := exchangeCode(t, d, q.Get("code"), verifier)
	c := jwtClaims(t, tr.IDToken)
	if !slices.Equal(rolesOf(c), []string{"admin", "billing"}) || c["crm_id"] != "C-7" || c["plan"] != "pro" {
		t.Fatalf("ID token after redemption: %v", c)
	}

	// Ten days later, a plain sign-in still carries the grant.
	clock.Advance(10 * 24 * time.Hour)
	later := newAgent(t, d.SPAURL)
	code, v = later.signIn(d, app.DevUserEmail, app.DevUserPassword, false)
	tr = exchangeCode(t, d, code, v)
	for _, jwt := range []string{tr.IDToken, tr.AccessToken} {
		if c := jwtClaims(t, jwt); !slices.Equal(rolesOf(c), []string{"admin", "billing"}) || c["crm_id"] != "C-7" {
			t.Errorf("ten days later: %v", c)
		}
	}
}

// A simulated Google sign-in redeems like a password sign-up.
func TestInvitationGoogleSignIn(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	api := funnelToken(t, d, "invitations:write invitations:read")
	inv := invite(t, d, api, map[string]any{"email": "gina@gmail.example", "roles": []string{"customer"}, "email_match": "exact", "send_email": false})
	a := newAgent(t, d.SPAURL)
	u, verifier, _ := authorizeURL(d, url.Values{"invitation": {tokenOf(inv["url"].(string))}, "connection": {"google-oauth2"}})
	resp, body := a.get(u)
	resp, body = a.devidpForm(resp, body, "social", url.Values{"connection": {"google-oauth2"}, "email": {"gina@gmail.example"}, "name": {"Gina"}})
	if !strings.Contains(body, "gina@gmail.example</strong> (Google)") {
		t.Fatalf("the accept page should name the Google account:\n%s", clipText(body))
	}
	resp, body = a.answerAccept(resp, body, "accept")
	q := a.callbackOf(resp, body)
	tr := exchangeCode(t, d, q.Get("code"), verifier)
	if c := jwtClaims(t, tr.IDToken); !slices.Equal(rolesOf(c), []string{"customer"}) {
		t.Fatalf("google redemption: %v", c)
	}
	r := apiCall(t, d, http.MethodGet, "/api/invitations/"+inv["id"].(string), api, nil)
	if r.body["status"] != "redeemed" || r.body["redeemed_connection"] != "google-oauth2" {
		t.Fatalf("invitation: %s", r.raw)
	}
}

// Bad requests are refused with a problem naming the field, and store nothing.
func TestInvitationAPIValidation(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{Configure: func(c *config.Config) { c.Invitations.Roles = []string{"customer", "admin"} }})
	api := funnelToken(t, d, "invitations:write invitations:read")
	big := map[string]any{"blob": strings.Repeat("x", 9*1024)}
	tests := []struct {
		name  string
		body  any
		field string
	}{
		{"claim sub", map[string]any{"email": "a@example.com", "claims": map[string]any{"sub": "admin"}}, "claims.sub"},
		{"claim iss", map[string]any{"email": "a@example.com", "claims": map[string]any{"iss": "x"}}, "claims.iss"},
		{"claim roles", map[string]any{"email": "a@example.com", "claims": map[string]any{"roles": []string{"x"}}}, "claims.roles"},
		{"no email", map[string]any{"roles": []string{"customer"}}, "email"},
		{"bad email", map[string]any{"email": "not an email"}, "email"},
		{"display-name email", map[string]any{"email": "Bob <bob@example.com>"}, "email"},
		{"negative expires_in", map[string]any{"email": "a@example.com", "expires_in": -5}, "expires_in"},
		{"31 days", map[string]any{"email": "a@example.com", "expires_in": 31 * 24 * 3600}, "expires_in"},
		{"9 KiB claims", map[string]any{"email": "a@example.com", "claims": big}, "claims"},
		{"role not in catalog", map[string]any{"email": "a@example.com", "roles": []string{"root"}}, "roles[0]"},
		{"unknown client", map[string]any{"email": "a@example.com", "client_id": "nope"}, "client_id"},
		{"bad email_match", map[string]any{"email": "a@example.com", "email_match": "fuzzy"}, "email_match"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := apiCall(t, d, http.MethodPost, "/api/invitations", api, tc.body)
			if r.status != http.StatusBadRequest || r.header.Get("Content-Type") != "application/problem+json" {
				t.Fatalf("%d %s %s, want 400 problem+json", r.status, r.header.Get("Content-Type"), r.raw)
			}
			found := false
			for _, e := range r.body["errors"].([]any) {
				if e.(map[string]any)["field"] == tc.field {
					found = true
				}
			}
			if !found {
				t.Errorf("problem does not name %q: %s", tc.field, r.raw)
			}
		})
	}
	for _, raw := range []string{"", "{", `{"email": 5}`, `{"email":"a@example.com","surprise":1}`, `[]`} {
		r := apiCall(t, d, http.MethodPost, "/api/invitations", api, raw)
		if r.status != http.StatusBadRequest || r.body["detail"] == nil {
			t.Errorf("body %q: %d %s, want 400 with a detail", raw, r.status, r.raw)
		}
	}
	if l := apiCall(t, d, http.MethodGet, "/api/invitations", api, nil); len(l.body["invitations"].([]any)) != 0 {
		t.Fatalf("rejected requests stored invitations: %s", l.raw)
	}

	// Authentication and scope.
	if r := apiCall(t, d, http.MethodPost, "/api/invitations", "", map[string]any{"email": "a@example.com"}); r.status != http.StatusUnauthorized {
		t.Errorf("no token: %d", r.status)
	}
	readOnly := funnelToken(t, d, "invitations:read")
	if r := apiCall(t, d, http.MethodPost, "/api/invitations", readOnly, map[string]any{"email": "a@example.com"}); r.status != http.StatusForbidden {
		t.Errorf("read-only token creating: %d %s", r.status, r.raw)
	}
	if r := apiCall(t, d, http.MethodGet, "/api/invitations", "garbage.token.here", nil); r.status != http.StatusUnauthorized {
		t.Errorf("garbage token: %d", r.status)
	}
}

// Idempotency-Key: a retry returns the first result; another body is a conflict.
// external_id: a second create for a pending CRM id returns the first.
func TestInvitationIdempotencyAndExternalID(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	api := funnelToken(t, d, "invitations:write invitations:read")
	body := map[string]any{"email": "idem@example.com", "roles": []string{"r"}, "send_email": false}
	first := apiCall(t, d, http.MethodPost, "/api/invitations", api, body, "Idempotency-Key", "k-1")
	again := apiCall(t, d, http.MethodPost, "/api/invitations", api, body, "Idempotency-Key", "k-1")
	if first.status != http.StatusCreated || again.status != http.StatusCreated || again.body["id"] != first.body["id"] || again.body["url"] != first.body["url"] {
		t.Fatalf("replay: %d %s / %d %s", first.status, first.raw, again.status, again.raw)
	}
	if again.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replay not marked")
	}
	body["email"] = "other@example.com"
	if c := apiCall(t, d, http.MethodPost, "/api/invitations", api, body, "Idempotency-Key", "k-1"); c.status != http.StatusConflict {
		t.Fatalf("same key, other body: %d %s, want 409", c.status, c.raw)
	}

	crm := map[string]any{"email": "crm@example.com", "external_id": "CRM-1", "send_email": false}
	c1 := apiCall(t, d, http.MethodPost, "/api/invitations", api, crm)
	c2 := apiCall(t, d, http.MethodPost, "/api/invitations", api, crm)
	if c1.status != http.StatusCreated || c2.status != http.StatusOK || c2.body["id"] != c1.body["id"] || c2.body["url"] != nil {
		t.Fatalf("external_id dedupe: %d %s / %d %s", c1.status, c1.raw, c2.status, c2.raw)
	}
	list := apiCall(t, d, http.MethodGet, "/api/invitations?external_id=CRM-1", api, nil)
	if n := len(list.body["invitations"].([]any)); n != 1 {
		t.Fatalf("%d invitations for one external_id", n)
	}
	for _, inv := range list.body["invitations"].([]any) {
		if _, hasURL := inv.(map[string]any)["url"]; hasURL {
			t.Errorf("list shows a link")
		}
	}
}
