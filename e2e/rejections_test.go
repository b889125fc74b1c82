package e2e

import (
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
	"github.com/usher-oidc/usher/devidp"
	"github.com/usher-oidc/usher/internal/testkit"
)

func startCountingDev(t *testing.T) (*app.Dev, *countingStore) {
	cs := &countingStore{}
	d := startDev(t, app.DevOptions{WrapStore: func(s app.Store) app.Store { cs.Store = s; return cs }})
	return d, cs
}

// Every malformed or hostile authorization request is refused with a clear
// OIDC error, and stores nothing.
func TestAuthorizeRejections(t *testing.T) {
	t.Parallel()
	d, cs := startCountingDev(t)
	good, _, _ := authorizeURL(d, nil)
	base, _ := url.Parse(good)
	tests := []struct {
		name string
		edit func(q url.Values)
		// redirected: the error goes back to the (valid) redirect URI;
		// otherwise it is shown on a page and the browser goes nowhere.
		redirected bool
		wantError  string
	}{
		{"wrong redirect_uri", func(q url.Values) { q.Set("redirect_uri", "https://evil.example/callback") }, false, ""},
		{"redirect_uri prefix", func(q url.Values) { q.Set("redirect_uri", d.SPAURL+"/callback/../x") }, false, ""},
		{"unknown client", func(q url.Values) { q.Set("client_id", "nobody") }, false, ""},
		{"missing PKCE", func(q url.Values) { q.Del("code_challenge"); q.Del("code_challenge_method") }, true, "invalid_request"},
		{"PKCE plain", func(q url.Values) { q.Set("code_challenge_method", "plain") }, true, "invalid_request"},
		{"implicit flow", func(q url.Values) { q.Set("response_type", "token") }, true, "unauthorized_client"},
		{"hybrid flow", func(q url.Values) { q.Set("response_type", "code id_token") }, true, "unauthorized_client"},
		{"response_mode fragment", func(q url.Values) { q.Set("response_mode", "fragment") }, true, "invalid_request"},
		{"no scope", func(q url.Values) { q.Del("scope") }, true, "invalid_request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := cs.authRequests.Load()
			q := base.Query()
			tc.edit(q)
			u := *base
			u.RawQuery = q.Encode()
			resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Get(u.String())
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			loc := resp.Header.Get("Location")
			if tc.redirected {
				if !strings.HasPrefix(loc, d.SPAURL+"/callback") {
					t.Fatalf("status %d, Location %q: want an error redirect to the client", resp.StatusCode, loc)
				}
				lu, _ := url.Parse(loc)
				params := lu.Query()
				if lu.Fragment != "" { // response_mode=fragment puts the error there
					params, _ = url.ParseQuery(lu.Fragment)
				}
				if got := params.Get("error"); got != tc.wantError {
					t.Errorf("error = %q (%s), want %q", got, params.Get("error_description"), tc.wantError)
				}
				if params.Get("code") != "" {
					t.Errorf("a code was issued: %s", loc)
				}
			} else if resp.StatusCode != http.StatusBadRequest || loc != "" {
				t.Fatalf("status %d, Location %q: want 400 and no redirect", resp.StatusCode, loc)
			}
			if n := cs.authRequests.Load() - before; n != 0 {
				t.Errorf("%d authorization requests stored for a rejected request", n)
			}
		})
	}
}

// A code works once; its replay fails and revokes what the first exchange issued.
func TestCodeReplayRevokesTokens(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	a := newAgent(t, d.SPAURL)
	code, verifier := a.signIn(d, app.DevUserEmail, app.DevUserPassword, false)

	first := exchangeCode(t, d, code, verifier)
	if first.status != http.StatusOK || first.AccessToken == "" || first.RefreshToken == "" {
		t.Fatalf("first exchange: %+v", first)
	}
	if s := userinfoStatus(t, d, first.AccessToken); s != http.StatusOK {
		t.Fatalf("userinfo before replay: %d", s)
	}
	replay := exchangeCode(t, d, code, verifier)
	if replay.status != http.StatusBadRequest || replay.Error != "invalid_grant" {
		t.Fatalf("replayed code: %+v, want invalid_grant", replay)
	}
	if s := userinfoStatus(t, d, first.AccessToken); s == http.StatusOK {
		t.Errorf("access token from a replayed code still accepted by /userinfo")
	}
	if r := refresh(t, d, first.RefreshToken); r.Error != "invalid_grant" {
		t.Errorf("refresh token from a replayed code still works: %+v", r)
	}
}

