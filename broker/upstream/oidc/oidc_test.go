package oidc

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/usher-oidc/usher/broker/upstream"
)

// fakeOP is a minimal OpenID Provider: discovery, JWKS, a token endpoint
// answering with the ID token claims set by the test, and userinfo.
type fakeOP struct {
	*httptest.Server
	key *rsa.PrivateKey

	mu         sync.Mutex
	claims     map[string]any // the next ID token's claims (iss, aud, exp added)
	hs256      bool
	userinfo   map[string]any // nil: userinfo fails
	uiCalls    int
	endSession string
	tokenForm  url.Values
}

func newFakeOP(t *testing.T) *fakeOP { return newFakeOPWith(t, nil) }

// newFakeOPWith is newFakeOP whose server reports its connections' states
// to connState (nil: not at all).
func newFakeOPWith(t *testing.T, connState func(net.Conn, http.ConnState)) *fakeOP {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	op := &fakeOP{key: key}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		op.mu.Lock()
		defer op.mu.Unlock()
		doc := map[string]any{"issuer": op.issuer(), "authorization_endpoint": op.URL + "/authorize",
			"token_endpoint": op.URL + "/token", "jwks_uri": op.URL + "/jwks", "userinfo_endpoint": op.URL + "/userinfo",
			"id_token_signing_alg_values_supported": []string{"RS256"}}
		if op.endSession != "" {
			doc["end_session_endpoint"] = op.endSession
		}
		_ = json.NewEncoder(w).Encode(doc)
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
	})
	mux.HandleFunc("POST /token", func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		op.mu.Lock()
		defer op.mu.Unlock()
		op.tokenForm = r.PostForm
		claims := map[string]any{"iss": op.issuer(), "aud": "usher", "exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix()}
		for k, v := range op.claims {
			claims[k] = v
		}
		payload, _ := json.Marshal(claims)
		sk := jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: op.key, KeyID: "k1"}}
		if op.hs256 {
			sk = jose.SigningKey{Algorithm: jose.HS256, Key: []byte("the-client-secret-of-32-bytes!!!")}
		}
		signer, err := jose.NewSigner(sk, (&jose.SignerOptions{}).WithType("JWT"))
		if err != nil {
			t.Error(err)
			return
		}
		jws, _ := signer.Sign(payload)
		raw, _ := jws.CompactSerialize()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "at", "token_type": "Bearer", "expires_in": 60, "id_token": raw})
	})
	mux.HandleFunc("GET /userinfo", func(w http.ResponseWriter, r *http.Request) {
		op.mu.Lock()
		defer op.mu.Unlock()
		op.uiCalls++
		if op.userinfo == nil {
			http.Error(w, "too many requests", http.StatusTooManyRequests)
			return
		}
		_ = json.NewEncoder(w).Encode(op.userinfo)
	})
	op.Server = httptest.NewUnstartedServer(mux)
	op.Config.ConnState = connState
	op.Start()
	t.Cleanup(op.Close)
	return op
}

func (op *fakeOP) issuer() string { return op.URL + "/" }

func (op *fakeOP) set(f func(op *fakeOP)) {
	op.mu.Lock()
	defer op.mu.Unlock()
	f(op)
}

func (op *fakeOP) upstream(mod func(*Options)) *Upstream {
	o := Options{Issuer: op.issuer(), ClientID: "usher", ClientSecret: "s", HTTPClient: op.Client()}
	if mod != nil {
		mod(&o)
	}
	return New(o)
}

const callback = "https://usher.example/callback"

func exchange(t *testing.T, u *Upstream, nonce string) (*upstream.Identity, error) {
	t.Helper()
	if err := u.Ready(context.Background()); err != nil {
		t.Fatal(err)
	}
	return u.Exchange(context.Background(), upstream.Callback{RedirectURL: callback, Code: "c", Nonce: nonce, CodeVerifier: "v"})
}

