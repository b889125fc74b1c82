package devidp_test

import (
	jose "github.com/go-jose/go-jose/v4"

	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/usher-oidc/usher/devidp"
)

const (
	clientID     = "usher"
	clientSecret = "usher-dev-secret-0123456789abcdef"
	// Never contacted: the test browser stops at the first redirect off devidp.
	redirectURI = "http://127.0.0.1:9/callback"
	logoutURI   = "http://127.0.0.1:9/signed-out"
)

var seeded = devidp.User{Email: "Alice@Example.com", Password: "correct horse", Name: "Alice Example", EmailVerified: true}

type idp struct {
	srv  *devidp.Server
	base string // scheme://host:port, no trailing slash
}

// startIDP listens first and then builds the server, the way tests that need
// the issuer before the port is known do.
func startIDP(t *testing.T, trailingSlash bool, users ...devidp.User) *idp {
	t.Helper()
	return startIDPWith(t, trailingSlash, nil, users...)
}

// startIDPWith is startIDP with mod applied to the config.
func startIDPWith(t *testing.T, trailingSlash bool, mod func(*devidp.Config), users ...devidp.User) *idp {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	issuer := base
	if trailingSlash {
		issuer += "/"
	}
	cfg := devidp.Config{
		Issuer: issuer,
		Clients: []devidp.Client{{
			ID: clientID, Secret: clientSecret,
			RedirectURIs:           []string{redirectURI},
			PostLogoutRedirectURIs: []string{logoutURI},
		}},
		Users: users,
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := devidp.New(cfg)
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(srv)
	hs.Listener.Close()
	hs.Listener = ln
	hs.Start()
	t.Cleanup(hs.Close)
	return &idp{srv: srv, base: base}
}

// browser is a cookie-keeping client that follows redirects within devidp
// and stops at the first one that leaves it (the client's redirect_uri).
type browser struct {
	t   *testing.T
	idp *idp
	c   *http.Client
}

func newBrowser(t *testing.T, p *idp) *browser {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(p.base, "http://")
	return &browser{t: t, idp: p, c: &http.Client{
		Jar: jar,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if req.URL.Host != host {
				return http.ErrUseLastResponse
			}
			if len(via) > 10 {
				return fmt.Errorf("too many redirects")
			}
			return nil
		},
	}}
}

// page is the final response of a navigation.
type page struct {
	status int
	url    *url.URL // URL of the last request
	loc    string   // Location header when it stopped at a redirect
	body   string
}

func (b *browser) do(req *http.Request) page {
	b.t.Helper()
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	return page{status: resp.StatusCode, url: resp.Request.URL, loc: resp.Header.Get("Location"), body: string(body)}
}

func (b *browser) get(u string) page {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	return b.do(req)
}

func (b *browser) post(path string, form url.Values) page {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.idp.base+path, strings.NewReader(form.Encode()))
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

// flow is one authorization request's client-side secrets.
type flow struct {
	state, nonce, verifier string
}

// authorize starts a code+PKCE flow with extra Auth0 parameters.
func (b *browser) authorize(extra url.Values) (flow, page) {
	b.t.Helper()
	f := flow{state: oauth2.GenerateVerifier(), nonce: oauth2.GenerateVerifier(), verifier: oauth2.GenerateVerifier()}
	q := url.Values{
		"response_type":         {"code"},
		"client_id":             {clientID},
		"redirect_uri":          {redirectURI},
		"scope":                 {"openid profile email"},
		"state":                 {f.state},
		"nonce":                 {f.nonce},
		"code_challenge":        {oauth2.S256ChallengeFromVerifier(f.verifier)},
		"code_challenge_method": {"S256"},
	}
	for k, v := range extra {
		q[k] = v
	}
	return f, b.get(b.idp.base + "/authorize?" + q.Encode())
}

// requestID is the auth request ID the login UI carries as "state".
func requestID(t *testing.T, p page) string {
	t.Helper()
	id := p.url.Query().Get("state")
	if p.status != http.StatusOK || id == "" {
		t.Fatalf("expected a login UI page, got %d at %s (Location %q): %s", p.status, p.url, p.loc, p.body)
	}
	return id
}

