// Package devidp is a local stand-in for an Auth0 tenant, for `usher dev`
// and for tests. Never use it in production.
//
// It is an OpenID Provider built on github.com/zitadel/oidc/v3/pkg/op that
// answers at Auth0's paths (/authorize, /oauth/token, /userinfo,
// /oauth/revoke, /oidc/logout, /v2/logout, /.well-known/jwks.json), signs ID
// tokens with RS256, and renders a small login UI: email/password sign-in and
// sign-up (connection Username-Password-Authentication) and simulated Google
// and Facebook connections.
//
// Login UI paths (all relative to the server root; "state" is the ID of the
// pending auth request, as in Auth0's /u/login?state=…):
//
//	GET  /u/login?state=ID              entry point after /authorize; shows the login form
//	                                    (or completes silently, or redirects to sign-up / social)
//	GET  /u/login?state=ID&screen=login the login form, without any automatic routing
//	POST /u/login                       form: state, email, password
//	GET  /u/signup?state=ID             sign-up form
//	POST /u/signup                      form: state, email, password, name
//	GET  /u/social?state=ID&connection=google-oauth2|facebook
//	POST /u/social                      form: state, connection, email, name, email_unverified (facebook only)
//	GET  /u/email-verification?ticket=  a verification mail's link (verify.go)
//	GET  /u/verification-mails          the verification mails devidp "sent"
//
// Successful posts answer 303 to /authorize/callback?id=ID, which the
// library turns into the redirect (with code) to the client; that callback
// only completes for the browser whose devidp session signed in.
//
// It also answers the Auth0 Management API subset that usher's mirror uses
// (client-credentials token, users-by-email, get/patch user, roles, user
// roles) for Config.ManagementClients: see management.go.
package devidp

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// Client is a confidential OAuth client (client_secret_basic or
// client_secret_post, authorization code flow, PKCE S256 optional).
type Client struct {
	ID, Secret                           string
	RedirectURIs, PostLogoutRedirectURIs []string
	// Scopes: for ManagementClients, the Management API scopes the
	// application is granted (Auth0's APIs tab); none grants every scope
	// devidp serves (management_scopes.go).
	Scopes []string
}

// User is a seeded email/password user of a database connection:
// Username-Password-Authentication unless Connection names another (its
// sub is auth0|… all the same, as in Auth0; only the Management API's
// identities[0].connection tells them apart).
type User struct {
	Email, Password, Name string
	EmailVerified         bool
	Connection            string
}

// Config configures a Server.
type Config struct {
	// Issuer, e.g. "http://127.0.0.1:8081/". It may end with "/" (Auth0's
	// do); discovery and the ID tokens carry it byte for byte. It must name
	// the root of the server: no path other than "/".
	Issuer  string
	Clients []Client
	Users   []User       // seeded email/password users
	Logger  *slog.Logger // may be nil
	// ManagementClients are machine-to-machine applications allowed to get
	// a Management API token (client_credentials, audience
	// Issuer+"api/v2/"); ID, Secret and Scopes are used. See management.go.
	ManagementClients []Client
	// CustomDomain is a second name of this server, e.g.
	// "http://localhost:8081/" next to Issuer "http://127.0.0.1:8081/",
	// standing in for an Auth0 custom domain (login.example.com) in front of
	// the canonical tenant domain (Issuer). See customdomain.go.
	CustomDomain string
	// Organizations are the tenant's Auth0 organizations (actions.go);
	// OrganizationNames turns on "Use Organization Names in Authentication
	// API": `organization` may be a name, and ID tokens carry org_name too.
	Organizations     []Organization
	OrganizationNames bool
	// SigningAlg signs ID tokens: "RS256" (the default, Auth0's) or "ES256",
	// which makes devidp a cheap stand-in where its signing cost would
	// otherwise hide usher's (the login benchmarks).
	SigningAlg string
}

