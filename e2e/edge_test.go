package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
	"github.com/usher-oidc/usher/sessions"
)

// noRedirects is an HTTP client that shows usher's own answer.
var noRedirects = &http.Client{Timeout: 20 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// /authorize refuses oversized parameters instead of storing them: requests
// carrying megabytes must not put megabytes in the store.
func TestAuthorizeHugeParameters(t *testing.T) {
	t.Parallel()
	cs := &countingStore{}
	d := startDev(t, app.DevOptions{WrapStore: func(s app.Store) app.Store { cs.Store = s; return cs }})
	huge := strings.Repeat("A", 300<<10)
	big := strings.Repeat("A", 10<<10) // fits in a request line, still far too long
	cases := []struct {
		name  string
		extra url.Values
		want  int // 0: any 4xx
	}{
		{"huge state", url.Values{"state": {huge}}, 0},
		{"huge nonce", url.Values{"nonce": {huge}}, 0},
		{"huge login_hint", url.Values{"login_hint": {huge}}, 0},
		{"state", url.Values{"state": {big}}, http.StatusBadRequest},
		{"nonce", url.Values{"nonce": {big}}, http.StatusBadRequest},
		{"login_hint", url.Values{"login_hint": {strings.Repeat("a", 250) + "@example.com"}}, http.StatusBadRequest},
		{"unknown parameter", url.Values{"x_pad": {big}}, http.StatusBadRequest},
	}
	for _, tc := range cases {
		u, _, _ := authorizeURL(d, tc.extra)
		resp, err := noRedirects.Get(u)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case tc.want == 0 && (resp.StatusCode < 400 || resp.StatusCode >= 500):
			t.Errorf("%s: %d, want a 4xx", tc.name, resp.StatusCode)
		case tc.want != 0 && (resp.StatusCode != tc.want || !strings.Contains(string(body), "invalid_request")):
			t.Errorf("%s: %d %q, want %d invalid_request", tc.name, resp.StatusCode, clipText(string(body)), tc.want)
		}
		if len(resp.Header.Get("Location")) > 4096 {
			t.Errorf("%s: echoed in a %d-byte Location", tc.name, len(resp.Header.Get("Location")))
		}
	}
	// A huge POST body is refused too.
	u, _, _ := authorizeURL(d, nil)
	base, q, _ := strings.Cut(u, "?")
	resp, err := noRedirects.Post(base, "application/x-www-form-urlencoded", strings.NewReader(q+"&state="+strings.Repeat("B", 2<<20)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode < 400 || resp.StatusCode >= 500 {
		t.Errorf("huge POST body: %d, want a 4xx", resp.StatusCode)
	}
	if n := cs.authRequestBytes.Load(); n > 64<<10 {
		t.Fatalf("oversized /authorize requests stored %d bytes", n)
	}
	// Sane parameters at the limits still work.
	u, _, _ = authorizeURL(d, url.Values{"state": {strings.Repeat("s", 512)}, "nonce": {strings.Repeat("n", 512)}, "login_hint": {"ada@example.com"}})
	if resp := mustGet(t, u); resp.StatusCode != http.StatusFound {
		t.Fatalf("state and nonce of 512 bytes: %d, want 302 to sign-in", resp.StatusCode)
	}
}

func mustGet(t *testing.T, u string) *http.Response {
	t.Helper()
	resp, err := noRedirects.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// The creation of pending auth requests is limited per client IP; a full
// authorize request carrying invitation= counts as an invitation attempt.
func TestAuthorizeRateLimit(t *testing.T) {
	t.Parallel()
	cs := &countingStore{}
	d := startDev(t, app.DevOptions{WrapStore: func(s app.Store) app.Store { cs.Store = s; return cs },
		Configure: func(c *config.Config) { c.RateLimits.AuthorizePerMinute, c.RateLimits.InvitePerMinute = 3, 2 }})
	var answers []string
	for range 5 {
		u, _, _ := authorizeURL(d, nil)
		resp := mustGet(t, u)
		loc, _ := url.Parse(resp.Header.Get("Location"))
		switch {
		case resp.StatusCode == http.StatusFound && loc.Query().Get("error") != "":
			answers = append(answers, loc.Query().Get("error"))
		case resp.StatusCode == http.StatusFound && strings.HasPrefix(loc.String(), d.SPAURL):
			answers = append(answers, "client without error")
		default:
			answers = append(answers, strconv.Itoa(resp.StatusCode))
		}
	}
	// Over the limit the client gets an OIDC error at its redirect URI.
	if want := []string{"302", "302", "302", "temporarily_unavailable", "temporarily_unavailable"}; !slices.Equal(answers, want) {
		t.Errorf("authorize answers %v, want %v", answers, want)
	}
	if n := cs.authRequests.Load(); n != 3 {
		t.Errorf("stored %d auth requests, want 3 (the limit)", n)
	}

	d2 := startDev(t, app.DevOptions{Configure: func(c *config.Config) {
		c.RateLimits.AuthorizePerMinute, c.RateLimits.InvitePerMinute = 100, 2
	}})
	var statuses []int
	for i := range 4 {
		tok := "inv_" + strings.Repeat(string(rune('A'+i)), 43)
		u, _, _ := authorizeURL(d2, url.Values{"invitation": {tok}})
		statuses = append(statuses, mustGet(t, u).StatusCode)
	}
	if statuses[3] != http.StatusTooManyRequests {
		t.Errorf("authorize with invitation= statuses %v, want 429 after the invite limit", statuses)
	}
}

// Behind trusted proxies each client has its own bucket; a peer outside
// trusted_proxies cannot pick its bucket with the header.
func TestClientIPBehindProxy(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{Configure: func(c *config.Config) {
		c.RateLimits.InvitePerMinute = 2
		c.Server = config.Server{TrustedProxies: []string{"127.0.0.0/8"}, ClientIPHeader: config.HeaderXForwardedFor}
	}})
	base := strings.TrimSuffix(d.IssuerURL, "/")
	status := func(xff string) int {
		req, _ := http.NewRequest(http.MethodGet, base+"/invite/inv_"+strings.Repeat("Q", 43), nil)
		req.Header.Set("X-Forwarded-For", xff)
		resp, err := noRedirects.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// The rightmost untrusted address is the client; what it claims to its
	// left is ignored.
	for i, tc := range []struct {
		xff  string
		want int
	}{
		{"203.0.113.1", http.StatusNotFound},
		{"198.51.100.9, 203.0.113.1", http.StatusNotFound},
		{"203.0.113.1, 127.0.0.5", http.StatusTooManyRequests},
		{"203.0.113.2", http.StatusNotFound},
	} {
		if got := status(tc.xff); got != tc.want {
			t.Errorf("request %d (X-Forwarded-For: %s) = %d, want %d", i, tc.xff, got, tc.want)
		}
	}
}

// The issuer, cookie flags and generated links never come from
// X-Forwarded-Host / X-Forwarded-Proto, even from a trusted proxy.
func TestForwardedHostIgnored(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{Configure: func(c *config.Config) {
		c.Server = config.Server{TrustedProxies: []string{"127.0.0.0/8"}, ClientIPHeader: config.HeaderForwarded}
	}})
	base := strings.TrimSuffix(d.IssuerURL, "/")
	spoof := func(req *http.Request) *http.Response {
		req.Header.Set("X-Forwarded-Host", "evil.example")
		req.Header.Set("X-Forwarded-Proto", "https")
		req.Header.Set("Forwarded", `for=203.0.113.1;host=evil.example;proto=https`)
		resp, err := noRedirects.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	req, _ := http.NewRequest(http.MethodGet, base+"/.well-known/openid-configuration", nil)
	resp := spoof(req)
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(raw), "evil.example") || !strings.Contains(string(raw), `"issuer":"`+d.IssuerURL) {
		t.Errorf("discovery took the forwarded host: %s", clipText(string(raw)))
	}
	u, _, _ := authorizeURL(d, nil)
	req, _ = http.NewRequest(http.MethodGet, u, nil)
	resp = spoof(req)
	resp.Body.Close()
	// /authorize answers at once: the sign-in's redirect goes to the
	// upstream, whose callback is usher's configured one.
	loc := resp.Header.Get("Location")
	up, err := url.Parse(loc)
	if resp.StatusCode != http.StatusFound || err != nil || !strings.HasPrefix(loc, d.IDPURL) || up.Query().Get("redirect_uri") != base+"/callback" {
		t.Errorf("authorize redirect %d %q, want the upstream's, back to %s/callback", resp.StatusCode, loc, base)
	}
	for _, c := range resp.Cookies() {
		// usher dev serves plain http on loopback: a forged proto must not
		// make it set cookies for another scheme or domain.
		if c.Domain != "" || strings.Contains(c.String(), "evil") {
			t.Errorf("cookie %s carries a forwarded host: %s", c.Name, c.String())
		}
	}
	if loc := resp.Header.Get("Location"); strings.Contains(loc, "evil.example") {
		t.Errorf("Location uses the forwarded host: %s", loc)
	}
}

// A client that trickles a request body gets its connection closed within a
// bounded time.
func TestSlowBodyClosed(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	host := strings.TrimPrefix(strings.TrimSuffix(d.IssuerURL, "/"), "http://")
	conn, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const bound = 20 * time.Second
	conn.SetDeadline(time.Now().Add(bound))
	fmt.Fprintf(conn, "POST /oauth/token HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n", host)
	start := time.Now()
	closed := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, bufio.NewReader(conn))
		closed <- err
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case err := <-closed:
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("the connection was still open after %s", bound)
			}
			if el := time.Since(start); el > 12*time.Second {
				t.Fatalf("the trickling connection was closed only after %s", el)
			}
			return
		case <-tick.C:
			if _, err := conn.Write([]byte("a")); err != nil {
				if el := time.Since(start); el > 12*time.Second {
					t.Fatalf("the trickling connection was closed only after %s", el)
				}
				return
			}
		}
	}
}