// callback checks that the browser was sent back to the client and returns
// the authorization response parameters.
func callback(t *testing.T, p page) url.Values {
	t.Helper()
	if p.status != http.StatusFound || !strings.HasPrefix(p.loc, redirectURI+"?") {
		t.Fatalf("expected a redirect to the client, got %d at %s (Location %q): %s", p.status, p.url, p.loc, p.body)
	}
	u, err := url.Parse(p.loc)
	if err != nil {
		t.Fatal(err)
	}
	return u.Query()
}

type claims struct {
	Email         string `json:"email"`
	EmailVerified *bool  `json:"email_verified"`
	Name          string `json:"name"`
	Nickname      string `json:"nickname"`
	Picture       string `json:"picture"`
}

type tokens struct {
	raw    *oauth2.Token
	rawID  string
	id     *oidc.IDToken // nil when verification failed
	err    error         // verification error
	claims claims
}

// exchange redeems the code at /oauth/token and verifies the ID token with go-oidc.
func (p *idp) exchange(t *testing.T, f flow, params url.Values, style oauth2.AuthStyle) tokens {
	t.Helper()
	if got := params.Get("state"); got != f.state {
		t.Fatalf("state = %q, want %q", got, f.state)
	}
	code := params.Get("code")
	if code == "" {
		t.Fatalf("no code in %v", params)
	}
	ctx := context.Background()
	provider, err := oidc.NewProvider(ctx, p.srv.Issuer())
	if err != nil {
		t.Fatal(err)
	}
	conf := oauth2.Config{
		ClientID: clientID, ClientSecret: clientSecret, RedirectURL: redirectURI,
		Endpoint: oauth2.Endpoint{AuthURL: provider.Endpoint().AuthURL, TokenURL: provider.Endpoint().TokenURL, AuthStyle: style},
		Scopes:   []string{oidc.ScopeOpenID, "profile", "email"},
	}
	tok, err := conf.Exchange(ctx, code, oauth2.VerifierOption(f.verifier))
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	rawID, _ := tok.Extra("id_token").(string)
	if rawID == "" {
		t.Fatal("no id_token in the token response")
	}
	res := tokens{raw: tok, rawID: rawID}
	res.id, res.err = provider.Verifier(&oidc.Config{ClientID: clientID}).Verify(ctx, rawID)
	if res.err == nil {
		if err := res.id.Claims(&res.claims); err != nil {
			t.Fatal(err)
		}
	}
	return res
}

func mustVerify(t *testing.T, tk tokens, f flow) claims {
	t.Helper()
	if tk.err != nil {
		t.Fatalf("ID token does not verify: %v", tk.err)
	}
	if tk.id.Nonce != f.nonce {
		t.Fatalf("nonce = %q, want %q", tk.id.Nonce, f.nonce)
	}
	return tk.claims
}

// passwordLogin runs the whole email/password flow in b.
func passwordLogin(t *testing.T, p *idp, b *browser, email, password string) (flow, tokens) {
	t.Helper()
	f, pg := b.authorize(nil)
	id := requestID(t, pg)
	res := b.post("/u/login", url.Values{"state": {id}, "email": {email}, "password": {password}})
	return f, p.exchange(t, f, callback(t, res), oauth2.AuthStyleInHeader)
}