// Wrong verifier, wrong client, wrong redirect_uri, downgrade: all invalid.
func TestCodeExchangeRejections(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	a := newAgent(t, d.SPAURL)
	tests := []struct {
		name string
		edit func(v url.Values)
		want string
	}{
		{"wrong verifier", func(v url.Values) { v.Set("code_verifier", strings.Repeat("a", 43)) }, "invalid_grant"},
		{"no verifier", func(v url.Values) { v.Del("code_verifier") }, "invalid_request"},
		{"other redirect_uri", func(v url.Values) { v.Set("redirect_uri", d.SPAURL+"/other") }, "invalid_grant"},
		{"password grant", func(v url.Values) { v.Set("grant_type", "password"); v.Set("username", "x"); v.Set("password", "y") }, "unsupported_grant_type"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, verifier := a.signIn(d, app.DevUserEmail, app.DevUserPassword, false)
			v := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier},
				"client_id": {app.DevSPAClientID}, "redirect_uri": {d.SPAURL + "/callback"}}
			tc.edit(v)
			tr := postToken(t, d, v)
			if tr.Error != tc.want || tr.AccessToken != "" {
				t.Fatalf("got %+v, want error %s", tr, tc.want)
			}
		})
	}
}

// Refresh tokens rotate; presenting a rotated one revokes the whole family.
func TestRefreshReuseRevokesFamily(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	a := newAgent(t, d.SPAURL)
	code, verifier := a.signIn(d, app.DevUserEmail, app.DevUserPassword, false)
	t0 := exchangeCode(t, d, code, verifier)
	t1 := refresh(t, d, t0.RefreshToken)
	if t1.status != http.StatusOK || t1.RefreshToken == "" || t1.RefreshToken == t0.RefreshToken {
		t.Fatalf("rotation: %+v", t1)
	}
	t2 := refresh(t, d, t1.RefreshToken)
	if t2.status != http.StatusOK {
		t.Fatalf("second rotation: %+v", t2)
	}
	// An attacker replays the first token.
	if r := refresh(t, d, t0.RefreshToken); r.Error != "invalid_grant" {
		t.Fatalf("reused rotated token: %+v, want invalid_grant", r)
	}
	// The legitimate holder's current token is dead too: the family is revoked.
	if r := refresh(t, d, t2.RefreshToken); r.Error != "invalid_grant" {
		t.Fatalf("newest token after reuse: %+v, want invalid_grant", r)
	}
	if s := userinfoStatus(t, d, t2.AccessToken); s == http.StatusOK {
		t.Errorf("access token of a revoked family still accepted")
	}
}

// A callback whose state this browser never issued is refused on a page.
func TestCallbackForeignState(t *testing.T) {
	t.Parallel()
	d, cs := startCountingDev(t)
	victim := newAgent(t, d.SPAURL)
	attacker := newAgent(t, d.SPAURL)

	// The attacker starts a login and captures usher's callback URL.
	cb := attacker.upstreamCallback(d)
	before := cs.identities.Load()
	// …and makes the victim's browser load it (login CSRF): one that never
	// started a sign-in, and one with a sign-in of its own in flight (its
	// own sign-in cookie).
	busy := newAgent(t, d.SPAURL)
	u, _, _ := authorizeURL(d, nil)
	busy.get(u)
	for name, browser := range map[string]*agent{"a browser without a sign-in": victim, "a browser with its own sign-in": busy} {
		resp, body := browser.get(cb)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "does not belong to this browser") {
			t.Fatalf("%s loads a foreign callback: %d\n%s", name, resp.StatusCode, clipText(body))
		}
	}
	if cs.identities.Load() != before {
		t.Errorf("a user was resolved from a foreign callback")
	}
	// Those loads did not use up the state: the browser that started the
	// sign-in still completes it.
	if q := attacker.callbackOf(attacker.get(cb)); q.Get("code") == "" {
		t.Errorf("the sign-in's own browser, after foreign loads of its callback: %v", q)
	}
}