// Oversized JSON bodies are refused before they are decoded.
func TestOversizedBodies(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	tok := funnelToken(t, d, "invitations:write")
	big := `{"email":"a@example.com","metadata":{"pad":"` + strings.Repeat("x", 2<<20) + `"}}`
	if r := apiCall(t, d, http.MethodPost, "/api/invitations", tok, big); r.status != http.StatusRequestEntityTooLarge {
		t.Errorf("2 MiB invitation body: %d %s, want 413", r.status, clipText(r.raw))
	}
	form := "grant_type=client_credentials&scope=" + strings.Repeat("x", 2<<20)
	req, _ := http.NewRequest(http.MethodPost, strings.TrimSuffix(d.IssuerURL, "/")+"/oauth/token", strings.NewReader(form))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(app.DevFunnelClientID, app.DevFunnelSecret)
	resp, err := noRedirects.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("2 MiB token request: %d, want 413 before the form is read", resp.StatusCode)
	}
}

// /metrics is not served on the public listener; the metrics listener
// serves it.
func TestMetricsNotPublic(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	if resp := mustGet(t, strings.TrimSuffix(d.IssuerURL, "/")+"/metrics"); resp.StatusCode == http.StatusOK {
		t.Errorf("/metrics on the public listener answered %d", resp.StatusCode)
	}
	resp, err := http.Get(d.MetricsURL)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(raw), "usher_webhook_queue_depth") {
		t.Errorf("metrics listener: %d %s", resp.StatusCode, clipText(string(raw)))
	}
	if strings.HasPrefix(d.MetricsURL, strings.TrimSuffix(d.IssuerURL, "/")) {
		t.Errorf("metrics URL %s is on the public listener", d.MetricsURL)
	}
}

