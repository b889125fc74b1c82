package broker

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

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/usher-oidc/usher/sessions"
)

// Upstream describes the identity provider usher delegates sign-in to.
type Upstream struct {
	// Issuer must equal the upstream's discovery `issuer` exactly, trailing
	// slash included (Auth0's is https://TENANT/).
	Issuer       string
	ClientID     string
	ClientSecret string
	Scopes       []string
	// Auth0 turns on Auth0 conventions: connection names from the `sub`
	// prefix, and /v2/logout when the tenant advertises no end_session_endpoint.
	Auth0 bool
	// HTTPClient for discovery, JWKS and the code exchange (nil: a default
	// client with a timeout).
	HTTPClient *http.Client
	// LinkByVerifiedEmail maps identities with the same verified email to one user.
	LinkByVerifiedEmail bool
	// IdentityIssuer is the issuer upstream identities are stored under when
	// it differs from Issuer (see identity_issuer.go); empty = Issuer.
	IdentityIssuer string
	// UserIDClaim names the claim that carries the upstream `sub` of the
	// identity that signed in (Auth0 only; "" = off).
	UserIDClaim string
	// PassThroughClaims are upstream ID token claims (e.g. an Action's
	// https://example.com/plan) copied into usher's ID and access tokens and
	// userinfo. Names are checked by config (grants.ValidateClaimName).
	PassThroughClaims []string
}

// Auth0 Organizations claims (https://auth0.com/docs/manage-users/organizations/using-tokens):
// org_id always when the sign-in went through an organization, org_name with
// "Use Organization Names in Authentication API".
const (
	claimOrgID   = "org_id"
	claimOrgName = "org_name"
)

// copiedClaims are the upstream ID token claims usher's tokens repeat.
func (u Upstream) copiedClaims() []string {
	names := slices.Clone(u.PassThroughClaims)
	if u.Auth0 {
		for _, n := range []string{claimOrgID, claimOrgName} {
			if !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	}
	return names
}

// tokenClaimNames are every claim name usher may add from the upstream.
func (u Upstream) tokenClaimNames() []string {
	names := u.copiedClaims()
	if u.Auth0 && u.UserIDClaim != "" {
		names = append(names, u.UserIDClaim)
	}
	return names
}

// upstreamClient is usher as an OIDC client of the upstream. Discovery is
// lazy and retried, so usher starts even while the upstream is unreachable.
type upstreamClient struct {
	cfg         Upstream
	redirectURL string

	mu         sync.Mutex
	provider   *oidc.Provider
	verifier   *oidc.IDTokenVerifier
	oauth      oauth2.Config
	endSession string
	// hs256Once: the HS256 advice is logged once per process.
	hs256Once sync.Once
}

// errHS256: the upstream signs ID tokens with its client secret (HS256).
var errHS256 = errors.New("upstream ID token is signed with HS256")

// hs256Advice names the Auth0 setting to change
// (https://auth0.com/docs/get-started/applications/change-application-signing-algorithms).
const hs256Advice = "the upstream signs ID tokens with HS256 (the client secret); usher accepts only asymmetric signatures, so every sign-in fails. " +
	"In Auth0: Applications → <app> → Settings → Advanced → OAuth → JSON Web Token Signature Algorithm: RS256"

// signedWithHS256 reads the alg of a compact JWS header.
func signedWithHS256(raw string) bool {
	head, _, _ := strings.Cut(raw, ".")
	b, err := base64.RawURLEncoding.DecodeString(head)
	var h struct {
		Alg string `json:"alg"`
	}
	return err == nil && json.Unmarshal(b, &h) == nil && h.Alg == "HS256"
}

func (u *upstreamClient) ctx(ctx context.Context) context.Context {
	return oidc.ClientContext(ctx, u.cfg.HTTPClient)
}

func (u *upstreamClient) ensure(ctx context.Context) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.provider != nil {
		return nil
	}
	p, err := oidc.NewProvider(u.ctx(ctx), u.cfg.Issuer)
	if err != nil {
		return fmt.Errorf("discovering upstream %s: %w", u.cfg.Issuer, err)
	}
	var extra struct {
		EndSession string `json:"end_session_endpoint"`
	}
	_ = p.Claims(&extra)
	scopes := u.cfg.Scopes
	if len(scopes) == 0 {
		scopes = []string{oidc.ScopeOpenID, "profile", "email"}
	}
	u.provider = p
	u.verifier = p.Verifier(&oidc.Config{ClientID: u.cfg.ClientID})
	u.oauth = oauth2.Config{ClientID: u.cfg.ClientID, ClientSecret: u.cfg.ClientSecret,
		Endpoint: p.Endpoint(), RedirectURL: u.redirectURL, Scopes: scopes}
	u.endSession = extra.EndSession
	if u.endSession == "" && u.cfg.Auth0 {
		u.endSession = strings.TrimSuffix(u.cfg.Issuer, "/") + "/v2/logout"
	}
	return nil
}