func TestDiscoveryIssuerIsExact(t *testing.T) {
	t.Parallel()
	for _, slash := range []bool{true, false} {
		t.Run(fmt.Sprintf("trailing_slash=%v", slash), func(t *testing.T) {
			t.Parallel()
			p := startIDP(t, slash)
			resp, err := http.Get(p.base + "/.well-known/openid-configuration")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var doc map[string]any
			if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
				t.Fatal(err)
			}
			if doc["issuer"] != p.srv.Issuer() {
				t.Fatalf("issuer = %q, want %q", doc["issuer"], p.srv.Issuer())
			}
			for key, path := range map[string]string{
				"authorization_endpoint": "/authorize",
				"token_endpoint":         "/oauth/token",
				"userinfo_endpoint":      "/userinfo",
				"revocation_endpoint":    "/oauth/revoke",
				"end_session_endpoint":   "/oidc/logout",
				"jwks_uri":               "/.well-known/jwks.json",
			} {
				if doc[key] != p.base+path {
					t.Errorf("%s = %q, want %q", key, doc[key], p.base+path)
				}
			}
			// go-oidc insists on byte-for-byte equality with what it was given.
			if _, err := oidc.NewProvider(context.Background(), p.srv.Issuer()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestPasswordCodeFlow(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		slash bool
		style oauth2.AuthStyle
	}{
		{"basic/trailing_slash", true, oauth2.AuthStyleInHeader},
		{"post/trailing_slash", true, oauth2.AuthStyleInParams},
		{"basic/no_trailing_slash", false, oauth2.AuthStyleInHeader},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := startIDP(t, tc.slash, seeded)
			b := newBrowser(t, p)
			f, pg := b.authorize(url.Values{"login_hint": {"alice@example.com"}, "ui_locales": {"de"}})
			if pg.url.Path != "/u/login" {
				t.Fatalf("landed on %s", pg.url)
			}
			for _, want := range []string{devidp.Banner, `value="alice@example.com"`, "Sign up", "Continue with Google", "Continue with Facebook"} {
				if !strings.Contains(pg.body, want) {
					t.Errorf("login page lacks %q", want)
				}
			}
			res := b.post("/u/login", url.Values{"state": {requestID(t, pg)}, "email": {"alice@example.com"}, "password": {seeded.Password}})
			tk := p.exchange(t, f, callback(t, res), tc.style)
			c := mustVerify(t, tk, f)

			wantSub, ok := p.srv.UserSub(devidp.ConnectionPassword, "alice@example.com")
			if !ok || tk.id.Subject != wantSub || !regexp.MustCompile(`^auth0\|[0-9a-f]{24}$`).MatchString(wantSub) {
				t.Errorf("sub = %q, UserSub = %q %v", tk.id.Subject, wantSub, ok)
			}
			if tk.id.Issuer != p.srv.Issuer() {
				t.Errorf("iss = %q, want %q", tk.id.Issuer, p.srv.Issuer())
			}
			if c.Email != "alice@example.com" || c.EmailVerified == nil || !*c.EmailVerified || c.Name != "Alice Example" ||
				c.Nickname != "alice" || c.Picture == "" {
				t.Errorf("claims = %+v", c)
			}

			// userinfo says the same.
			provider, err := oidc.NewProvider(context.Background(), p.srv.Issuer())
			if err != nil {
				t.Fatal(err)
			}
			ui, err := provider.UserInfo(context.Background(), oauth2.StaticTokenSource(tk.raw))
			if err != nil {
				t.Fatal(err)
			}
			var uc claims
			if err := ui.Claims(&uc); err != nil {
				t.Fatal(err)
			}
			if ui.Subject != wantSub || uc.Email != c.Email || uc.EmailVerified == nil || *uc.EmailVerified != *c.EmailVerified ||
				uc.Name != c.Name || uc.Nickname != c.Nickname || uc.Picture != c.Picture {
				t.Errorf("userinfo = %s %+v, want %s %+v", ui.Subject, uc, wantSub, c)
			}
		})
	}
}

func TestWrongPassword(t *testing.T) {
	t.Parallel()
	p := startIDP(t, true, seeded)
	b := newBrowser(t, p)
	_, pg := b.authorize(nil)
	res := b.post("/u/login", url.Values{"state": {requestID(t, pg)}, "email": {"alice@example.com"}, "password": {"nope"}})
	if res.status != http.StatusOK || res.url.Path != "/u/login" || !strings.Contains(res.body, "Wrong email or password") {
		t.Fatalf("got %d at %s: %s", res.status, res.url, res.body)
	}
}

func TestSignUp(t *testing.T) {
	t.Parallel()
	p := startIDP(t, true, seeded)
	signup := func(email string) (flow, page) {
		b := newBrowser(t, p)
		f, pg := b.authorize(url.Values{"screen_hint": {"signup"}, "login_hint": {email}})
		if pg.url.Path != "/u/signup" || !strings.Contains(pg.body, devidp.Banner) || !strings.Contains(pg.body, `value="`+email+`"`) {
			t.Fatalf("screen_hint=signup landed on %s: %s", pg.url, pg.body)
		}
		return f, b.post("/u/signup", url.Values{"state": {requestID(t, pg)}, "email": {email}, "password": {"pw"}, "name": {"Bob"}})
	}

	f, res := signup("bob@example.com")
	c := mustVerify(t, p.exchange(t, f, callback(t, res), oauth2.AuthStyleInHeader), f)
	sub, ok := p.srv.UserSub(devidp.ConnectionPassword, "bob@example.com")
	if !ok || !strings.HasPrefix(sub, "auth0|") {
		t.Fatalf("UserSub = %q %v", sub, ok)
	}
	if c.Email != "bob@example.com" || c.EmailVerified == nil || *c.EmailVerified || c.Name != "Bob" {
		t.Errorf("claims = %+v (a signed-up user's email is not verified)", c)
	}

	for _, email := range []string{"bob@example.com", "alice@example.com"} {
		_, res = signup(email)
		if res.status != http.StatusOK || res.url.Path != "/u/signup" || !strings.Contains(res.body, "user already exists") {
			t.Errorf("second sign-up of %s: %d at %s: %s", email, res.status, res.url, res.body)
		}
	}
	if _, err := p.srv.AddUser(devidp.User{Email: "BOB@example.com", Password: "x"}); err == nil {
		t.Error("AddUser accepted an existing email")
	}
}

func TestSocialConnections(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name         string
		connection   string
		unverified   bool
		subPattern   string
		wantVerified bool
	}{
		{"google", "google-oauth2", false, `^google-oauth2\|[0-9]{21}$`, true},
		{"facebook", "facebook", false, `^facebook\|[0-9]{16}$`, true},
		{"facebook_unverified", "facebook", true, `^facebook\|[0-9]{16}$`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := startIDP(t, true)
			var subs []string
			for range 2 { // two sign-ins, two browsers: the same subject
				b := newBrowser(t, p)
				f, pg := b.authorize(url.Values{"connection": {tc.connection}, "login_hint": {"carol@example.com"}})
				if pg.url.Path != "/u/social" || !strings.Contains(pg.body, "(simulated)") ||
					!strings.Contains(pg.body, `value="carol@example.com"`) || !strings.Contains(pg.body, devidp.Banner) {
					t.Fatalf("connection=%s landed on %s: %s", tc.connection, pg.url, pg.body)
				}
				form := url.Values{"state": {requestID(t, pg)}, "connection": {tc.connection}, "email": {"carol@example.com"}, "name": {"Carol"}}
				if tc.unverified {
					form.Set("email_unverified", "1")
				}
				tk := p.exchange(t, f, callback(t, b.post("/u/social", form)), oauth2.AuthStyleInHeader)
				c := mustVerify(t, tk, f)
				if c.EmailVerified == nil || *c.EmailVerified != tc.wantVerified || c.Email != "carol@example.com" || c.Name != "Carol" {
					t.Errorf("claims = %+v", c)
				}
				subs = append(subs, tk.id.Subject)
			}
			if !regexp.MustCompile(tc.subPattern).MatchString(subs[0]) || subs[0] != subs[1] {
				t.Errorf("subs = %v, want two equal matching %s", subs, tc.subPattern)
			}
			if sub, ok := p.srv.UserSub(tc.connection, "carol@example.com"); !ok || sub != subs[0] {
				t.Errorf("UserSub = %q %v", sub, ok)
			}
		})
	}
}

