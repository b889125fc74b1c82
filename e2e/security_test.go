package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
	"github.com/usher-oidc/usher/sessions"
)

// RFC 9700 §2.1.1 / §4.8: a code_verifier sent for an authorization that had
// no code_challenge is a downgrade attempt and is refused.
func TestPKCEDowngradeRefused(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{Configure: func(c *config.Config) {
		c.Clients = append(c.Clients, config.Client{ID: "web", Type: config.ClientConfidential,
			Secret: "web-client-secret-0123456789", RedirectURIs: []string{"http://127.0.0.1:9/cb"},
			GrantTypes: []string{config.GrantAuthorizationCode}})
	}})
	a := newAgent(t, "http://127.0.0.1:9/cb")
	q := url.Values{"client_id": {"web"}, "redirect_uri": {"http://127.0.0.1:9/cb"}, "response_type": {"code"},
		"scope": {"openid"}, "state": {"s"}, "nonce": {"n"}}
	resp, body := a.get(strings.TrimSuffix(d.IssuerURL, "/") + "/authorize?" + q.Encode())
	resp, body = a.devidpForm(resp, body, "login", url.Values{"email": {app.DevUserEmail}, "password": {app.DevUserPassword}})
	cb := a.callbackOf(resp, body)
	form := url.Values{"grant_type": {"authorization_code"}, "code": {cb.Get("code")}, "redirect_uri": {"http://127.0.0.1:9/cb"},
		"code_verifier": {strings.Repeat("v", 43)}, "client_id": {"web"}, "client_secret": {"web-client-secret-0123456789"}}
	if tr := postToken(t, d, form); tr.Error != "invalid_request" || tr.AccessToken != "" {
		t.Fatalf("verifier without challenge: %+v, want invalid_request", tr)
	}
}

// Codes live at most code_ttl (≤ 60 s); refresh families end at their
// absolute lifetime however often they rotate.
func TestCodeAndRefreshLifetimes(t *testing.T) {
	t.Parallel()
	clock := &testClock{}
	d := startDev(t, app.DevOptions{Now: clock.Now, Configure: func(c *config.Config) {
		c.Tokens.RefreshTokenIdleTTL = config.Duration(time.Hour)
		c.Tokens.RefreshTokenAbsoluteTTL = config.Duration(3 * time.Hour)
	}})
	a := newAgent(t, d.SPAURL)
	code, verifier := a.signIn(d, app.DevUserEmail, app.DevUserPassword, false)
	clock.Advance(61 * time.Second)
	if tr := exchangeCode(t, d, code, verifier); tr.Error != "invalid_grant" {
		t.Fatalf("code used after 61 s: %+v", tr)
	}
	code, verifier = a.signIn(d, app.DevUserEmail, app.DevUserPassword, false)
	tr := exchangeCode(t, d, code, verifier)
	rt := tr.RefreshToken
	for range 5 { // rotate every 50 minutes: idle never hits, absolute does
		clock.Advance(50 * time.Minute)
		r := refresh(t, d, rt)
		if r.RefreshToken == "" {
			if r.Error != "invalid_grant" {
				t.Fatalf("refresh failed with %+v", r)
			}
			return // the family ended
		}
		rt = r.RefreshToken
	}
	t.Fatal("a refresh family outlived its absolute lifetime")
}

