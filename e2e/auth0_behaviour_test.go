package e2e

import (
	"bytes"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
	"github.com/usher-oidc/usher/devidp"
)

// logBuffer is a slog destination tests can read while usher writes to it.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func startDevLogged(t *testing.T, o app.DevOptions) (*app.Dev, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	o.Logger = app.NewLogger(logs, "text", "info") // with request IDs, as in production
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(logs.String())
		}
	})
	return startDev(t, o), logs
}

// genericOIDC turns the dev upstream from the Auth0 preset into a plain
// OIDC provider (same devidp, no Auth0 conventions, no Management API).
func genericOIDC(c *config.Config) {
	a := c.Upstream.Auth0
	c.Upstream.Issuer = strings.TrimSuffix(a.Domain, "/") + "/"
	c.Upstream.ClientID, c.Upstream.ClientSecret = a.ClientID, a.ClientSecret
	c.Upstream.Auth0 = config.Auth0{}
}

// upstreamCallback signs in at devidp with email/password and returns what
// usher sends the SPA (code or error) without failing on an error.
func upstreamCallback(t *testing.T, d *app.Dev, email, password string) (q url.Values, state string) {
	t.Helper()
	a := newAgent(t, d.SPAURL)
	u, _, state := authorizeURL(d, nil)
	resp, body := a.get(u)
	if !strings.HasPrefix(resp.Header.Get("Location"), a.stopAt) {
		resp, body = a.devidpForm(resp, body, "login", url.Values{"email": {email}, "password": {password}})
	}
	return a.callbackOf(resp, body), state
}

// An Auth0 Action or Rule that denies the sign-in reaches the SPA as an
// OIDC error with the person-facing description; Rules' error=unauthorized,
// no OIDC code, becomes access_denied. usher logs it with the request ID.
func TestAuth0DenialReachesTheApp(t *testing.T) {
	t.Parallel()
	d, logs := startDevLogged(t, app.DevOptions{})
	for _, tc := range []struct{ upstream, want string }{
		{"access_denied", "access_denied"}, {"unauthorized", "access_denied"},
		{"temporarily_unavailable", "temporarily_unavailable"}, {"server_error", "server_error"},
	} {
		desc := "Your account is suspended (" + tc.upstream + ")."
		d.IDP.Misbehave(devidp.Misbehavior{Deny: &devidp.Denial{Email: app.DevUserEmail, Error: tc.upstream, Description: desc}})
		q, state := upstreamCallback(t, d, app.DevUserEmail, app.DevUserPassword)
		if q.Get("error") != tc.want || q.Get("error_description") != desc || q.Get("state") != state || q.Get("code") != "" {
			t.Errorf("upstream %s: the SPA got %v, want %s with %q", tc.upstream, q, tc.want, desc)
		}
		if !logged(logs.String(), "upstream answered with an error", "upstream_error="+tc.upstream, "request_id=") {
			t.Errorf("upstream %s: no log line with the request ID", tc.upstream)
		}
	}
}

