package oidc

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/usher-oidc/usher/broker/upstream"
)

// Options configure an OIDC upstream.
type Options struct {
	// Issuer must equal the upstream's discovery `issuer` exactly, trailing
	// slash included.
	Issuer       string
	ClientID     string
	ClientSecret string
	// Scopes asked for (default openid profile email).
	Scopes []string
	// HTTPClient for discovery, JWKS, the code exchange and userinfo (nil: a
	// default client with a timeout).
	HTTPClient *http.Client
	// IdentityIssuer is the issuer identities from Issuer are stored under
	// when it differs from Issuer (Identity.StoreIssuer); empty = Issuer.
	IdentityIssuer string
	// CopiedClaims are ID token claims copied into Identity.Claims and
	// usher's tokens (names are checked by config: grants.ValidateClaimName).
	CopiedClaims []string

	// NoUserinfo: never ask userinfo, even for an ID token without email.
	NoUserinfo bool
	// Connection names the connection an identity signed in through from its
	// subject (nil: none).
	Connection func(subject string) string
	// HS256Advice replaces the advice logged when the upstream signs ID
	// tokens with HS256 (upstream.Advice).
	HS256Advice string
}

// Upstream is usher as an OIDC client of the upstream. It implements
// upstream.Upstream and upstream.LogoutRedirector.
type Upstream struct {
	o Options

	mu         sync.Mutex
	provider   *gooidc.Provider
	verifier   *gooidc.IDTokenVerifier
	oauth      oauth2.Config
	endSession string
}

var (
	_ upstream.Upstream         = (*Upstream)(nil)
	_ upstream.LogoutRedirector = (*Upstream)(nil)
)

// idleConnsPerHost is how many connections to the upstream stay open
// between uses: every sign-in makes a back-channel request to its token
// endpoint, and http.DefaultTransport keeps 2 per host, so with more
// sign-ins at once the others' connections were closed after each use and
// the next sign-in dialled again (at Auth0, a TLS handshake each time).
const idleConnsPerHost = 64

// defaultHTTPClient is the client an upstream gets unless given one:
// DefaultTransport's settings (proxy, timeouts, HTTP/2) with
// idleConnsPerHost.
func defaultHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = idleConnsPerHost
	return &http.Client{Timeout: 15 * time.Second, Transport: t}
}

// New builds the upstream; it does not contact it (see Ready).
func New(o Options) *Upstream {
	if o.HTTPClient == nil {
		o.HTTPClient = defaultHTTPClient()
	}
	if len(o.Scopes) == 0 {
		o.Scopes = []string{gooidc.ScopeOpenID, "profile", "email"}
	}
	o.CopiedClaims = slices.Clone(o.CopiedClaims)
	return &Upstream{o: o}
}

// Issuer is the configured issuer.
func (u *Upstream) Issuer() string { return u.o.Issuer }

// StoreIssuer is the issuer identities from this upstream are stored under.
func (u *Upstream) StoreIssuer() string { return u.identityIssuer(u.o.Issuer) }

// ClientID is usher's client ID at the upstream.
func (u *Upstream) ClientID() string { return u.o.ClientID }

// TokenClaims: the copied claims; no subject claim.
func (u *Upstream) TokenClaims() upstream.TokenClaims {
	return upstream.TokenClaims{Copied: slices.Clone(u.o.CopiedClaims)}
}

func (u *Upstream) ctx(ctx context.Context) context.Context {
	return gooidc.ClientContext(ctx, u.o.HTTPClient)
}

// Ready discovers the upstream once; a failure is retried on the next call.
func (u *Upstream) Ready(ctx context.Context) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.provider != nil {
		return nil
	}
	p, err := gooidc.NewProvider(u.ctx(ctx), u.o.Issuer)
	if err != nil {
		return fmt.Errorf("discovering upstream %s: %w", u.o.Issuer, err)
	}
	var extra struct {
		EndSession string `json:"end_session_endpoint"`
	}
	_ = p.Claims(&extra)
	u.provider = p
	u.verifier = p.Verifier(&gooidc.Config{ClientID: u.o.ClientID})
	u.oauth = oauth2.Config{ClientID: u.o.ClientID, ClientSecret: u.o.ClientSecret,
		Endpoint: p.Endpoint(), Scopes: u.o.Scopes}
	u.endSession = extra.EndSession
	return nil
}

// EndSessionEndpoint is the discovered end_session_endpoint ("" before
// Ready, or when the upstream advertises none).
func (u *Upstream) EndSessionEndpoint() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.endSession
}

// config is the OAuth2 client for one round trip to redirectURL.
func (u *Upstream) config(redirectURL string) oauth2.Config {
	u.mu.Lock()
	defer u.mu.Unlock()
	c := u.oauth
	c.RedirectURL = redirectURL
	return c
}