// Misbehavior makes the ID tokens issued from now on bad, so tests can check
// that the broker rejects them. Misbehavior{} is normal behaviour.
type Misbehavior struct {
	BadSignature  bool // signed by a key other than the one published in the JWKS
	WrongNonce    bool // nonce claim altered
	WrongAudience bool // aud claim altered
	WrongIssuer   bool // iss claim altered
	// StaleAuthTime reports every sign-in as this much older than it is
	// (an upstream that ignores max_age).
	StaleAuthTime time.Duration

	// The rest is how a real Auth0 tenant can behave (see auth0ish.go).

	// Deny answers the callback of a sign-in by this email (any case) with
	// an error instead of a code, as an Action calling api.access.deny or a
	// Rule returning UnauthorizedError does.
	Deny *Denial
	// HS256 signs ID tokens with HS256 keyed by the client secret, as Auth0
	// does for an application whose JsonWebToken Signature Algorithm is HS256.
	HS256 bool
	// UserinfoRateLimited answers /userinfo with 429 Too Many Requests, as
	// Auth0 does past its per-user limit.
	UserinfoRateLimited bool
	// IDTokenWithoutEmail leaves email and email_verified out of ID tokens
	// (userinfo still has them): a provider that puts them only in userinfo.
	IDTokenWithoutEmail bool
}

// Denial is the error a denying Action or Rule sends back to the application.
type Denial struct {
	Email       string
	Error       string // "access_denied" when empty; Rules' UnauthorizedError gives "unauthorized"
	Description string // for the person, as written in the Action or Rule
}

// Server is a devidp instance. It is an http.Handler meant to be mounted at
// the root of its own listener. It is safe for concurrent use, and several
// Servers can live in one process.
type Server struct {
	issuer     string
	custom     *url.URL // CustomDomain, nil when unset
	store      *store
	provider   *op.Provider
	mux        *http.ServeMux
	log        *slog.Logger
	cookieName string
	secure     bool // Secure cookies when the issuer is https
	pages      *template.Template
	mgmt       *management   // the Management API subset (management.go)
	verify     verifications // verification mails and their tickets (verify.go)
	// userinfoCalls counts /userinfo requests (UserinfoCalls).
	userinfoCalls atomic.Int64
}

// New builds a Server. It generates a fresh signing key (cfg.SigningAlg:
// RS256 by default, as Auth0 signs, or ES256).
func New(cfg Config) (*Server, error) {
	u, err := parseIssuer(cfg.Issuer)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	st, err := newSeededStore(cfg)
	if err != nil {
		return nil, err
	}

	mgmt, err := newManagement(cfg.ManagementClients)
	if err != nil {
		return nil, err
	}

	custom, err := parseCustomDomain(cfg.CustomDomain, u)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(cfg.Issuer))
	s := &Server{
		issuer: cfg.Issuer,
		custom: custom,
		store:  st,
		mgmt:   mgmt,
		log:    log,
		// Cookies ignore ports: a per-issuer name keeps two devidp servers on
		// 127.0.0.1 from overwriting each other's session in one browser.
		cookieName: "devidp_session_" + hex.EncodeToString(sum[:4]),
		secure:     u.Scheme == "https",
		pages:      template.Must(template.New("pages").Parse(pagesHTML)),
	}
	if s.provider, err = s.newProvider(); err != nil {
		return nil, err
	}
	s.mux = s.routes()
	return s, nil
}

