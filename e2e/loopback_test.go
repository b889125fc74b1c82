package e2e

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/usher-oidc/usher/app"
)

// usher dev's demo SPA opened on the other loopback name (localhost instead
// of 127.0.0.1) is redirected to the one configured origin, path and query
// kept; and usher's page for an unregistered redirect URI or an unknown
// client says which origin is allowed.
func TestDevLoopbackNames(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	spa, _ := url.Parse(d.SPAURL)
	other := "http://localhost:" + spa.Port()

	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest(http.MethodGet, d.SPAURL+"/login?iss=x&login_hint=a%40example.com", nil)
	req.Host = "localhost:" + spa.Port() // whatever localhost resolves to here
	resp, err := noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != d.SPAURL+"/login?iss=x&login_hint=a%40example.com" {
		t.Fatalf("the SPA on localhost: %d Location %q, want a redirect to %s", resp.StatusCode, resp.Header.Get("Location"), d.SPAURL)
	}
	// The configured origin itself is served.
	if r, err := noFollow.Get(d.SPAURL + "/"); err != nil || r.StatusCode != http.StatusOK {
		t.Fatalf("the SPA on its own origin: %v %v", r, err)
	}

	// An authorize request from the other name: the page names the allowed origin.
	a := newAgent(t, d.SPAURL)
	u, _, _ := authorizeURL(d, url.Values{"redirect_uri": {other + "/callback"}})
	r, body := a.get(u)
	if r.StatusCode != http.StatusBadRequest || !strings.Contains(body, "not configured") ||
		!strings.Contains(body, "Open the application at "+d.SPAURL+" instead of "+other) {
		t.Fatalf("authorize with the localhost redirect URI: %d\n%s", r.StatusCode, clipText(body))
	}
	// Any other unregistered redirect URI: the client's origins are named.
	u, _, _ = authorizeURL(d, url.Values{"redirect_uri": {"https://evil.example/callback"}})
	r, body = a.get(u)
	if r.StatusCode != http.StatusBadRequest || !strings.Contains(body, "configured for "+d.SPAURL) {
		t.Fatalf("authorize with a foreign redirect URI: %d\n%s", r.StatusCode, clipText(body))
	}
	// An unknown client whose redirect URI is a client's on the other name.
	u, _, _ = authorizeURL(d, url.Values{"client_id": {"nope"}, "redirect_uri": {other + "/callback"}})
	r, body = a.get(u)
	if r.StatusCode != http.StatusBadRequest || !strings.Contains(body, "Unknown application") || !strings.Contains(body, d.SPAURL) {
		t.Fatalf("unknown client from localhost: %d\n%s", r.StatusCode, clipText(body))
	}
}
