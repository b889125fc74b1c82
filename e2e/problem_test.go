package e2e

import (
	"html"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/usher-oidc/usher/app"
)

var problemFieldRE = regexp.MustCompile(`<input type="hidden" name="(id|csrf)" value="([^"]*)">`)

// answerProblem presses "Use another account" on usher's invitation problem page.
func (a *agent) answerProblem(resp *http.Response, body string) (*http.Response, string) {
	a.t.Helper()
	if !strings.Contains(body, `action="/invitation/problem"`) {
		a.t.Fatalf("expected the problem page with \"Use another account\", got %d at %s\n%s", resp.StatusCode, resp.Request.URL, clipText(body))
	}
	form := url.Values{"action": {"other"}}
	for _, m := range problemFieldRE.FindAllStringSubmatch(body, -1) {
		form.Set(m[1], html.UnescapeString(m[2]))
	}
	u := *resp.Request.URL
	u.RawQuery = ""
	req, _ := http.NewRequest(http.MethodPost, u.String(), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", u.Scheme+"://"+u.Host)
	r, err := a.client.Do(req)
	if err != nil {
		a.t.Fatalf("POST %s: %v", u.String(), err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return r, string(b)
}

func hrefOf(t *testing.T, body, id string) string {
	t.Helper()
	m := regexp.MustCompile(`id="` + id + `" href="([^"]*)"`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no link #%s:\n%s", id, clipText(body))
	}
	return html.UnescapeString(m[1])
}

// The email-mismatch page: after the callback the browser lands on a stable
// URL (a reload shows the page again, never /callback?code=… again), which
// names both addresses, says once what would work, and offers "Use another
// account" (upstream again with prompt=login and the invited email, carrying
// the invitation), "Continue without the invitation" and "Back to <app>".
func TestEmailMismatchPage(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	api := funnelToken(t, d, "invitations:write invitations:read")
	inv := invite(t, d, api, map[string]any{"email": app.DevUserEmail, "roles": []string{"customer"}, "email_match": "exact", "send_email": false})
	tok := tokenOf(inv["url"].(string))

	signInWrong := func(email string) (*agent, *http.Response, string, string) {
		a := newAgent(t, d.SPAURL)
		u, verifier, _ := authorizeURL(d, url.Values{"invitation": {tok}, "screen_hint": {"signup"}})
		resp, body := a.get(u)
		resp, body = a.devidpForm(resp, body, "signup", url.Values{"email": {email}, "password": {"password-123456"}, "name": {"W"}})
		return a, resp, body, verifier
	}

	a, resp, body, verifier := signInWrong("wrong@example.com")
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/invitation/problem" {
		t.Fatalf("after the callback: %d at %s, want the problem page at a stable URL\n%s", resp.StatusCode, resp.Request.URL, clipText(body))
	}
	for _, want := range []string{app.DevUserEmail, "wrong@example.com", ">Use another account<", ">Continue without the invitation<", ">Back to Demo SPA<"} {
		if !strings.Contains(body, want) {
			t.Errorf("the mismatch page lacks %q:\n%s", want, clipText(body))
		}
	}
	if n := strings.Count(strings.ToLower(body), "continue without"); n != 1 {
		t.Errorf("the page says \"continue without\" %d times, want once (the link):\n%s", n, clipText(body))
	}
	if back := hrefOf(t, body, "back"); !strings.HasPrefix(back, d.SPAURL+"/login") {
		t.Errorf("Back to the app links to %s, want the SPA's initiate_login_uri", back)
	}
	// A reload shows the same page, not a dead /callback.
	problemURL := resp.Request.URL.String()
	again, againBody := a.get(problemURL)
	if again.StatusCode != http.StatusOK || !strings.Contains(againBody, "wrong@example.com") {
		t.Fatalf("reloading the problem page: %d\n%s", again.StatusCode, clipText(againBody))
	}
	// Another browser cannot see it.
	if r, _ := newAgent(t, d.SPAURL).get(problemURL); r.StatusCode != http.StatusBadRequest {
		t.Errorf("another browser opening the problem page: %d, want 400", r.StatusCode)
	}

	// "Use another account": upstream again with prompt=login and the invited
	// email; signing in as the invitee reaches the accept page.
	resp, body = a.answerProblem(resp, body)
	if !strings.Contains(body, `action="/u/login"`) || !strings.Contains(body, app.DevUserEmail) {
		t.Fatalf("\"Use another account\" must show the upstream login with the invited email, got %d at %s\n%s", resp.StatusCode, resp.Request.URL, clipText(body))
	}
	if up := upstreamAuthorize(resp); up == nil || up.Query().Get("prompt") != "login" || up.Query().Get("login_hint") != app.DevUserEmail {
		t.Errorf("upstream authorize request = %v, want prompt=login and the invited login_hint", up)
	}
	resp, body = a.devidpForm(resp, body, "login", url.Values{"email": {app.DevUserEmail}, "password": {app.DevUserPassword}})
	resp, body = a.answerAccept(resp, body, "accept")
	c := jwtClaims(t, exchangeCode(t, d, a.callbackOf(resp, body).Get("code"), verifier).IDToken)
	if !slices.Equal(rolesOf(c), []string{"customer"}) || c["email"] != app.DevUserEmail {
		t.Fatalf("after another account: %v", c)
	}
	// The old problem page is gone.
	if r, _ := a.get(problemURL); r.StatusCode != http.StatusBadRequest {
		t.Errorf("the problem page after the answer: %d, want 400", r.StatusCode)
	}

	// "Continue without the invitation" signs the wrong account in, with nothing.
	inv2 := invite(t, d, api, map[string]any{"email": app.DevAdminEmail, "roles": []string{"customer"}, "email_match": "exact", "send_email": false})
	tok = tokenOf(inv2["url"].(string))
	b, resp, body, verifier := signInWrong("wrong-two@example.com")
	resp, body = b.get(hrefOf(t, body, "continue"))
	c = jwtClaims(t, exchangeCode(t, d, b.callbackOf(resp, body).Get("code"), verifier).IDToken)
	if c["email"] != "wrong-two@example.com" || len(rolesOf(c)) != 0 {
		t.Fatalf("continue without the invitation: %v", c)
	}
	if st, _ := invitationStatus(t, d, api, inv2["id"].(string)); st != "pending" {
		t.Fatalf("a refused invitation is %s", st)
	}
}