// The upstream's answer is taken once: the same callback loaded again and
// again at once, from the browser that started the sign-in, signs in once
// (a code for the client) and every other load gets the page. The state is
// taken from its auth request atomically (broker/loginstate.go); record
// format v3, which keeps it in the browser session, reads the session and
// saves it without it in two round trips, so concurrent loads could each
// find it: that format is not in the table.
func TestCallbackStateUsedOnce(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, format string }{{"bolt", ""}, {"redis", "v4"}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := startDevOn(t, tc.format)
			a := newAgent(t, d.SPAURL)
			cb := a.upstreamCallback(d)
			signedIn, refused := loadCallbackAtOnce(t, a, cb, func(loc string) bool {
				return strings.HasPrefix(loc, d.SPAURL+"/callback") && strings.Contains(loc, "code=")
			})
			if signedIn != 1 || refused != callbackLoads-1 {
				t.Errorf("%d loads of one callback: %d codes, %d refusal pages; want 1 code, the rest refused", callbackLoads, signedIn, refused)
			}
		})
	}
}

// callbackLoads is how many times the tests load one callback at once.
const callbackLoads = 8

// loadCallbackAtOnce loads the upstream callback cb callbackLoads times at
// once from a's browser, redirects not followed, and counts the answers
// that signed in (a redirect whose Location signedIn accepts) and those
// refused: on the "does not belong to this browser" page, or, for a load
// whose take comes after the winner has finished the sign-in and its
// request is gone, on the "took too long" page (CI saw 1 code, 4 and 3);
// others are logged.
func loadCallbackAtOnce(t *testing.T, a *agent, cb string, signedIn func(loc string) bool) (in, refused int32) {
	a.client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	var ins, refusals atomic.Int32
	var wg sync.WaitGroup
	for range callbackLoads {
		wg.Go(func() {
			resp, body, err := a.send(http.MethodGet, cb, nil)
			switch {
			case err != nil:
				t.Logf("load failed: %v", err)
			case resp.StatusCode/100 == 3 && signedIn(resp.Header.Get("Location")):
				ins.Add(1)
			case resp.StatusCode == http.StatusBadRequest &&
				(strings.Contains(body, "does not belong to this browser") || strings.Contains(body, "This sign-in took too long")):
				refusals.Add(1)
			default:
				t.Logf("load answered %d %s %s", resp.StatusCode, resp.Header.Get("Location"), clipText(body))
			}
		})
	}
	wg.Wait()
	return ins.Load(), refusals.Load()
}

// startDevOn starts usher dev on bbolt (format "") or on a Redis of its
// own writing record format format.
func startDevOn(t *testing.T, format string) *app.Dev {
	d, _ := startDevOnRedis(t, format)
	return d
}

// startDevOnRedis is startDevOn, also giving the Redis address ("" on bbolt).
func startDevOnRedis(t *testing.T, format string) (*app.Dev, string) {
	t.Helper()
	if format == "" {
		return startDev(t, app.DevOptions{}), ""
	}
	addr := testkit.StartRedis(t)
	return startDev(t, app.DevOptions{Configure: onRedis(addr, format)}), addr
}

// onRedis keeps usher's store in the Redis at addr, writing record format
// format.
func onRedis(addr, format string) func(*config.Config) {
	return func(c *config.Config) {
		c.Store.Driver, c.Store.Redis.URL, c.Store.RecordFormat = "redis", "redis://"+addr+"/0", format
	}
}