func TestLoginPageButtonsReachSocialPage(t *testing.T) {
	t.Parallel()
	p := startIDP(t, true)
	b := newBrowser(t, p)
	_, pg := b.authorize(url.Values{"login_hint": {"dan@example.com"}})
	id := requestID(t, pg)
	social := b.get(p.base + "/u/social?" + url.Values{"state": {id}, "connection": {"facebook"}}.Encode())
	if social.status != http.StatusOK || !strings.Contains(social.body, "Continue with Facebook (simulated)") ||
		!strings.Contains(social.body, "email not verified (some Facebook accounts)") {
		t.Fatalf("got %d: %s", social.status, social.body)
	}

	_, pg = b.authorize(url.Values{"connection": {"Username-Password-Authentication"}})
	if pg.url.Path != "/u/login" || strings.Contains(pg.body, "Continue with Google") {
		t.Errorf("connection=Username-Password-Authentication should show only the password form: %s", pg.body)
	}
}

func TestPrompt(t *testing.T) {
	t.Parallel()
	p := startIDP(t, true, seeded)

	t.Run("none_without_session", func(t *testing.T) {
		t.Parallel()
		b := newBrowser(t, p)
		f, pg := b.authorize(url.Values{"prompt": {"none"}})
		params := callback(t, pg)
		if params.Get("error") != "login_required" || params.Get("state") != f.state || params.Has("code") {
			t.Fatalf("got %v", params)
		}
	})

	t.Run("none_with_session", func(t *testing.T) {
		t.Parallel()
		b := newBrowser(t, p)
		_, first := passwordLogin(t, p, b, "alice@example.com", seeded.Password)
		f, pg := b.authorize(url.Values{"prompt": {"none"}})
		tk := p.exchange(t, f, callback(t, pg), oauth2.AuthStyleInHeader)
		mustVerify(t, tk, f)
		if tk.id.Subject != first.id.Subject {
			t.Errorf("sub = %q, want %q", tk.id.Subject, first.id.Subject)
		}
		// A live session signs in without a form when nothing asks for one.
		f, pg = b.authorize(nil)
		mustVerify(t, p.exchange(t, f, callback(t, pg), oauth2.AuthStyleInHeader), f)
	})

	t.Run("login_forces_form", func(t *testing.T) {
		t.Parallel()
		b := newBrowser(t, p)
		passwordLogin(t, p, b, "alice@example.com", seeded.Password)
		for _, extra := range []url.Values{{"prompt": {"login"}}, {"max_age": {"0"}}} {
			_, pg := b.authorize(extra)
			if pg.url.Path != "/u/login" || !strings.Contains(pg.body, `name="password"`) {
				t.Errorf("%v: expected the login form, got %d at %s", extra, pg.status, pg.url)
			}
		}
	})

	t.Run("other_browser_cannot_finish", func(t *testing.T) {
		t.Parallel()
		b := newBrowser(t, p)
		_, pg := b.authorize(nil)
		id := requestID(t, pg)
		// Another browser posts the right password for this request…
		other := newBrowser(t, p)
		other.post("/u/login", url.Values{"state": {id}, "email": {"alice@example.com"}, "password": {seeded.Password}})
		// …but the callback alone does not yield a code in the first one.
		res := b.get(p.base + "/authorize/callback?id=" + url.QueryEscape(id))
		if res.status != http.StatusForbidden {
			t.Errorf("callback from another browser: %d %s", res.status, res.loc)
		}
	})
}