// parseIssuer checks Config.Issuer: an absolute http(s) URL naming the
// server's root.
func parseIssuer(issuer string) (*url.URL, error) {
	u, err := url.Parse(issuer)
	if err != nil {
		return nil, fmt.Errorf("devidp: Issuer: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("devidp: Issuer %q must be an absolute http(s) URL", issuer)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("devidp: Issuer %q must have no path, query or fragment (devidp is served at the root)", issuer)
	}
	return u, nil
}

// newSeededStore builds the store with cfg's clients, signing algorithm,
// organizations and seeded users.
func newSeededStore(cfg Config) (*store, error) {
	alg := jose.SignatureAlgorithm(cmp.Or(cfg.SigningAlg, string(jose.RS256)))
	st, err := newStore(cfg.Clients, alg)
	if err != nil {
		return nil, err
	}
	if err := validateOrganizations(cfg.Organizations); err != nil {
		return nil, err
	}
	st.orgs, st.orgNames = slices.Clone(cfg.Organizations), cfg.OrganizationNames
	for i, usr := range cfg.Users {
		if _, err := st.addPasswordUser(usr); err != nil {
			return nil, fmt.Errorf("devidp: Users[%d]: %w", i, err)
		}
	}
	return st, nil
}

// newProvider builds the OpenID Provider over s.store, at Auth0's paths.
func (s *Server) newProvider() (*op.Provider, error) {
	opConfig := &op.Config{
		CryptoKey:                [32]byte(randomBytes(32)),
		DefaultLogoutRedirectURI: loggedOutPath,
		CodeMethodS256:           true,
		AuthMethodPost:           true,
	}
	provider, err := op.NewProvider(opConfig, s.store, s.issuerFromHost,
		op.WithAllowInsecure(), // plain http on loopback
		op.WithCustomEndpoints(
			op.NewEndpoint("authorize"),
			op.NewEndpoint("oauth/token"),
			op.NewEndpoint("userinfo"),
			op.NewEndpoint("oauth/revoke"),
			op.NewEndpoint("oidc/logout"),
			op.NewEndpoint(".well-known/jwks.json"),
		),
	)
	if err != nil {
		return nil, fmt.Errorf("devidp: %w", err)
	}
	return provider, nil
}

// routes maps the login UI, the Management API and the provider's
// endpoints (some behind devidp's own handling) onto one mux; s.provider
// must be set.
func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+loginPath, s.loginPage)
	mux.HandleFunc("POST "+loginPath, s.loginSubmit)
	mux.HandleFunc("GET "+signupPath, s.signupPage)
	mux.HandleFunc("POST "+signupPath, s.signupSubmit)
	mux.HandleFunc("GET "+socialPath, s.socialPage)
	mux.HandleFunc("POST "+socialPath, s.socialSubmit)
	mux.HandleFunc("GET "+loggedOutPath, s.loggedOutPage)
	mux.HandleFunc("GET "+verifyPath, s.verifyEmail)
	mux.HandleFunc("GET "+verifyMailsPath, s.verificationMailsPage)
	mux.HandleFunc("GET /v2/logout", s.legacyLogout)
	mux.HandleFunc("GET /{$}", s.indexPage)
	mux.Handle("/authorize", s.captureAuthorizeExtras(s.provider))
	mux.Handle("/authorize/callback", s.guardCallback(s.denyByRule(s.provider)))
	mux.Handle("/userinfo", s.limitUserinfo(s.provider))
	mux.Handle("/oidc/logout", s.endBrowserSession(s.provider))
	mux.Handle("/oauth/token", s.routeTokenRequest(s.tamperIDTokens(s.provider)))
	mux.Handle("/api/v2/", s.managementAPI())
	mux.Handle("/", s.provider)
	return mux
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// ServeHTTP serves the OIDC endpoints and the login UI.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mux.ServeHTTP(w, r)
}

// Issuer returns the configured issuer, unchanged.
func (s *Server) Issuer() string { return s.issuer }

// AddUser adds an email/password user (connection
// Username-Password-Authentication) and returns its subject, "auth0|" + 24
// hex characters. An email that already has a password account is an error.
func (s *Server) AddUser(u User) (string, error) {
	sub, err := s.store.addPasswordUser(u)
	if errors.Is(err, errUserExists) {
		return "", fmt.Errorf("devidp: %w: %s", err, normalizeEmail(u.Email))
	}
	return sub, err
}

// AddSocialUser creates (or refreshes, as a sign-in would) a simulated
// Google or Facebook identity without going through the login UI, and
// returns its subject. connection is "google-oauth2" or "facebook".
func (s *Server) AddSocialUser(connection, email, name string, emailVerified bool) (string, error) {
	sub, err := s.store.socialSignIn(connection, email, name, emailVerified)
	if err != nil {
		return "", fmt.Errorf("devidp: %w", err)
	}
	return sub, nil
}

// UserSub looks up the subject of an existing identity: connection is
// "Username-Password-Authentication", "google-oauth2" or "facebook".
func (s *Server) UserSub(connection, email string) (string, bool) {
	return s.store.userSub(connection, email)
}