// LoginURL is AuthCodeURL without extra parameters.
func (u *Upstream) LoginURL(r upstream.LoginRequest) string { return u.AuthCodeURL(r, nil) }

// AuthCodeURL builds the upstream authorize URL: state, nonce and PKCE, the
// OIDC parameters r carries, the app's connection and screen_hint as given
// (an OIDC provider ignores parameters it does not know), then extra (a
// wrapper's own parameters). Empty values are left out.
// Organization, Invitation and Signup are a wrapper's to forward.
func (u *Upstream) AuthCodeURL(r upstream.LoginRequest, extra map[string]string) string {
	opts := []oauth2.AuthCodeOption{gooidc.Nonce(r.Nonce), oauth2.S256ChallengeOption(r.CodeVerifier)}
	set := func(k, v string) {
		if v != "" {
			opts = append(opts, oauth2.SetAuthURLParam(k, v))
		}
	}
	set("connection", r.Connection)
	set("screen_hint", r.ScreenHint)
	set("login_hint", r.LoginHint)
	set("prompt", strings.Join(r.Prompt, " "))
	set("ui_locales", r.UILocales)
	if r.MaxAge != nil {
		set("max_age", strconv.FormatUint(uint64(*r.MaxAge), 10))
	}
	for k, v := range extra {
		set(k, v)
	}
	c := u.config(r.RedirectURL)
	return c.AuthCodeURL(r.State, opts...)
}

// defaultHS256Advice is logged when the upstream signs ID tokens with HS256.
const defaultHS256Advice = "the upstream signs ID tokens with HS256 (the client secret); usher accepts only asymmetric signatures, so every sign-in fails."

// advisedError carries what an administrator should change (upstream.Advice).
type advisedError struct {
	err    error
	advice string
}

func (e *advisedError) Error() string  { return e.err.Error() }
func (e *advisedError) Unwrap() error  { return e.err }
func (e *advisedError) Advice() string { return e.advice }

// signedWithHS256 reads the alg of a compact JWS header.
func signedWithHS256(raw string) bool {
	head, _, _ := strings.Cut(raw, ".")
	b, err := base64.RawURLEncoding.DecodeString(head)
	var h struct {
		Alg string `json:"alg"`
	}
	return err == nil && json.Unmarshal(b, &h) == nil && h.Alg == "HS256"
}

var errNonceMismatch = errors.New("upstream ID token nonce does not match")

// Exchange redeems the upstream code and verifies the ID token: signature,
// iss, aud, exp by go-oidc; nonce here (go-oidc leaves it to the caller).
func (u *Upstream) Exchange(ctx context.Context, cb upstream.Callback) (*upstream.Identity, error) {
	if err := u.Ready(ctx); err != nil {
		return nil, err
	}
	tok, raw, err := u.redeemCode(ctx, cb)
	if err != nil {
		return nil, err
	}
	idt, err := u.verifyIDToken(ctx, raw)
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(cb.Nonce)) != 1 {
		return nil, errNonceMismatch
	}
	id, err := u.identityFromIDToken(idt, raw)
	if err != nil {
		return nil, err
	}
	// Some providers put email and profile only in userinfo when they also
	// issue an access token (OIDC Core §5.4): ask there when the ID token
	// lacks them (unless NoUserinfo). A failed userinfo call does not fail
	// the sign-in: the ID token, verified, is enough (UserinfoErr is logged).
	if id.Email == "" && !u.o.NoUserinfo && u.hasUserinfo() {
		id.UserinfoErr = u.addUserinfo(ctx, tok, id)
	}
	if u.o.Connection != nil {
		id.Connection = u.o.Connection(idt.Subject)
		if id.Connection != "" {
			id.ConnectionSource = upstream.ConnectionFromSubject
		}
	}
	return id, nil
}

// redeemCode exchanges cb's code (with its PKCE verifier) at the upstream's
// token endpoint and returns the tokens with the raw ID token, which the
// response must carry.
func (u *Upstream) redeemCode(ctx context.Context, cb upstream.Callback) (*oauth2.Token, string, error) {
	c := u.config(cb.RedirectURL)
	tok, err := c.Exchange(u.ctx(ctx), cb.Code, oauth2.VerifierOption(cb.CodeVerifier))
	if err != nil {
		return nil, "", fmt.Errorf("exchanging the upstream code: %w", err)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return nil, "", errors.New("upstream returned no ID token")
	}
	return tok, raw, nil
}

// verifyIDToken has go-oidc verify raw (signature, iss, aud, exp); when an
// HS256-signed token fails, the error carries upstream.ErrHS256 and the
// advice (upstream.Advice).
func (u *Upstream) verifyIDToken(ctx context.Context, raw string) (*gooidc.IDToken, error) {
	idt, err := u.verifier.Verify(u.ctx(ctx), raw)
	if err != nil {
		if signedWithHS256(raw) {
			advice := u.o.HS256Advice
			if advice == "" {
				advice = defaultHS256Advice
			}
			err = &advisedError{err: fmt.Errorf("%w: %w", upstream.ErrHS256, err), advice: advice}
		}
		return nil, fmt.Errorf("verifying the upstream ID token: %w", err)
	}
	return idt, nil
}

