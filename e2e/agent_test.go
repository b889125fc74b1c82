package e2e

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/sessions"
)

// agent is a scripted browser without JavaScript: it follows redirects with
// a cookie jar and fills devidp's forms, stopping when usher redirects to the
// client's redirect URI. Fast enough for tests that run many sign-ins.
type agent struct {
	t      testing.TB
	client *http.Client
	stopAt string // origin of the client's redirect URI
	// lastIDClaims: the ID token claims of the agent's last completed sign-in.
	lastIDClaims map[string]any
}

func newAgent(t testing.TB, stopAt string) *agent {
	jar, _ := cookiejar.New(nil)
	a := &agent{t: t, stopAt: stopAt}
	a.client = &http.Client{Jar: jar, Timeout: 20 * time.Second,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if strings.HasPrefix(req.URL.String(), a.stopAt) {
				return http.ErrUseLastResponse
			}
			if len(via) > 20 {
				return fmt.Errorf("too many redirects")
			}
			return nil
		}}
	return a
}

// pkce returns a verifier and its S256 challenge.
func pkce() (verifier, challenge string) {
	b := make([]byte, 32)
	rand.Read(b)
	verifier = base64.RawURLEncoding.EncodeToString(b)
	sum := sha256.Sum256([]byte(verifier))
	return verifier, base64.RawURLEncoding.EncodeToString(sum[:])
}

func randomString() string {
	b := make([]byte, 12)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// get follows redirects from u and returns the last response (body read).
func (a *agent) get(u string) (*http.Response, string) {
	a.t.Helper()
	resp, body, err := a.send(http.MethodGet, u, nil)
	if err != nil {
		a.t.Fatal(err)
	}
	return resp, body
}

func (a *agent) postForm(u string, v url.Values) (*http.Response, string) {
	a.t.Helper()
	resp, body, err := a.send(http.MethodPost, u, v)
	if err != nil {
		a.t.Fatal(err)
	}
	return resp, body
}

// send is get (v nil) or postForm returning the error: benchmarks sign in
// on RunParallel's goroutines, where t.Fatal may not be called.
func (a *agent) send(method, u string, v url.Values) (*http.Response, string, error) {
	var resp *http.Response
	var err error
	if v == nil {
		resp, err = a.client.Get(u)
	} else {
		resp, err = a.client.PostForm(u, v)
	}
	if err != nil {
		return nil, "", fmt.Errorf("%s %s: %w", method, u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, "", fmt.Errorf("%s %s: reading the body: %w", method, u, err)
	}
	return resp, string(body), nil
}

// callbackOf returns the redirect to the client's redirect URI, or fails.
func (a *agent) callbackOf(resp *http.Response, body string) url.Values {
	a.t.Helper()
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, a.stopAt) {
		a.t.Fatalf("expected a redirect to %s, got %d %s\n%s", a.stopAt, resp.StatusCode, loc, clipText(body))
	}
	u, _ := url.Parse(loc)
	return u.Query()
}

// devidpForm submits the devidp page the last response shows (login or
// sign-up) and returns the final redirect to the client.
func (a *agent) devidpForm(resp *http.Response, body, form string, values url.Values) (*http.Response, string) {
	a.t.Helper()
	resp, body, err := a.tryDevidpForm(resp, body, form, values)
	if err != nil {
		a.t.Fatal(err)
	}
	return resp, body
}

func (a *agent) tryDevidpForm(resp *http.Response, body, form string, values url.Values) (*http.Response, string, error) {
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `action="/u/`+form+`"`) {
		return nil, "", fmt.Errorf("expected the devidp %s page, got %d at %s\n%s", form, resp.StatusCode, resp.Request.URL, clipText(body))
	}
	values.Set("state", resp.Request.URL.Query().Get("state"))
	u := *resp.Request.URL
	u.Path, u.RawQuery = "/u/"+form, ""
	return a.send(http.MethodPost, u.String(), values)
}