// Requests a usher session answers are not limited: silent renewals of
// people behind one NAT must not lock each other out. The session is read
// before the request is stored, and a request the session answers at once
// is never stored on its own (its code carries it); a browser whose cookie
// names a session that ended is limited again, and a request it made
// beyond the limit is not kept.
func TestAuthorizeRateLimitSparesSessions(t *testing.T) {
	t.Parallel()
	rec := &authRequestRecorder{}
	d := startDev(t, app.DevOptions{WrapStore: func(s app.Store) app.Store { rec.Store = s; return rec },
		Configure: func(c *config.Config) { c.RateLimits.AuthorizePerMinute = 1 }})
	a := newAgent(t, d.SPAURL)
	a.signIn(d, app.DevUserEmail, app.DevUserPassword, false) // the one request the limit lets through
	usher, _ := url.Parse(d.IssuerURL)
	cookie := sessionCookie(a, usher)
	client := newSessionClient(d, a.client.Jar, 1)
	created := rec.count()
	for i := range 3 {
		if _, err := sessionLogin(d, client); err != nil {
			t.Fatalf("login %d answered from the session: %v", i+1, err)
		}
	}
	if n := rec.count() - created; n != 0 {
		t.Errorf("3 logins answered from the session stored %d auth requests of their own, want none (their codes carry them)", n)
	}
	if resp, _ := a.get(strings.TrimSuffix(d.IssuerURL, "/") + "/oidc/logout?client_id=" + app.DevSPAClientID); resp.StatusCode != http.StatusOK {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	ended := newSessionClient(d, nil, 1)
	ended.Jar.SetCookies(usher, []*http.Cookie{{Name: "usher_session", Value: cookie, Path: "/"}})
	u, _, _ := authorizeURL(d, nil)
	resp, err := ended.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc, _ := url.Parse(resp.Header.Get("Location")); resp.StatusCode != http.StatusFound || loc.Query().Get("error") != "temporarily_unavailable" {
		t.Fatalf("a browser whose session ended, over the limit: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if n := rec.count() - created; n != 0 {
		t.Errorf("the request refused over the limit was stored (%d auth requests), want none kept", n)
	}
}

// authRequestRecorder remembers the IDs of the auth requests usher creates.
type authRequestRecorder struct {
	app.Store
	mu  sync.Mutex
	ids []string
}

func (r *authRequestRecorder) CreateAuthRequest(ctx context.Context, ar *sessions.AuthRequest) error {
	r.mu.Lock()
	r.ids = append(r.ids, ar.ID)
	r.mu.Unlock()
	return r.Store.CreateAuthRequest(ctx, ar)
}

func (r *authRequestRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ids)
}