// Tokens: only usher's own access tokens (typ at+jwt, usher's keys, not
// expired) open /userinfo and the admin API; an ID token, a token with
// alg none or an attacker's embedded key, and an expired one do not.
func TestTokenValidation(t *testing.T) {
	t.Parallel()
	clock := &testClock{}
	d := startDev(t, app.DevOptions{Now: clock.Now})
	a := newAgent(t, d.SPAURL)
	code, verifier := a.signIn(d, app.DevUserEmail, app.DevUserPassword, false)
	tr := exchangeCode(t, d, code, verifier)
	api := funnelToken(t, d, "invitations:read")

	claims := jwtClaims(t, tr.AccessToken)
	attacker, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	forged := func(alg jose.SignatureAlgorithm, key any, opts *jose.SignerOptions) string {
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
		if err != nil {
			t.Fatal(err)
		}
		payload, _ := json.Marshal(claims)
		sig, _ := s.Sign(payload)
		out, _ := sig.CompactSerialize()
		return out
	}
	embedded := forged(jose.ES256, attacker, (&jose.SignerOptions{EmbedJWK: true}).WithType("at+jwt"))
	hdr := strings.Split(tr.AccessToken, ".")
	unsigned := `eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0.` + hdr[1] + `.`

	for _, tc := range []struct{ name, token string }{
		{"ID token as access token", tr.IDToken},
		{"alg none", unsigned},
		{"attacker key embedded in the header", embedded},
		{"garbage", "not.a.jwt"},
	} {
		if s := userinfoStatus(t, d, tc.token); s != http.StatusUnauthorized && s != http.StatusBadRequest {
			t.Errorf("/userinfo accepted %s: %d", tc.name, s)
		}
		if r := apiCall(t, d, http.MethodGet, "/api/invitations", tc.token, nil); r.status != http.StatusUnauthorized {
			t.Errorf("admin API accepted %s: %d", tc.name, r.status)
		}
	}
	if s := userinfoStatus(t, d, tr.AccessToken); s != http.StatusOK {
		t.Fatalf("the genuine access token: %d", s)
	}
	clock.Advance(2 * time.Hour)
	if r := apiCall(t, d, http.MethodGet, "/api/invitations", api, nil); r.status != http.StatusUnauthorized {
		t.Errorf("an expired access token opened the admin API: %d", r.status)
	}
}

// Browser session: none before sign-in (the sign-in in flight is bound to
// the browser by its sign-in cookie), HttpOnly, SameSite=Lax, a new ID at
// every sign-in, and a sign-in left open too long cannot complete.
func TestBrowserSessionCookie(t *testing.T) {
	t.Parallel()
	clock := &testClock{}
	rec := &sessionRecorder{}
	d := startDev(t, app.DevOptions{Now: clock.Now, WrapStore: func(s app.Store) app.Store { rec.Store = s; return rec }})
	a := newAgent(t, d.SPAURL)
	u, _, _ := authorizeURL(d, nil)
	usher, _ := url.Parse(d.IssuerURL)
	resp, body := a.get(u)
	if sessionCookie(a, usher) != "" || rec.distinct() != 0 || cookieNamed(a, usher, "usher_signin") == "" {
		t.Fatalf("after /login: session cookie %q, %d sessions saved, sign-in cookie %q; want only the sign-in cookie",
			sessionCookie(a, usher), rec.distinct(), cookieNamed(a, usher, "usher_signin"))
	}
	resp, body = a.devidpForm(resp, body, "login", url.Values{"email": {app.DevUserEmail}, "password": {app.DevUserPassword}})
	a.callbackOf(resp, body)
	if rec.distinct() != 1 || sessionCookie(a, usher) == "" {
		t.Fatalf("no usher session after sign-in: %d session IDs saved", rec.distinct())
	}
	// Signing in again in a browser with a session renews its ID.
	u, _, _ = authorizeURL(d, url.Values{"prompt": {"login"}})
	resp, body = a.get(u)
	resp, body = a.devidpForm(resp, body, "login", url.Values{"email": {app.DevUserEmail}, "password": {app.DevUserPassword}})
	a.callbackOf(resp, body)
	if rec.distinct() != 2 {
		t.Fatalf("session ID not renewed at sign-in: %d distinct session IDs saved, want 2", rec.distinct())
	}
	rec.mu.Lock()
	before := rec.ids[0]
	rec.mu.Unlock()
	if _, err := rec.Store.GetBrowserSession(t.Context(), before); !errors.Is(err, sessions.ErrNotFound) {
		t.Fatalf("the session from before sign-in is still stored: %v", err)
	}
	// Attributes, read from a fresh /authorize answered from the session
	// (it runs the login step at once and, its idle expiry a minute old
	// or more, saves the session).
	clock.Advance(2 * time.Minute)
	noRedirect := &http.Client{Jar: a.client.Jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	u2, _, _ := authorizeURL(d, nil)
	r1, err := noRedirect.Get(u2)
	if err != nil {
		t.Fatal(err)
	}
	r1.Body.Close()
	setCookie := strings.Join(r1.Header.Values("Set-Cookie"), "\n")
	if !strings.Contains(setCookie, "usher_session=") || !strings.Contains(setCookie, "HttpOnly") || !strings.Contains(setCookie, "SameSite=Lax") || !strings.Contains(setCookie, "Path=/") {
		t.Fatalf("session cookie attributes: %s", setCookie)
	}

	// A sign-in left open past its auth request's lifetime cannot complete.
	idle := newAgent(t, d.SPAURL)
	u3, _, _ := authorizeURL(d, nil)
	resp, body = idle.get(u3)
	clock.Advance(31 * time.Minute)
	resp, body = idle.devidpForm(resp, body, "login", url.Values{"email": {app.DevUserEmail}, "password": {app.DevUserPassword}})
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "took too long") {
		t.Fatalf("callback of a sign-in left open 31 min: %d\n%s", resp.StatusCode, clipText(body))
	}
}

