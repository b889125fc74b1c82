package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
	"github.com/usher-oidc/usher/sessions"
)

// secondSPA is a second app on the same usher, on another loopback origin
// (same site as usher, as the demo SPA).
const secondSPA = "http://127.0.0.1:1/second"

func withSecondSPA(c *config.Config) {
	c.Clients = append(c.Clients, config.Client{ID: "second", Name: "Second app", Type: config.ClientPublic,
		RedirectURIs: []string{secondSPA + "/callback"}})
}

// authorizeFor builds an authorization request of another client.
func authorizeFor(d *app.Dev, clientID, redirectURI string, extra url.Values) (string, string) {
	u, verifier, _ := authorizeURL(d, extra)
	parsed, _ := url.Parse(u)
	q := parsed.Query()
	q.Set("client_id", clientID)
	q.Set("redirect_uri", redirectURI)
	parsed.RawQuery = q.Encode()
	return parsed.String(), verifier
}

// usher's own session answers later authorizations, of any client, without
// asking the upstream; prompt=login and max_age=0 go upstream again; sign-out
// ends the session.
func TestSessionAnswersAuthorize(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{Configure: withSecondSPA})
	a := newAgent(t, d.SPAURL)
	code, v := a.signIn(d, "session@example.com", "password-123456", true)
	first := jwtClaims(t, exchangeCode(t, d, code, v).IDToken)
	sid := claimString(first, "sid")
	if sid == "" || first["auth_time"] == nil {
		t.Fatalf("the ID token should carry sid and auth_time: %v", first)
	}

	// The second app: a code at once, same person, same session, the
	// upstream's auth_time.
	second := newAgent(t, secondSPA)
	second.client.Jar = a.client.Jar
	u, verifier := authorizeFor(d, "second", secondSPA+"/callback", nil)
	resp, body := second.get(u)
	if up := upstreamAuthorize(resp); up != nil {
		t.Fatalf("answered through the upstream (%s), want from usher's session", up)
	}
	q := second.callbackOf(resp, body)
	tr := postToken(t, d, url.Values{"grant_type": {"authorization_code"}, "code": {q.Get("code")}, "code_verifier": {verifier},
		"client_id": {"second"}, "redirect_uri": {secondSPA + "/callback"}})
	c := jwtClaims(t, tr.IDToken)
	if c["sub"] != first["sub"] || c["sid"] != sid || c["auth_time"] != first["auth_time"] || !audHas(c, "second") {
		t.Fatalf("second app's ID token %v, first %v", c, first)
	}

	signInAgainUpstream(t, d, a, "prompt=login", url.Values{"prompt": {"login"}}, first["sub"])
	signInAgainUpstream(t, d, a, "max_age=0", url.Values{"max_age": {"0"}}, first["sub"])

	// Sign-out ends usher's session: the next authorization goes upstream.
	resp, _ = a.get(strings.TrimSuffix(d.IssuerURL, "/") + "/oidc/logout?client_id=" + app.DevSPAClientID)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	u, _, _ = authorizeURL(d, nil)
	resp, _ = a.get(u)
	if upstreamAuthorize(resp) == nil {
		t.Fatalf("after sign-out, usher answered from a session it should have ended")
	}
}

// signInAgainUpstream authorizes with extra, which a usher session must
// not answer: the upstream's login form with prompt=login, and the
// sign-in completes as sub. Its request was stored before the upstream was
// asked (max_age=0 tells only once the session was read, and a request the
// session answers is not stored before).
func signInAgainUpstream(t *testing.T, d *app.Dev, a *agent, name string, extra url.Values, sub any) {
	t.Helper()
	u, verifier, _ := authorizeURL(d, extra)
	resp, body := a.get(u)
	up := upstreamAuthorize(resp)
	if up == nil || up.Query().Get("prompt") != "login" || !strings.Contains(body, `action="/u/login"`) {
		t.Fatalf("%s: want the upstream's login form with prompt=login, got %d at %s (upstream %v)", name, resp.StatusCode, resp.Request.URL, up)
	}
	resp, body = a.devidpForm(resp, body, "login", url.Values{"email": {"session@example.com"}, "password": {"password-123456"}})
	tr := exchangeCode(t, d, a.callbackOf(resp, body).Get("code"), verifier)
	if c := jwtClaims(t, tr.IDToken); c["sub"] != sub {
		t.Errorf("%s: signed in again as %v, want %v", name, c["sub"], sub)
	}
}