func TestLogout(t *testing.T) {
	t.Parallel()
	p := startIDP(t, true, seeded)
	for _, tc := range []struct {
		name     string
		returnTo string
		wantLoc  string
	}{
		{"registered_returnTo", logoutURI, logoutURI},
		{"unregistered_returnTo", "http://evil.example/", ""},
		{"oidc_end_session", "", logoutURI},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := newBrowser(t, p)
			passwordLogin(t, p, b, "alice@example.com", seeded.Password)
			logout := p.base + "/v2/logout?" + url.Values{"client_id": {clientID}, "returnTo": {tc.returnTo}}.Encode()
			if tc.returnTo == "" { // OIDC RP-initiated logout at Auth0's path
				logout = p.base + "/oidc/logout?" + url.Values{"client_id": {clientID}, "post_logout_redirect_uri": {logoutURI}}.Encode()
			}
			res := b.get(logout)
			if res.loc != tc.wantLoc {
				t.Errorf("Location = %q, want %q", res.loc, tc.wantLoc)
			}
			if tc.wantLoc == "" && (res.status != http.StatusOK || !strings.Contains(res.body, devidp.Banner)) {
				t.Errorf("got %d: %s", res.status, res.body)
			}
			_, pg := b.authorize(url.Values{"prompt": {"none"}})
			if params := callback(t, pg); params.Get("error") != "login_required" {
				t.Errorf("after logout prompt=none gave %v", params)
			}
		})
	}
}