func clipText(s string) string {
	if len(s) > 1500 {
		return s[:1500] + "…"
	}
	return s
}

// authorizeURL builds an authorization request for the dev SPA client.
func authorizeURL(d *app.Dev, extra url.Values) (string, string, string) {
	verifier, challenge := pkce()
	state := randomString()
	q := url.Values{
		"client_id":             {app.DevSPAClientID},
		"redirect_uri":          {d.SPAURL + "/callback"},
		"response_type":         {"code"},
		"scope":                 {"openid profile email offline_access"},
		"state":                 {state},
		"nonce":                 {randomString()},
		"code_challenge":        {challenge},
		"code_challenge_method": {"S256"},
	}
	for k, v := range extra {
		q[k] = v
	}
	return strings.TrimSuffix(d.IssuerURL, "/") + "/authorize?" + q.Encode(), verifier, state
}

// signIn runs a full sign-in of the dev SPA client as email/password (signing
// up first when signup is true) and returns the code and PKCE verifier.
func (a *agent) signIn(d *app.Dev, email, password string, signup bool) (code, verifier string) {
	a.t.Helper()
	code, verifier, err := a.trySignIn(d, email, password, signup)
	if err != nil {
		a.t.Fatal(err)
	}
	return code, verifier
}

// trySignIn is signIn returning its failure.
func (a *agent) trySignIn(d *app.Dev, email, password string, signup bool) (code, verifier string, err error) {
	extra := url.Values{}
	if signup {
		extra.Set("screen_hint", "signup")
	}
	u, verifier, state := authorizeURL(d, extra)
	resp, body, err := a.send(http.MethodGet, u, nil)
	if err != nil {
		return "", "", err
	}
	form, vals := "login", url.Values{"email": {email}, "password": {password}}
	if signup {
		form = "signup"
		vals.Set("name", "Test User")
	}
	// With a live upstream session devidp completes without a form.
	if !strings.HasPrefix(resp.Header.Get("Location"), a.stopAt) {
		if resp, body, err = a.tryDevidpForm(resp, body, form, vals); err != nil {
			return "", "", err
		}
	}
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, a.stopAt) {
		return "", "", fmt.Errorf("expected a redirect to %s, got %d %s\n%s", a.stopAt, resp.StatusCode, loc, clipText(body))
	}
	lu, _ := url.Parse(loc)
	q := lu.Query()
	if q.Get("error") != "" {
		return "", "", fmt.Errorf("sign-in failed: %s: %s", q.Get("error"), q.Get("error_description"))
	}
	if q.Get("state") != state {
		return "", "", fmt.Errorf("state = %q, want %q", q.Get("state"), state)
	}
	return q.Get("code"), verifier, nil
}

// tokenResponse is the token endpoint's answer (success or error).
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	IDToken      string `json:"id_token"`
	RefreshToken string `json:"refresh_token"`
	Error        string `json:"error"`
	Description  string `json:"error_description"`
	status       int
}