// identityFromIDToken is the identity the verified ID token idt (raw as
// received) describes, before userinfo and the connection are added.
func (u *Upstream) identityFromIDToken(idt *gooidc.IDToken, raw string) (*upstream.Identity, error) {
	var cl struct {
		Email         string          `json:"email"`
		EmailVerified json.RawMessage `json:"email_verified"`
		Name          string          `json:"name"`
		Picture       string          `json:"picture"`
		AuthTime      int64           `json:"auth_time"`
		AMR           []string        `json:"amr"`
		SID           string          `json:"sid"`
	}
	if err := idt.Claims(&cl); err != nil {
		return nil, fmt.Errorf("reading upstream claims: %w", err)
	}
	var all map[string]any
	if err := idt.Claims(&all); err != nil {
		return nil, fmt.Errorf("reading upstream claims: %w", err)
	}
	id := &upstream.Identity{Claims: copyClaims(all, u.o.CopiedClaims),
		Issuer: idt.Issuer, StoreIssuer: u.identityIssuer(idt.Issuer), Subject: idt.Subject,
		Email: cl.Email, Name: cl.Name, Picture: cl.Picture,
		EmailVerified: parseLooseBool(cl.EmailVerified), AMR: cl.AMR, IDToken: raw, SessionID: cl.SID,
	}
	if cl.AuthTime > 0 {
		id.AuthTime = time.Unix(cl.AuthTime, 0)
	}
	return id, nil
}

// copyClaims are the claims of all named by names (nil when none is there).
func copyClaims(all map[string]any, names []string) map[string]any {
	var copied map[string]any
	for _, n := range names {
		if v, ok := all[n]; ok && v != nil {
			if copied == nil {
				copied = map[string]any{}
			}
			copied[n] = v
		}
	}
	return copied
}

// identityIssuer is the issuer an identity from iss is stored under. Only
// the configured issuer is mapped (ID tokens from any other do not verify);
// without IdentityIssuer it is iss itself.
func (u *Upstream) identityIssuer(iss string) string {
	if u.o.IdentityIssuer != "" && iss == u.o.Issuer {
		return u.o.IdentityIssuer
	}
	return iss
}

// addUserinfo fills id's email and missing profile from userinfo.
func (u *Upstream) addUserinfo(ctx context.Context, tok *oauth2.Token, id *upstream.Identity) error {
	ui, err := u.provider.UserInfo(u.ctx(ctx), oauth2.StaticTokenSource(tok))
	if err != nil {
		return fmt.Errorf("reading upstream userinfo: %w", err)
	}
	if ui.Subject != id.Subject { // OIDC Core §5.3.4
		return errors.New("upstream userinfo is about another subject")
	}
	var extra struct {
		Name    string `json:"name"`
		Picture string `json:"picture"`
	}
	_ = ui.Claims(&extra)
	id.Email, id.EmailVerified = ui.Email, ui.EmailVerified
	if id.Name == "" {
		id.Name = extra.Name
	}
	if id.Picture == "" {
		id.Picture = extra.Picture
	}
	return nil
}

func (u *Upstream) hasUserinfo() bool {
	return u.provider != nil && u.provider.UserInfoEndpoint() != ""
}

// parseLooseBool accepts true and "true": some providers send email_verified as a string.
func parseLooseBool(raw json.RawMessage) bool {
	var b bool
	if json.Unmarshal(raw, &b) == nil {
		return b
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return strings.EqualFold(s, "true")
	}
	return false
}

// LogoutURL is the upstream's RP-initiated logout (OIDC RP-Initiated Logout
// 1.0) returning to r.Done: `state` is echoed back and
// post_logout_redirect_uri matched exactly; the upstream's own session ID
// goes along as logout_hint (§2) so the upstream ends that session. "" when
// the upstream advertises no end_session_endpoint or is unreachable.
func (u *Upstream) LogoutURL(ctx context.Context, r upstream.LogoutRequest) string {
	if err := u.Ready(ctx); err != nil {
		return ""
	}
	ep := u.EndSessionEndpoint()
	if ep == "" {
		return ""
	}
	q := url.Values{}
	q.Set("client_id", u.o.ClientID)
	q.Set("post_logout_redirect_uri", r.Done)
	q.Set("state", r.State)
	if r.SessionID != "" {
		q.Set("logout_hint", r.SessionID)
	}
	return WithQuery(ep, q)
}

// WithQuery appends q to endpoint, which may have a query already.
func WithQuery(endpoint string, q url.Values) string {
	sep := "?"
	if strings.Contains(endpoint, "?") {
		sep = "&"
	}
	return endpoint + sep + q.Encode()
}