// pendingLogin is what the browser session remembers about one upstream
// round trip, keyed by its state: state is bound to this browser.
type pendingLogin struct {
	AuthRequestID string    `json:"ar,omitempty"`
	Purpose       string    `json:"p,omitempty"` // "" (an SPA's authorization) or "admin"
	Nonce         string    `json:"n"`
	Verifier      string    `json:"v"`
	Expires       time.Time `json:"e"`
}

const pendingPrefix = "up:"

// authURL builds the upstream authorize URL for ar with fresh state, nonce and
// PKCE, and the pass-through parameters.
func (u *upstreamClient) authURL(ar *sessions.AuthRequest, state, nonce, verifier string, extra map[string]string) string {
	opts := []oauth2.AuthCodeOption{oidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier)}
	set := func(k, v string) {
		if v != "" {
			opts = append(opts, oauth2.SetAuthURLParam(k, v))
		}
	}
	set("connection", ar.Connection)
	set("screen_hint", ar.ScreenHint)
	set("login_hint", ar.LoginHint)
	set("prompt", strings.Join(ar.Prompt, " "))
	set("ui_locales", ar.UILocales)
	set("organization", ar.Organization)
	set("invitation", ar.UpstreamInvitation)
	if ar.MaxAge != nil {
		set("max_age", strconv.FormatUint(uint64(*ar.MaxAge), 10))
	}
	for k, v := range extra {
		set(k, v)
	}
	return u.oauth.AuthCodeURL(state, opts...)
}

// upstreamIdentity is what a verified upstream ID token says.
type upstreamIdentity struct {
	Issuer        string
	Subject       string
	Email         string
	EmailVerified bool
	Name          string
	Picture       string
	Connection    string
	AuthTime      time.Time
	AMR           []string
	IDToken       string
	// SessionID is the upstream's session (its ID token's sid), if it names one.
	SessionID string
	// Claims are the upstream ID token's claims named by copiedClaims.
	Claims map[string]any
	// UserinfoErr: userinfo was asked and failed; the ID token's claims stand.
	UserinfoErr error
}

var errNonceMismatch = errors.New("upstream ID token nonce does not match")