func TestMisbehave(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		m     devidp.Misbehavior
		check func(t *testing.T, tk tokens, f flow, issuer string)
	}{
		{"bad_signature", devidp.Misbehavior{BadSignature: true}, func(t *testing.T, tk tokens, f flow, _ string) {
			if tk.err == nil {
				t.Error("ID token with a bad signature verified")
			}
		}},
		{"wrong_nonce", devidp.Misbehavior{WrongNonce: true}, func(t *testing.T, tk tokens, f flow, _ string) {
			// go-oidc does not check the nonce: the relying party must.
			if tk.err != nil {
				t.Fatal(tk.err)
			}
			if tk.id.Nonce == f.nonce {
				t.Error("nonce unchanged")
			}
		}},
		{"wrong_audience", devidp.Misbehavior{WrongAudience: true}, func(t *testing.T, tk tokens, f flow, _ string) {
			if tk.err == nil || !strings.Contains(tk.err.Error(), "audience") {
				t.Errorf("err = %v, want an audience error", tk.err)
			}
		}},
		{"wrong_issuer", devidp.Misbehavior{WrongIssuer: true}, func(t *testing.T, tk tokens, f flow, issuer string) {
			if tk.err == nil || !strings.Contains(tk.err.Error(), "issue") {
				t.Errorf("err = %v, want an issuer error", tk.err)
			}
		}},
	} {
		for _, alg := range []string{"", "RS256", "ES256"} { // "": the default, RS256
			t.Run(tc.name+"/"+cmp.Or(alg, "default"), func(t *testing.T) {
				t.Parallel()
				p := startIDPWith(t, true, func(c *devidp.Config) { c.SigningAlg = alg }, seeded)
				p.srv.Misbehave(tc.m)
				f, tk := passwordLogin(t, p, newBrowser(t, p), "alice@example.com", seeded.Password)
				tc.check(t, tk, f, p.srv.Issuer())

				p.srv.Misbehave(devidp.Misbehavior{})
				f, tk = passwordLogin(t, p, newBrowser(t, p), "alice@example.com", seeded.Password)
				mustVerify(t, tk, f)
				if got, want := signedWith(t, tk.rawID), cmp.Or(alg, "RS256"); got != want {
					t.Errorf("ID token signed with %s, want %s", got, want)
				}
			})
		}
	}
}

// signedWith is the alg in a compact JWS's header.
func signedWith(t *testing.T, raw string) string {
	t.Helper()
	jws, err := jose.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256, jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	return jws.Signatures[0].Header.Algorithm
}

// TestConcurrentFlows runs many sign-ups and sign-ins against one server
// (meaningful under -race).
func TestConcurrentFlows(t *testing.T) {
	t.Parallel()
	p := startIDP(t, true, seeded)
	for i := range 8 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			b := newBrowser(t, p)
			f, pg := b.authorize(url.Values{"screen_hint": {"signup"}})
			email := fmt.Sprintf("user%d@example.com", i)
			res := b.post("/u/signup", url.Values{"state": {requestID(t, pg)}, "email": {email}, "password": {"pw"}})
			mustVerify(t, p.exchange(t, f, callback(t, res), oauth2.AuthStyleInParams), f)
			f, tk := passwordLogin(t, p, newBrowser(t, p), "alice@example.com", seeded.Password)
			mustVerify(t, tk, f)
		})
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	good := devidp.Client{ID: "c", Secret: "s", RedirectURIs: []string{redirectURI}}
	for _, tc := range []struct {
		name string
		cfg  devidp.Config
	}{
		{"no_issuer", devidp.Config{}},
		{"issuer_with_path", devidp.Config{Issuer: "http://127.0.0.1:1/tenant/"}},
		{"duplicate_client", devidp.Config{Issuer: "http://127.0.0.1:1/", Clients: []devidp.Client{good, good}}},
		{"client_without_secret", devidp.Config{Issuer: "http://127.0.0.1:1/", Clients: []devidp.Client{{ID: "c", RedirectURIs: []string{redirectURI}}}}},
		{"duplicate_user", devidp.Config{Issuer: "http://127.0.0.1:1/", Users: []devidp.User{seeded, seeded}}},
		{"unknown_signing_alg", devidp.Config{Issuer: "http://127.0.0.1:1/", SigningAlg: "HS256"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := devidp.New(tc.cfg); err == nil {
				t.Error("New accepted it")
			}
		})
	}
}