// Misbehave makes the ID tokens issued from now on bad in the given ways,
// until it is called again; Misbehave(Misbehavior{}) restores normal tokens.
func (s *Server) Misbehave(m Misbehavior) {
	s.store.setMisbehavior(m)
	s.log.Info("devidp: misbehavior set", "bad_signature", m.BadSignature, "wrong_nonce", m.WrongNonce,
		"wrong_audience", m.WrongAudience, "wrong_issuer", m.WrongIssuer, "deny", m.Deny != nil, "hs256", m.HS256,
		"userinfo_rate_limited", m.UserinfoRateLimited, "id_token_without_email", m.IDTokenWithoutEmail)
}

// captureAuthorizeExtras hands Auth0's connection and screen_hint, which the
// library's decoder ignores, to CreateAuthRequest through the context.
func (s *Server) captureAuthorizeExtras(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			http.Error(w, "cannot parse form", http.StatusBadRequest)
			return
		}
		extras := authorizeExtras{
			connection:   r.Form.Get("connection"),
			screenHint:   r.Form.Get("screen_hint"),
			organization: r.Form.Get("organization"),
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), authorizeExtrasKey{}, extras)))
	})
}

// guardCallback lets /authorize/callback?id= complete a request only in the
// browser that signed in: the ID alone must not be enough to obtain a code.
func (s *Server) guardCallback(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ar, err := s.store.authRequest(r.URL.Query().Get("id"))
		if err != nil {
			s.renderMessage(w, http.StatusBadRequest, "Login request expired",
				"This login request is unknown or has expired. Start again from the application.")
			return
		}
		sess, ok := s.currentSession(r)
		if !ar.done || !ok || sess.sub != ar.sub {
			s.renderMessage(w, http.StatusForbidden, "Cannot continue",
				"This sign-in was not completed in this browser. Start again from the application.")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// endBrowserSession ends the devidp session on OIDC logout; the library then
// validates the request and redirects.
func (s *Server) endBrowserSession(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.clearSession(w, r)
		next.ServeHTTP(w, r)
	})
}

// legacyLogout is Auth0's GET /v2/logout?client_id=&returnTo=: it ends the
// devidp session and redirects to returnTo only when that client allows it.
func (s *Server) legacyLogout(w http.ResponseWriter, r *http.Request) {
	s.clearSession(w, r)
	q := r.URL.Query()
	returnTo := q.Get("returnTo")
	if returnTo != "" {
		if c, err := s.store.GetClientByClientID(r.Context(), q.Get("client_id")); err == nil {
			for _, allowed := range c.PostLogoutRedirectURIs() {
				if allowed == returnTo {
					http.Redirect(w, r, returnTo, http.StatusFound)
					return
				}
			}
		}
	}
	s.renderMessage(w, http.StatusOK, "Signed out", "You are signed out of devidp.")
}

// currentSession returns the browser's live devidp session, if any.
func (s *Server) currentSession(r *http.Request) (browserSession, bool) {
	c, err := r.Cookie(s.cookieName)
	if err != nil || c.Value == "" {
		return browserSession{}, false
	}
	return s.store.session(c.Value)
}

// startSession replaces the browser's session with a new one for sess.
func (s *Server) startSession(w http.ResponseWriter, r *http.Request, sess browserSession) {
	if c, err := r.Cookie(s.cookieName); err == nil {
		s.store.deleteSession(c.Value)
	}
	id := s.store.newSession(sess)
	http.SetCookie(w, &http.Cookie{
		Name:     s.cookieName,
		Value:    id,
		Path:     "/",
		MaxAge:   int(sessionLifetime.Seconds()),
		HttpOnly: true,
		Secure:   s.secure,
		SameSite: http.SameSiteLaxMode,
	})
}

func (s *Server) clearSession(w http.ResponseWriter, r *http.Request) {
	c, err := r.Cookie(s.cookieName)
	if err != nil {
		return
	}
	s.store.deleteSession(c.Value)
	http.SetCookie(w, &http.Cookie{
		Name:     s.cookieName,
		Value:    "",
		Path:     "/",
		MaxAge:   -1,
		HttpOnly: true,
		Secure:   s.secure,
		SameSite: http.SameSiteLaxMode,
	})
}

// callbackURL is where a finished login goes so that the library issues the
// code. With no issuer in the context op.AuthCallbackURL yields a relative
// URL, which keeps the browser on the host name it used (and its cookie).
func (s *Server) callbackURL(id string) string {
	return op.AuthCallbackURL(s.provider)(context.Background(), id)
}