// upstreamCallback signs in as the dev user at the stand-in upstream and
// returns usher's callback URL it redirects to, not loaded.
func (a *agent) upstreamCallback(d *app.Dev) string {
	a.t.Helper()
	u, _, _ := authorizeURL(d, nil)
	resp, body := a.get(u)
	saved := a.client.CheckRedirect
	a.client.CheckRedirect = func(req *http.Request, _ []*http.Request) error {
		if strings.HasSuffix(req.URL.Path, "/callback") && strings.HasPrefix(req.URL.String(), d.IssuerURL) {
			return http.ErrUseLastResponse
		}
		return nil
	}
	defer func() { a.client.CheckRedirect = saved }()
	resp, _ = a.devidpForm(resp, body, "login", url.Values{"email": {app.DevUserEmail}, "password": {app.DevUserPassword}})
	cb := resp.Header.Get("Location")
	if !strings.HasPrefix(cb, strings.TrimSuffix(d.IssuerURL, "/")+"/callback") {
		a.t.Fatalf("no usher callback captured: %d %s", resp.StatusCode, cb)
	}
	return cb
}

// An upstream ID token that fails verification ends the sign-in with an
// OIDC error to the client, and creates no user; the same upstream's good
// tokens then sign in. With devidp signing RS256 (Auth0's) and ES256 (what
// the login benchmarks' stand-in signs with).
func TestUpstreamTokenRejected(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		m    devidp.Misbehavior
	}{
		{"bad signature", devidp.Misbehavior{BadSignature: true}},
		{"wrong nonce", devidp.Misbehavior{WrongNonce: true}},
		{"wrong audience", devidp.Misbehavior{WrongAudience: true}},
		{"wrong issuer", devidp.Misbehavior{WrongIssuer: true}},
	} {
		for _, alg := range []string{"RS256", "ES256"} {
			t.Run(tc.name+"/"+alg, func(t *testing.T) {
				t.Parallel()
				cs := &countingStore{}
				d := startDev(t, app.DevOptions{IDPSigningAlg: alg, WrapStore: func(s app.Store) app.Store { cs.Store = s; return cs }})
				d.IDP.Misbehave(tc.m)
				a := newAgent(t, d.SPAURL)
				u, _, _ := authorizeURL(d, nil)
				resp, body := a.get(u)
				resp, body = a.devidpForm(resp, body, "login", url.Values{"email": {app.DevUserEmail}, "password": {app.DevUserPassword}})
				q := a.callbackOf(resp, body)
				if q.Get("error") != "access_denied" || q.Get("code") != "" {
					t.Fatalf("callback to client: %v, want error=access_denied and no code", q)
				}
				if n := cs.identities.Load(); n != 0 {
					t.Errorf("%d users resolved from a rejected upstream token", n)
				}
				d.IDP.Misbehave(devidp.Misbehavior{})
				b := newAgent(t, d.SPAURL)
				code, verifier := b.signIn(d, app.DevUserEmail, app.DevUserPassword, false)
				if tr := exchangeCode(t, d, code, verifier); tr.IDToken == "" {
					t.Fatal("no ID token after a good upstream sign-in")
				}
			})
		}
	}
}

// prompt=none without an upstream session comes back to the client as
// login_required, not as a broken page.
func TestPromptNoneLoginRequired(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	a := newAgent(t, d.SPAURL)
	u, _, state := authorizeURL(d, url.Values{"prompt": {"none"}})
	resp, body := a.get(u)
	q := a.callbackOf(resp, body)
	if q.Get("error") != "login_required" || q.Get("state") != state {
		t.Fatalf("prompt=none: %v, want error=login_required with the client's state", q)
	}
	// After a sign-in, prompt=none succeeds silently.
	a.signIn(d, app.DevUserEmail, app.DevUserPassword, false)
	u, _, _ = authorizeURL(d, url.Values{"prompt": {"none"}})
	resp, body = a.get(u)
	if q := a.callbackOf(resp, body); q.Get("code") == "" {
		t.Fatalf("prompt=none with a session: %v", q)
	}
}