func TestRevokeAccessToken(t *testing.T) {
	t.Parallel()
	p := startIDP(t, true, seeded)
	_, tk := passwordLogin(t, p, newBrowser(t, p), "alice@example.com", seeded.Password)
	provider, err := oidc.NewProvider(context.Background(), p.srv.Issuer())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := provider.UserInfo(context.Background(), oauth2.StaticTokenSource(tk.raw)); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, p.base+"/oauth/revoke",
		strings.NewReader(url.Values{"token": {tk.raw.AccessToken}, "token_type_hint": {"access_token"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(clientID, clientSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("revoke: %d", resp.StatusCode)
	}
	if _, err := provider.UserInfo(context.Background(), oauth2.StaticTokenSource(tk.raw)); err == nil {
		t.Error("userinfo accepted a revoked access token")
	}
}

// A denying Action or Rule sends the browser back to the client with the
// error and the person-facing description, and the state.
func TestMisbehaveDeny(t *testing.T) {
	t.Parallel()
	for _, code := range []string{"", "unauthorized"} {
		p := startIDP(t, true, seeded)
		p.srv.Misbehave(devidp.Misbehavior{Deny: &devidp.Denial{Email: "alice@EXAMPLE.com", Error: code,
			Description: "Your account is suspended."}})
		b := newBrowser(t, p)
		f, pg := b.authorize(nil)
		res := b.post("/u/login", url.Values{"state": {requestID(t, pg)}, "email": {seeded.Email}, "password": {seeded.Password}})
		q := callback(t, res)
		want := code
		if want == "" {
			want = "access_denied"
		}
		if q.Get("error") != want || q.Get("error_description") != "Your account is suspended." ||
			q.Get("state") != f.state || q.Get("code") != "" {
			t.Errorf("denied callback = %v", q)
		}
		// Somebody else still signs in.
		if _, err := p.srv.AddUser(devidp.User{Email: "bob@example.com", Password: "pw"}); err != nil {
			t.Fatal(err)
		}
		f, tk := passwordLogin(t, p, newBrowser(t, p), "bob@example.com", "pw")
		mustVerify(t, tk, f)
	}
}

// HS256 ID tokens are signed with the client secret and fail go-oidc's
// default RS256-only verification.
func TestMisbehaveHS256(t *testing.T) {
	t.Parallel()
	p := startIDP(t, true, seeded)
	p.srv.Misbehave(devidp.Misbehavior{HS256: true})
	_, tk := passwordLogin(t, p, newBrowser(t, p), seeded.Email, seeded.Password)
	if tk.err == nil || !strings.Contains(tk.err.Error(), "HS256") {
		t.Fatalf("verification error %v, want one about HS256", tk.err)
	}
	jws, err := jose.ParseSigned(tk.rawID, []jose.SignatureAlgorithm{jose.HS256})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jws.Verify([]byte(clientSecret)); err != nil {
		t.Errorf("not signed with the client secret: %v", err)
	}
}

// Under UserinfoRateLimited /userinfo answers 429 with Auth0's headers;
// IDTokenWithoutEmail leaves the email to userinfo.
func TestMisbehaveUserinfo(t *testing.T) {
	t.Parallel()
	p := startIDP(t, true, seeded)
	p.srv.Misbehave(devidp.Misbehavior{IDTokenWithoutEmail: true})
	f, tk := passwordLogin(t, p, newBrowser(t, p), seeded.Email, seeded.Password)
	if c := mustVerify(t, tk, f); c.Email != "" || c.EmailVerified != nil || c.Name == "" {
		t.Errorf("ID token claims %+v, want no email", c)
	}
	userinfo := func() *http.Response {
		req, _ := http.NewRequest(http.MethodGet, p.base+"/userinfo", nil)
		req.Header.Set("Authorization", "Bearer "+tk.raw.AccessToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := userinfo(); resp.StatusCode != http.StatusOK {
		t.Fatalf("userinfo %d", resp.StatusCode)
	}
	p.srv.Misbehave(devidp.Misbehavior{UserinfoRateLimited: true})
	resp := userinfo()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("X-RateLimit-Remaining") != "0" ||
		resp.Header.Get("X-RateLimit-Reset") == "" {
		t.Errorf("rate-limited userinfo: %d %v", resp.StatusCode, resp.Header)
	}
	if n := p.srv.UserinfoCalls(); n != 2 {
		t.Errorf("UserinfoCalls = %d, want 2", n)
	}
}