// exchange redeems the upstream code and verifies the ID token: signature,
// iss, aud, exp by go-oidc; nonce here (go-oidc leaves it to the caller).
func (u *upstreamClient) exchange(ctx context.Context, code string, p pendingLogin) (*upstreamIdentity, error) {
	tok, err := u.oauth.Exchange(u.ctx(ctx), code, oauth2.VerifierOption(p.Verifier))
	if err != nil {
		return nil, fmt.Errorf("exchanging the upstream code: %w", err)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return nil, errors.New("upstream returned no ID token")
	}
	idt, err := u.verifier.Verify(u.ctx(ctx), raw)
	if err != nil {
		if signedWithHS256(raw) {
			err = fmt.Errorf("%w: %w", errHS256, err)
		}
		return nil, fmt.Errorf("verifying the upstream ID token: %w", err)
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(p.Nonce)) != 1 {
		return nil, errNonceMismatch
	}
	var c struct {
		Email         string          `json:"email"`
		EmailVerified json.RawMessage `json:"email_verified"`
		Name          string          `json:"name"`
		Picture       string          `json:"picture"`
		AuthTime      int64           `json:"auth_time"`
		AMR           []string        `json:"amr"`
		SID           string          `json:"sid"`
	}
	if err := idt.Claims(&c); err != nil {
		return nil, fmt.Errorf("reading upstream claims: %w", err)
	}
	var all map[string]any
	if err := idt.Claims(&all); err != nil {
		return nil, fmt.Errorf("reading upstream claims: %w", err)
	}
	var copied map[string]any
	for _, n := range u.cfg.copiedClaims() {
		if v, ok := all[n]; ok && v != nil {
			if copied == nil {
				copied = map[string]any{}
			}
			copied[n] = v
		}
	}
	id := &upstreamIdentity{Claims: copied,
		Issuer: idt.Issuer, Subject: idt.Subject, Email: c.Email, Name: c.Name, Picture: c.Picture,
		EmailVerified: parseLooseBool(c.EmailVerified), AMR: c.AMR, IDToken: raw, SessionID: c.SID,
	}
	if c.AuthTime > 0 {
		id.AuthTime = time.Unix(c.AuthTime, 0)
	}
	// Some providers put email and profile only in userinfo when they also
	// issue an access token (OIDC Core §5.4): ask there when the ID token
	// lacks them. Not Auth0: it puts the scopes' claims in the ID token and
	// rate-limits /userinfo per user, so asking adds nothing and can fail.
	// A failed userinfo call does not fail the sign-in: the ID token, verified,
	// is enough (UserinfoErr is logged).
	if id.Email == "" && !u.cfg.Auth0 && u.hasUserinfo() {
		id.UserinfoErr = u.addUserinfo(ctx, tok, id)
	}
	if u.cfg.Auth0 || strings.Contains(idt.Subject, "|") {
		id.Connection = auth0Connection(idt.Subject)
	}
	return id, nil
}

// addUserinfo fills id's email and missing profile from userinfo.
func (u *upstreamClient) addUserinfo(ctx context.Context, tok *oauth2.Token, id *upstreamIdentity) error {
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

func (u *upstreamClient) hasUserinfo() bool {
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

// auth0Connection maps Auth0's `sub` prefix to its connection name.
func auth0Connection(sub string) string {
	prefix, _, ok := strings.Cut(sub, "|")
	if !ok {
		return ""
	}
	if prefix == "auth0" {
		return "Username-Password-Authentication"
	}
	return prefix
}

// logoutURL is the upstream's end-session URL that returns to usher's
// /logout/done carrying state. OIDC RP-initiated logout echoes `state` back
// and matches post_logout_redirect_uri exactly; Auth0's /v2/logout has no
// state, so it goes in returnTo's query (Auth0 ignores the query when
// matching Allowed Logout URLs).
// sid, the upstream's own session ID, goes along as logout_hint (OIDC
// RP-Initiated Logout §2) so the upstream ends that session.
func (u *upstreamClient) logoutURL(ctx context.Context, done, state, sid string) string {
	if err := u.ensure(ctx); err != nil || u.endSession == "" {
		return ""
	}
	q := url.Values{}
	q.Set("client_id", u.cfg.ClientID)
	if strings.HasSuffix(u.endSession, "/v2/logout") {
		q.Set("returnTo", done+"?state="+url.QueryEscape(state))
	} else {
		q.Set("post_logout_redirect_uri", done)
		q.Set("state", state)
		if sid != "" {
			q.Set("logout_hint", sid)
		}
	}
	sep := "?"
	if strings.Contains(u.endSession, "?") {
		sep = "&"
	}
	return u.endSession + sep + q.Encode()
}