func sessionCookie(a *agent, u *url.URL) string { return cookieNamed(a, u, "usher_session") }

func cookieNamed(a *agent, u *url.URL, name string) string {
	for _, c := range a.client.Jar.Cookies(u) {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}

// No open redirect through logout: an unregistered post_logout_redirect_uri
// is refused on a page.
func TestLogoutNoOpenRedirect(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, path := range []string{
		"/oidc/logout?client_id=demo&post_logout_redirect_uri=" + url.QueryEscape("https://evil.example/"),
		"/v2/logout?client_id=demo&returnTo=" + url.QueryEscape("https://evil.example/"),
		"/logout/done?state=forged",
	} {
		resp, err := client.Get(strings.TrimSuffix(d.IssuerURL, "/") + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); strings.Contains(loc, "evil.example") {
			t.Errorf("%s redirected to %s", path, loc)
		}
	}
}

// usher's own pages cannot be framed and leak no URL through Referer.
func TestPageSecurityHeaders(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	base := strings.TrimSuffix(d.IssuerURL, "/")
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, path := range []string{"/login?id=nope", "/callback?state=x&code=y", "/invite/inv_nope", "/logout/done"} {
		resp, err := client.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		h := resp.Header
		if !strings.Contains(h.Get("Content-Security-Policy"), "frame-ancestors 'none'") || h.Get("X-Frame-Options") != "DENY" ||
			h.Get("Referrer-Policy") != "no-referrer" || h.Get("Cache-Control") != "no-store" {
			t.Errorf("%s: headers %v", path, h)
		}
	}
}

// The browser session ends at its absolute timeout even when kept busy:
// logins answered from it every 20 minutes keep it past the idle timeout,
// not past its absolute lifetime (2 h here).
func TestBrowserSessionAbsoluteTimeout(t *testing.T) {
	t.Parallel()
	clock := &testClock{}
	rec := &sessionRecorder{}
	d := startDev(t, app.DevOptions{Now: clock.Now, WrapStore: func(s app.Store) app.Store { rec.Store = s; return rec },
		Configure: func(c *config.Config) {
			c.Sessions.IdleTimeout = config.Duration(30 * time.Minute)
			c.Sessions.AbsoluteTimeout = config.Duration(2 * time.Hour)
		}})
	a := newAgent(t, d.SPAURL)
	a.signIn(d, app.DevUserEmail, app.DevUserPassword, false)
	var resp *http.Response
	var body string
	for i := range 7 { // 7 × 20 min = 2 h 20 min of activity
		clock.Advance(20 * time.Minute)
		u, _, _ := authorizeURL(d, nil)
		resp, body = a.get(u)
		if i == 4 && (rec.distinct() != 1 || a.callbackOf(resp, body).Get("code") == "") {
			t.Fatalf("activity every 20 min did not keep the session alive past the 30 min idle timeout")
		}
	}
	// Past 2 h the login went upstream: the session is gone.
	if resp.StatusCode == http.StatusOK && strings.Contains(body, `action="/u/login"`) {
		resp, body = a.devidpForm(resp, body, "login", url.Values{"email": {app.DevUserEmail}, "password": {app.DevUserPassword}})
	}
	if q := a.callbackOf(resp, body); q.Get("code") == "" {
		t.Fatalf("sign-in after the absolute timeout: %v", q)
	}
	if rec.distinct() != 2 {
		t.Fatalf("after 2 h 20 min of activity: %d session IDs, want a new one after the 2 h absolute timeout", rec.distinct())
	}
}