// logged: one line of logs holds every part.
func logged(logs string, parts ...string) bool {
	for line := range strings.SplitSeq(logs, "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}

// Auth0 puts the scopes' claims in the ID token and rate-limits /userinfo
// per user: under the Auth0 preset usher never calls it, even for an
// identity without email.
func TestAuth0PresetSkipsUserinfo(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	d.IDP.Misbehave(devidp.Misbehavior{IDTokenWithoutEmail: true, UserinfoRateLimited: true})
	q, _ := upstreamCallback(t, d, app.DevUserEmail, app.DevUserPassword)
	if q.Get("code") == "" {
		t.Fatalf("sign-in failed: %v", q)
	}
	if n := d.IDP.UserinfoCalls(); n != 0 {
		t.Errorf("usher called the tenant's /userinfo %d times", n)
	}
}

// Elsewhere usher asks userinfo for a missing email; a failing call does
// not fail the sign-in (the verified ID token is used) and is logged.
func TestUserinfoFailureDoesNotFailSignIn(t *testing.T) {
	t.Parallel()
	d, logs := startDevLogged(t, app.DevOptions{Configure: genericOIDC})
	d.IDP.Misbehave(devidp.Misbehavior{IDTokenWithoutEmail: true})
	if q, _ := upstreamCallback(t, d, app.DevUserEmail, app.DevUserPassword); q.Get("code") == "" {
		t.Fatalf("sign-in with working userinfo failed: %v", q)
	}
	d.IDP.Misbehave(devidp.Misbehavior{IDTokenWithoutEmail: true, UserinfoRateLimited: true})
	q, _ := upstreamCallback(t, d, app.DevUserEmail, app.DevUserPassword)
	if q.Get("code") == "" {
		t.Fatalf("sign-in with rate-limited userinfo failed: %v", q)
	}
	if d.IDP.UserinfoCalls() != 2 {
		t.Errorf("userinfo calls = %d, want 2", d.IDP.UserinfoCalls())
	}
	if !logged(logs.String(), "WARN", "upstream userinfo failed") {
		t.Error("no warning about the failed userinfo call")
	}
}

// An application signing ID tokens with HS256 fails every sign-in with a
// clear server_error; the log names the Auth0 setting, once per process.
func TestAuth0HS256Tenant(t *testing.T) {
	t.Parallel()
	d, logs := startDevLogged(t, app.DevOptions{})
	d.IDP.Misbehave(devidp.Misbehavior{HS256: true})
	for range 2 {
		q, _ := upstreamCallback(t, d, app.DevUserEmail, app.DevUserPassword)
		if q.Get("error") != "server_error" || !strings.Contains(q.Get("error_description"), "HS256") {
			t.Errorf("the SPA got %v, want server_error naming HS256", q)
		}
	}
	advice := "JSON Web Token Signature Algorithm: RS256"
	if n := strings.Count(logs.String(), advice); n != 1 {
		t.Errorf("the advice %q was logged %d times, want once", advice, n)
	}
}

// screen_hint=signup only when the Management API says the invitee has no
// Auth0 account; when usher cannot know, no screen_hint. users-by-email is
// case-sensitive: a social account kept as "Mixed.Case@…" is found.
func TestInviteeScreenHintWhenUnknown(t *testing.T) {
	t.Parallel()
	hint := func(t *testing.T, d *app.Dev, email string) (string, bool) {
		t.Helper()
		api := funnelToken(t, d, "invitations:write invitations:read")
		inv := invite(t, d, api, map[string]any{"email": email, "send_email": false})
		a := newAgent(t, d.SPAURL)
		a.client.CheckRedirect = func(req *http.Request, _ []*http.Request) error {
			if strings.HasPrefix(req.URL.String(), d.IDPURL) {
				return http.ErrUseLastResponse
			}
			return nil
		}
		u, _, _ := authorizeURL(d, url.Values{"invitation": {tokenOf(inv["url"].(string))}})
		resp, _ := a.get(u)
		up, _ := url.Parse(resp.Header.Get("Location"))
		if !strings.HasPrefix(up.String(), d.IDPURL+"authorize?") {
			t.Fatalf("upstream authorize URL %q", up)
		}
		_, ok := up.Query()["screen_hint"]
		return up.Query().Get("screen_hint"), ok
	}
	d := startDev(t, app.DevOptions{})
	if h, _ := hint(t, d, "nobody-yet@example.com"); h != "signup" {
		t.Errorf("Auth0 says no account: screen_hint %q, want signup", h)
	}
	if _, err := d.IDP.AddSocialUser(devidp.ConnectionGoogle, "Mixed.Case@Example.com", "Mia", true); err != nil {
		t.Fatal(err)
	}
	if h, ok := hint(t, d, "Mixed.Case@Example.com"); ok {
		t.Errorf("social account stored as given: screen_hint %q, want none", h)
	}
	d.IDP.ManagementDown(true)
	if h, ok := hint(t, d, "unknown-down@example.com"); ok {
		t.Errorf("Management API down: screen_hint %q, want none", h)
	}
	noMgmt := startDev(t, app.DevOptions{Configure: func(c *config.Config) { c.Upstream.Auth0.Management = config.Management{} }})
	if h, ok := hint(t, noMgmt, "unknown-nomgmt@example.com"); ok {
		t.Errorf("no Management API: screen_hint %q, want none", h)
	}
}