func postToken(t testing.TB, d *app.Dev, form url.Values) tokenResponse {
	t.Helper()
	tr, err := tryPostToken(http.DefaultClient, d, form)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// tryPostToken is postToken through client, returning its failure (for
// RunParallel).
func tryPostToken(client *http.Client, d *app.Dev, form url.Values) (tokenResponse, error) {
	var tr tokenResponse
	resp, err := client.PostForm(strings.TrimSuffix(d.IssuerURL, "/")+"/oauth/token", form)
	if err != nil {
		return tr, fmt.Errorf("token endpoint: %w", err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil {
		return tr, fmt.Errorf("decoding token response (%d): %w", resp.StatusCode, err)
	}
	tr.status = resp.StatusCode
	return tr, nil
}

func exchangeCode(t testing.TB, d *app.Dev, code, verifier string) tokenResponse {
	t.Helper()
	return postToken(t, d, codeForm(d, code, verifier))
}

func codeForm(d *app.Dev, code, verifier string) url.Values {
	return url.Values{
		"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier},
		"client_id": {app.DevSPAClientID}, "redirect_uri": {d.SPAURL + "/callback"},
	}
}

func refresh(t testing.TB, d *app.Dev, rt string) tokenResponse {
	t.Helper()
	return postToken(t, d, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {app.DevSPAClientID}})
}

// userinfoStatus calls /userinfo with the access token.
func userinfoStatus(t *testing.T, d *app.Dev, at string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, strings.TrimSuffix(d.IssuerURL, "/")+"/userinfo", nil)
	req.Header.Set("Authorization", "Bearer "+at)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// countingStore counts writes, so tests can prove a rejection stored nothing.
type countingStore struct {
	app.Store
	authRequests, identities atomic.Int64
	authRequestBytes         atomic.Int64 // JSON size of the stored auth requests
}

func (c *countingStore) CreateAuthRequest(ctx context.Context, ar *sessions.AuthRequest) error {
	c.authRequests.Add(1)
	if js, err := json.Marshal(ar); err == nil {
		c.authRequestBytes.Add(int64(len(js)))
	}
	return c.Store.CreateAuthRequest(ctx, ar)
}

func (c *countingStore) ResolveIdentity(ctx context.Context, id grants.Identity, p grants.Profile, newID string, now time.Time) (*grants.User, bool, error) {
	c.identities.Add(1)
	return c.Store.ResolveIdentity(ctx, id, p, newID, now)
}

// sessionRecorder remembers the browser-session IDs usher saves, so tests can
// see renewal and expiry (the cookie value changes on every save: it is
// encrypted with a fresh IV).
type sessionRecorder struct {
	app.Store
	mu  sync.Mutex
	ids []string
}

func (s *sessionRecorder) SaveBrowserSession(ctx context.Context, bs *sessions.BrowserSession) error {
	s.record(bs.ID)
	return s.Store.SaveBrowserSession(ctx, bs)
}

func (s *sessionRecorder) ReplaceBrowserSession(ctx context.Context, bs *sessions.BrowserSession, oldID string) error {
	s.record(bs.ID)
	return s.Store.ReplaceBrowserSession(ctx, bs, oldID)
}

func (s *sessionRecorder) record(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.ids) == 0 || s.ids[len(s.ids)-1] != id {
		s.ids = append(s.ids, id)
	}
}

// distinct counts the session IDs saved so far.
func (s *sessionRecorder) distinct() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[string]bool{}
	for _, id := range s.ids {
		seen[id] = true
	}
	return len(seen)
}

var (
	acceptFieldRE = regexp.MustCompile(`<input type="hidden" name="(flow|id|csrf)" value="([^"]*)">`)
)

// answerAccept expects usher's accept page in the last response and presses
// one of its buttons (accept, other, later, decline), as a person would.
func (a *agent) answerAccept(resp *http.Response, body, action string) (*http.Response, string) {
	a.t.Helper()
	if !isAcceptPage(resp, body) {
		a.t.Fatalf("expected usher's accept page, got %d at %s\n%s", resp.StatusCode, resp.Request.URL, clipText(body))
	}
	if !strings.Contains(body, `name="action" value="`+action+`"`) {
		a.t.Fatalf("the accept page offers no %q button:\n%s", action, clipText(body))
	}
	form := url.Values{"action": {action}}
	for _, m := range acceptFieldRE.FindAllStringSubmatch(body, -1) {
		form.Set(m[1], html.UnescapeString(m[2]))
	}
	u := *resp.Request.URL
	u.Path, u.RawQuery = "/accept", ""
	req, _ := http.NewRequest(http.MethodPost, u.String(), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", u.Scheme+"://"+u.Host)
	r, err := a.client.Do(req)
	if err != nil {
		a.t.Fatalf("POST /accept: %v", err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return r, string(b)
}

func isAcceptPage(resp *http.Response, body string) bool {
	return resp.StatusCode == http.StatusOK && strings.Contains(body, `action="/accept"`)
}