// response_mode=web_message, as auth0-spa-js's hidden iframe asks: without a
// session login_required is posted at once (the upstream is not asked from
// inside an iframe); with one, the code. Only that final page may be
// framed, only by the client's origin, and its message goes only there.
func TestWebMessageSilentAuthentication(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	silent := url.Values{"prompt": {"none"}, "response_mode": {"web_message"}}
	check := func(t *testing.T, resp *http.Response, body, want string) {
		t.Helper()
		h := resp.Header
		if resp.StatusCode != http.StatusOK || h.Get("X-Frame-Options") != "" || !strings.Contains(h.Get("Content-Security-Policy"), "frame-ancestors "+d.SPAURL+";") ||
			h.Get("Cache-Control") != "no-store" {
			t.Fatalf("web_message page: %d, headers %v", resp.StatusCode, h)
		}
		if !strings.Contains(body, `"type":"authorization_response"`) || !strings.Contains(body, want) || !strings.Contains(body, `"`+d.SPAURL+`"`) || strings.Contains(body, `"*"`) {
			t.Fatalf("web_message page does not post %s to the client's origin:\n%s", want, body)
		}
	}

	a := newAgent(t, d.SPAURL)
	u, _, _ := authorizeURL(d, silent)
	resp, body := a.get(u)
	if upstreamAuthorize(resp) != nil {
		t.Fatalf("a silent iframe request without a session went upstream")
	}
	check(t, resp, body, `"error":"login_required"`)

	a.signIn(d, "iframe@example.com", "password-123456", true)
	u, _, _ = authorizeURL(d, silent)
	resp, body = a.get(u)
	check(t, resp, body, `"code":"`)

	// The pages around it stay unframeable.
	resp, _ = a.get(strings.TrimSuffix(d.IssuerURL, "/") + "/login?id=unknown")
	if resp.Header.Get("X-Frame-Options") != "DENY" || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
		t.Fatalf("error page headers: %v", resp.Header)
	}
}

// /authorize answers at once: it runs the login step of the request it
// stored in the same HTTP request, so the browser goes straight from
// /authorize to the client (a session answered) or to the upstream (a
// sign-in), not through /login. /login itself still answers a reload.
func TestAuthorizeAnswersAtOnce(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	noRedirect := func(jar http.CookieJar) *http.Client {
		return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	first := func(c *http.Client) *url.URL {
		u, _, _ := authorizeURL(d, nil)
		resp, err := c.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		loc, err := url.Parse(resp.Header.Get("Location"))
		if resp.StatusCode != http.StatusFound || err != nil {
			t.Fatalf("authorize: %d %q", resp.StatusCode, resp.Header.Get("Location"))
		}
		return loc
	}
	stranger := newAgent(t, d.SPAURL)
	if loc := first(noRedirect(stranger.client.Jar)); !strings.HasPrefix(loc.String(), d.IDPURL) || loc.Query().Get("client_id") != "usher" {
		t.Errorf("a sign-in's /authorize sends the browser to %s, want the upstream's authorize endpoint", loc)
	}
	signedIn := newAgent(t, d.SPAURL)
	signedIn.signIn(d, app.DevUserEmail, app.DevUserPassword, false)
	loc := first(noRedirect(signedIn.client.Jar))
	if !strings.HasPrefix(loc.String(), d.SPAURL+"/callback") || loc.Query().Get("code") == "" || loc.Query().Get("iss") == "" {
		t.Errorf("a session's /authorize sends the browser to %s, want the client's callback with a code and iss", loc)
	}
}

// A login answered from usher's session stores the session again only to
// slide its idle expiry, so it does so at most once a minute: logins a
// few seconds apart write nothing for the session (on bbolt, no durable
// commit), the first one a minute later does, and the idle timeout still
// ends a session left alone.
func TestSessionWrittenAtMostOncePerMinute(t *testing.T) {
	t.Parallel()
	clock := &testClock{}
	saves := &sessionSaveCounter{}
	d := startDev(t, app.DevOptions{Now: clock.Now, WrapStore: func(s app.Store) app.Store { saves.Store = s; return saves },
		Configure: func(c *config.Config) { c.Sessions.IdleTimeout = config.Duration(30 * time.Minute) }})
	a := newAgent(t, d.SPAURL)
	a.signIn(d, app.DevUserEmail, app.DevUserPassword, false)
	client := newSessionClient(d, a.client.Jar, 1)
	login := func(when string) {
		t.Helper()
		if _, err := sessionLogin(d, client); err != nil {
			t.Fatalf("%s: %v", when, err)
		}
	}
	before := saves.n.Load()
	for i := range 3 {
		clock.Advance(10 * time.Second)
		login(fmt.Sprintf("login %d", i+1))
	}
	if n := saves.n.Load() - before; n != 0 {
		t.Errorf("3 logins within a minute of the sign-in saved the session %d times, want 0", n)
	}
	clock.Advance(time.Minute)
	login("a minute later")
	if n := saves.n.Load() - before; n != 1 {
		t.Errorf("a login a minute later: %d session saves in all, want 1", n)
	}
	clock.Advance(31 * time.Minute)
	u, _, _ := authorizeURL(d, nil)
	if resp, _ := a.get(u); upstreamAuthorize(resp) == nil {
		t.Errorf("after 31 idle minutes the session still answered")
	}
}

// sessionSaveCounter counts browser-session writes.
type sessionSaveCounter struct {
	app.Store
	n atomic.Int64
}

func (s *sessionSaveCounter) SaveBrowserSession(ctx context.Context, bs *sessions.BrowserSession) error {
	s.n.Add(1)
	return s.Store.SaveBrowserSession(ctx, bs)
}

func (s *sessionSaveCounter) ReplaceBrowserSession(ctx context.Context, bs *sessions.BrowserSession, oldID string) error {
	s.n.Add(1)
	return s.Store.ReplaceBrowserSession(ctx, bs, oldID)
}
