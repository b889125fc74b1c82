package e2e

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
)

// formPostRP is a relying party whose redirect URI receives response_mode=form_post.
type formPostRP struct {
	srv  *httptest.Server
	got  chan url.Values
	path string
}

func newFormPostRP(t *testing.T) *formPostRP {
	rp := &formPostRP{got: make(chan url.Values, 1), path: "/fp"}
	rp.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.ParseForm() != nil {
			http.Error(w, "want a form POST", http.StatusBadRequest)
			return
		}
		select {
		case rp.got <- r.PostForm:
		default:
		}
		w.Write([]byte("<!doctype html><title>received</title><p id=received>received</p>"))
	}))
	t.Cleanup(rp.srv.Close)
	return rp
}

func (rp *formPostRP) redirectURI() string { return rp.srv.URL + rp.path }

// configure registers the RP's redirect URI on the dev SPA client.
func (rp *formPostRP) configure(c *config.Config) {
	c.Clients[0].RedirectURIs = append(c.Clients[0].RedirectURIs, rp.redirectURI())
}

func formPostAuthorizeURL(d *app.Dev, rp *formPostRP) (string, string) {
	u, _, state := authorizeURL(d, url.Values{"redirect_uri": {rp.redirectURI()}, "response_mode": {"form_post"}})
	return u, state
}

var (
	cspNonceRe    = regexp.MustCompile(`script-src 'nonce-([A-Za-z0-9+/=_-]+)'`)
	scriptNonceRe = regexp.MustCompile(`<script nonce="([^"]+)"`)
)

// TestFormPostPage: the page's CSP lets its own script run (matching nonce),
// lets the form post to the client, and the response names the issuer.
func TestFormPostPage(t *testing.T) {
	t.Parallel()
	rp := newFormPostRP(t)
	d := startDev(t, app.DevOptions{Configure: rp.configure})
	a := newAgent(t, rp.srv.URL)
	u, state := formPostAuthorizeURL(d, rp)
	resp, body := a.get(u)
	resp, body = a.devidpForm(resp, body, "login", url.Values{"email": {app.DevUserEmail}, "password": {app.DevUserPassword}})
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `action="`+rp.redirectURI()+`"`) {
		t.Fatalf("no form_post page: %d\n%s", resp.StatusCode, clipText(body))
	}
	csp := resp.Header.Get("Content-Security-Policy")
	cm, sm := cspNonceRe.FindStringSubmatch(csp), scriptNonceRe.FindStringSubmatch(body)
	if cm == nil || sm == nil || cm[1] != sm[1] {
		t.Errorf("CSP nonce %v does not match the script's %v\nCSP: %s", cm, sm, csp)
	}
	if !strings.Contains(csp, "form-action "+rp.srv.URL) {
		t.Errorf("CSP does not let the form post to the client: %s", csp)
	}
	if strings.Contains(csp, "unsafe-inline'") && strings.Contains(csp, "script-src 'unsafe-inline'") {
		t.Errorf("CSP allows any inline script: %s", csp)
	}
	for name, want := range map[string]string{"state": state, "iss": d.IssuerURL} {
		if !strings.Contains(body, `name="`+name+`" value="`+want+`"`) {
			t.Errorf("form has no %s=%q:\n%s", name, want, clipText(body))
		}
	}
}

// TestFormPostBrowser: in Chromium the form submits itself to the client.
func TestFormPostBrowser(t *testing.T) {
	t.Parallel()
	rp := newFormPostRP(t)
	d := startDev(t, app.DevOptions{Configure: rp.configure})
	ctx := newBrowser(t)
	u, state := formPostAuthorizeURL(d, rp)
	do(t, ctx, "opening the authorization request", chromedp.Navigate(u))
	signInAtDevIDP(t, ctx, app.DevUserEmail, app.DevUserPassword)
	select {
	case got := <-rp.got:
		if got.Get("code") == "" || got.Get("state") != state || got.Get("iss") != d.IssuerURL {
			t.Errorf("form_post delivered %v; want a code, state %q, iss %q", got, state, d.IssuerURL)
		}
	case <-time.After(30 * time.Second):
		failWithPage(t, ctx, "waiting for the form_post to reach the client", nil)
	}
}