func TestExchange(t *testing.T) {
	t.Parallel()
	op := newFakeOP(t)
	op.set(func(op *fakeOP) {
		op.claims = map[string]any{"sub": "google-oauth2|7", "nonce": "n1", "email": "a@example.com", "email_verified": "true",
			"name": "A", "auth_time": 1700000000, "amr": []string{"pwd"}, "sid": "s1", "plan": "pro", "other": 1}
	})
	u := op.upstream(func(o *Options) {
		o.CopiedClaims = []string{"plan", "absent"}
		o.IdentityIssuer = "https://canonical.example/"
		o.Connection = func(sub string) string { return "conn:" + sub }
	})
	id, err := exchange(t, u, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if id.Issuer != op.issuer() || id.StoreIssuer != "https://canonical.example/" || id.Subject != "google-oauth2|7" ||
		id.Email != "a@example.com" || !id.EmailVerified || id.Name != "A" || id.SessionID != "s1" ||
		id.AuthTime.Unix() != 1700000000 || len(id.AMR) != 1 || id.Connection != "conn:google-oauth2|7" ||
		len(id.Claims) != 1 || id.Claims["plan"] != "pro" || id.IDToken == "" {
		t.Fatalf("identity = %+v", id)
	}
	op.mu.Lock()
	form := op.tokenForm
	op.mu.Unlock()
	if form.Get("redirect_uri") != callback || form.Get("code_verifier") != "v" || form.Get("code") != "c" {
		t.Errorf("token request = %v", form)
	}
	if got := u.TokenClaims(); len(got.Copied) != 2 || got.Subject != "" {
		t.Errorf("TokenClaims = %+v", got)
	}
}

func TestExchangeRejects(t *testing.T) {
	t.Parallel()
	op := newFakeOP(t)
	u := op.upstream(nil)
	op.set(func(op *fakeOP) { op.claims = map[string]any{"sub": "x", "nonce": "other"} })
	if _, err := exchange(t, u, "n1"); !errors.Is(err, errNonceMismatch) {
		t.Errorf("nonce mismatch: err = %v", err)
	}
	op.set(func(op *fakeOP) { op.claims = map[string]any{"sub": "x", "nonce": "n1"}; op.hs256 = true })
	_, err := exchange(t, u, "n1")
	if !errors.Is(err, upstream.ErrHS256) || upstream.Advice(err) != defaultHS256Advice {
		t.Errorf("HS256: err = %v, advice %q", err, upstream.Advice(err))
	}
	adv := op.upstream(func(o *Options) { o.HS256Advice = "change it" })
	if _, err := exchange(t, adv, "n1"); upstream.Advice(err) != "change it" {
		t.Errorf("HS256 advice = %q", upstream.Advice(err))
	}
}

// An ID token without email: userinfo fills it (not with NoUserinfo); a
// failing userinfo leaves the ID token's claims and says why.
func TestExchangeUserinfo(t *testing.T) {
	t.Parallel()
	op := newFakeOP(t)
	op.set(func(op *fakeOP) {
		op.claims = map[string]any{"sub": "x", "nonce": "n1", "name": "Token Name"}
		op.userinfo = map[string]any{"sub": "x", "email": "u@example.com", "email_verified": true, "name": "UI", "picture": "p"}
	})
	id, err := exchange(t, op.upstream(nil), "n1")
	if err != nil || id.Email != "u@example.com" || !id.EmailVerified || id.Name != "Token Name" || id.Picture != "p" || id.UserinfoErr != nil {
		t.Fatalf("identity = %+v, err %v", id, err)
	}
	op.set(func(op *fakeOP) { op.userinfo = map[string]any{"sub": "someone-else", "email": "e@example.com"} })
	if id, err := exchange(t, op.upstream(nil), "n1"); err != nil || id.Email != "" || id.UserinfoErr == nil {
		t.Errorf("userinfo about another subject: %+v, err %v", id, err)
	}
	op.set(func(op *fakeOP) { op.userinfo = nil })
	if id, err := exchange(t, op.upstream(nil), "n1"); err != nil || id.UserinfoErr == nil {
		t.Errorf("failing userinfo: %+v, err %v", id, err)
	}
	op.set(func(op *fakeOP) { op.uiCalls = 0 })
	_, err = exchange(t, op.upstream(func(o *Options) { o.NoUserinfo = true }), "n1")
	var calls int
	op.set(func(op *fakeOP) { calls = op.uiCalls })
	if err != nil || calls != 0 {
		t.Errorf("NoUserinfo: %d calls, err %v", calls, err)
	}
}

func TestLoginURL(t *testing.T) {
	t.Parallel()
	op := newFakeOP(t)
	u := op.upstream(nil)
	if err := u.Ready(context.Background()); err != nil {
		t.Fatal(err)
	}
	age := uint(0)
	raw := u.AuthCodeURL(upstream.LoginRequest{RedirectURL: callback, State: "st", Nonce: "no", CodeVerifier: "ve",
		LoginHint: "a@example.com", Prompt: []string{"login", "consent"}, UILocales: "de", MaxAge: &age,
		Connection: "google-oauth2", ScreenHint: "signup", Organization: "org_1", Invitation: "i", Signup: true},
		map[string]string{"extra": "x", "empty": ""})
	p, err := url.Parse(raw)
	if err != nil || !strings.HasPrefix(raw, op.URL+"/authorize?") {
		t.Fatalf("URL %q", raw)
	}
	q := p.Query()
	want := map[string]string{"client_id": "usher", "redirect_uri": callback, "response_type": "code", "scope": "openid profile email",
		"state": "st", "nonce": "no", "code_challenge_method": "S256", "login_hint": "a@example.com", "prompt": "login consent",
		"ui_locales": "de", "max_age": "0", "connection": "google-oauth2", "screen_hint": "signup", "extra": "x"}
	for k, v := range want {
		if q.Get(k) != v {
			t.Errorf("%s = %q, want %q", k, q.Get(k), v)
		}
	}
	// Organizations and the sign-up screen are a wrapper's to forward.
	for _, k := range []string{"organization", "invitation", "empty"} {
		if q.Has(k) {
			t.Errorf("%s sent: %q", k, q.Get(k))
		}
	}
	if q.Get("code_challenge") == "" {
		t.Error("no PKCE challenge")
	}
}

func TestLogoutURL(t *testing.T) {
	t.Parallel()
	op := newFakeOP(t)
	ctx := context.Background()
	r := upstream.LogoutRequest{Done: "https://usher.example/logout/done", State: "st", SessionID: "sid"}
	if got := op.upstream(nil).LogoutURL(ctx, r); got != "" {
		t.Errorf("no end_session_endpoint: %q", got)
	}
	op.set(func(op *fakeOP) { op.endSession = op.URL + "/logout?x=1" })
	got, _ := url.Parse(op.upstream(nil).LogoutURL(ctx, r))
	q := got.Query()
	if got.Path != "/logout" || q.Get("x") != "1" || q.Get("client_id") != "usher" || q.Get("post_logout_redirect_uri") != r.Done ||
		q.Get("state") != "st" || q.Get("logout_hint") != "sid" {
		t.Errorf("logout URL %v", got)
	}
	down := New(Options{Issuer: "http://127.0.0.1:1/", ClientID: "usher"})
	if got := down.LogoutURL(ctx, r); got != "" {
		t.Errorf("unreachable upstream: %q", got)
	}
}

func TestIdentityIssuer(t *testing.T) {
	t.Parallel()
	const custom, canonical = "https://login.example.com/", "https://tenant.eu.auth0.com/"
	for _, tc := range []struct {
		o        Options
		iss, key string
	}{
		{Options{Issuer: custom}, custom, custom},
		{Options{Issuer: custom, IdentityIssuer: canonical}, custom, canonical},
		{Options{Issuer: canonical, IdentityIssuer: canonical}, canonical, canonical},
		{Options{Issuer: custom, IdentityIssuer: canonical}, "https://other.example/", "https://other.example/"},
	} {
		if got := New(tc.o).identityIssuer(tc.iss); got != tc.key {
			t.Errorf("%+v: identityIssuer(%q) = %q, want %q", tc.o, tc.iss, got, tc.key)
		}
	}
}

func TestParseLooseBool(t *testing.T) {
	t.Parallel()
	for raw, want := range map[string]bool{`true`: true, `"true"`: true, `"TRUE"`: true, `false`: false, `"false"`: false, `1`: false, ``: false} {
		if got := parseLooseBool(json.RawMessage(raw)); got != want {
			t.Errorf("parseLooseBool(%s) = %v", raw, got)
		}
	}
}

// Sign-ins that come together reuse the connections to the upstream's
// token endpoint when they come together again: the default client keeps
// them open between uses (http.DefaultTransport keeps 2 per host, so the
// others were closed and the next sign-ins dialled again: at Auth0, a TLS
// handshake each).
func TestConcurrentExchangesReuseConnections(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	dialled := 0
	op := newFakeOPWith(t, func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			mu.Lock()
			dialled++
			mu.Unlock()
		}
	})
	op.set(func(op *fakeOP) { op.claims = map[string]any{"sub": "auth0|1", "nonce": "n"} })
	u := op.upstream(func(o *Options) { o.HTTPClient = nil }) // the default client
	if err := u.Ready(context.Background()); err != nil {
		t.Fatal(err)
	}
	const inFlight, rounds = 16, 5
	for range rounds { // each round's connections all idle before the next
		var wg sync.WaitGroup
		for range inFlight {
			wg.Go(func() {
				if _, err := u.Exchange(context.Background(), upstream.Callback{RedirectURL: callback, Code: "c", Nonce: "n", CodeVerifier: "v"}); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	}
	mu.Lock()
	defer mu.Unlock()
	// Discovery and the key set may take one more each.
	if dialled > inFlight+2 {
		t.Errorf("%d connections dialled for %d exchanges, %d at a time; want at most %d", dialled, inFlight*rounds, inFlight, inFlight+2)
	}
}