// TestUpstreamErrorEndsRequest: the upstream's error (login_required) ends
// the authorization request, taken with its state in the callback's one
// round trip on Redis (broker/loginstate.go): replaying the callback gets
// no second answer to the client, and the request's login step is stale.
func TestUpstreamErrorEndsRequest(t *testing.T) {
	t.Parallel()
	for _, store := range []string{"bolt", "redis"} {
		t.Run(store, func(t *testing.T) {
			t.Parallel()
			opts := app.DevOptions{}
			if store == "redis" {
				opts.Configure = onRedis(testkit.StartRedis(t), "v6")
			}
			d := startDev(t, opts)
			a := newAgent(t, d.SPAURL)
			var callback string
			follow := a.client.CheckRedirect
			a.client.CheckRedirect = func(req *http.Request, via []*http.Request) error {
				if strings.HasPrefix(req.URL.String(), strings.TrimSuffix(d.IssuerURL, "/")+"/callback") {
					callback = req.URL.String()
				}
				return follow(req, via)
			}
			u, _, _ := authorizeURL(d, url.Values{"prompt": {"none"}})
			resp, body := a.get(u)
			if q := a.callbackOf(resp, body); q.Get("error") != "login_required" || callback == "" {
				t.Fatalf("prompt=none signed out: %v (callback %q), want login_required through usher's callback", q, callback)
			}
			resp, _ = a.get(callback)
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("the callback replayed: %d %s, want 400 (no second answer to the client)", resp.StatusCode, resp.Header.Get("Location"))
			}
			cb, _ := url.Parse(callback)
			arID, _, _ := strings.Cut(cb.Query().Get("state"), ".")
			resp, _ = a.get(strings.TrimSuffix(d.IssuerURL, "/") + "/login?id=" + url.QueryEscape(arID))
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("the ended request's login step: %d %s, want 400 (stale)", resp.StatusCode, resp.Header.Get("Location"))
			}
		})
	}
}

// The admin page's sign-in keeps its state as an SPA sign-in does, with an
// auth request of its own: taken once (of 8 concurrent loads of its
// callback one signs in to the admin page), and that request is no
// client's, so /login refuses it.
func TestAdminCallbackUsedOnce(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, format string }{{"bolt", ""}, {"redis", "v4"}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			checkAdminCallbackUsedOnce(t, startDevOn(t, tc.format))
		})
	}
}

func checkAdminCallbackUsedOnce(t *testing.T, d *app.Dev) {
	base := strings.TrimSuffix(d.IssuerURL, "/")
	a := newAgent(t, base+"/admin/login")
	a.client.CheckRedirect = func(req *http.Request, _ []*http.Request) error {
		if strings.HasPrefix(req.URL.String(), base+"/callback") {
			return http.ErrUseLastResponse
		}
		return nil
	}
	resp, body := a.get(base + "/admin/login")
	resp, _ = a.devidpForm(resp, body, "login", url.Values{"email": {app.DevAdminEmail}, "password": {app.DevAdminPassword}})
	cb := resp.Header.Get("Location")
	u, err := url.Parse(cb)
	if err != nil || !strings.HasPrefix(cb, base+"/callback") {
		t.Fatalf("no admin callback captured: %d %q", resp.StatusCode, cb)
	}
	arID, _, found := strings.Cut(u.Query().Get("state"), ".")
	if !found {
		t.Fatalf("the admin sign-in's state %q names no auth request", u.Query().Get("state"))
	}
	if resp, body := a.get(base + "/login?id=" + url.QueryEscape(arID)); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("/login with the admin sign-in's request: %d\n%s", resp.StatusCode, clipText(body))
	}
	signedIn, refused := loadCallbackAtOnce(t, a, cb, func(loc string) bool { return loc == base+"/admin" })
	if signedIn != 1 || refused != callbackLoads-1 {
		t.Errorf("%d loads of one admin callback: %d admin sign-ins, %d refusal pages; want 1, the rest refused", callbackLoads, signedIn, refused)
	}
}
