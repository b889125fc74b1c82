package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/zitadel/oidc/v3/pkg/oidc"
)

// stubOP is the in-process stub upstream issue 14 measures a login with: it
// answers a sign-in at once, so that what a login costs is usher's. Its
// /authorize redirects straight back to the redirect_uri with a code for
// one fixed user (no login form, no upstream session), its /oauth/token
// trades that code, once, with the PKCE verifier, for an ES256 ID token
// carrying the request's nonce, and its JWKS is that one key. Everything
// else (discovery, the Management API) is devidp's, which it wraps: devidp's
// discovery names these same paths.
type stubOP struct {
	next    http.Handler
	issuer  atomic.Pointer[string] // devidp's, set once it listens
	sub     atomic.Pointer[string]
	email   string
	signer  jose.Signer
	jwks    []byte
	mu      sync.Mutex
	pending map[string]stubGrant
}

// stubGrant is what a code stands for until it is traded.
type stubGrant struct {
	clientID, redirectURI, nonce, challenge string
}

func newStubOP(email string) (*stubOP, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: "stub"}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, err
	}
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "stub", Algorithm: "ES256", Use: "sig"}}})
	if err != nil {
		return nil, err
	}
	return &stubOP{email: email, signer: signer, jwks: jwks, pending: map[string]stubGrant{}}, nil
}

// wrap is app.DevOptions.WrapIDP.
func (s *stubOP) wrap(next http.Handler) http.Handler {
	s.next = next
	mux := http.NewServeMux()
	mux.HandleFunc("GET /authorize", s.authorize)
	mux.HandleFunc("POST /oauth/token", s.token)
	mux.HandleFunc("GET /.well-known/jwks.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(s.jwks)
	})
	mux.Handle("/", next)
	return mux
}

// answerAs sets the issuer the stub signs as and the subject it signs in.
func (s *stubOP) answerAs(issuer, sub string) {
	s.issuer.Store(&issuer)
	s.sub.Store(&sub)
}

func (s *stubOP) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	back, err := url.Parse(q.Get("redirect_uri"))
	if err != nil || back.Scheme == "" || q.Get("code_challenge_method") != "S256" {
		http.Error(w, "stub OP: a redirect_uri and an S256 code challenge are required", http.StatusBadRequest)
		return
	}
	code := rand.Text()
	s.mu.Lock()
	s.pending[code] = stubGrant{clientID: q.Get("client_id"), redirectURI: q.Get("redirect_uri"),
		nonce: q.Get("nonce"), challenge: q.Get("code_challenge")}
	s.mu.Unlock()
	answer := back.Query()
	answer.Set("code", code)
	answer.Set("state", q.Get("state"))
	back.RawQuery = answer.Encode()
	http.Redirect(w, r, back.String(), http.StatusFound)
}

func (s *stubOP) token(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	form, _ := url.ParseQuery(string(body))
	if form.Get("grant_type") != "authorization_code" { // the Management API's token: devidp's
		r.Body = io.NopCloser(bytes.NewReader(body))
		s.next.ServeHTTP(w, r)
		return
	}
	clientID, _, basic := r.BasicAuth()
	if !basic {
		clientID = form.Get("client_id")
	}
	code := form.Get("code")
	s.mu.Lock()
	g, ok := s.pending[code]
	delete(s.pending, code)
	s.mu.Unlock()
	if !ok || g.clientID != clientID || g.redirectURI != form.Get("redirect_uri") ||
		subtle.ConstantTimeCompare([]byte(oidc.NewSHACodeChallenge(form.Get("code_verifier"))), []byte(g.challenge)) != 1 {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		w.Write([]byte(`{"error":"invalid_grant"}`))
		return
	}
	now := time.Now()
	idToken, err := jwt.Signed(s.signer).Claims(map[string]any{
		"iss": *s.issuer.Load(), "sub": *s.sub.Load(), "aud": clientID, "nonce": g.nonce,
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "auth_time": now.Unix(),
		"email": s.email, "email_verified": true,
	}).Serialize()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(map[string]any{"access_token": rand.Text(), "token_type": "Bearer",
		"expires_in": 3600, "id_token": idToken})
}
