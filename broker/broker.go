// Package broker is usher's OpenID Provider: it serves the SPA with the
// zitadel/oidc op library, delegates every sign-in to the upstream (Auth0 or
// any OIDC issuer), and adds the roles and claims a user holds to the tokens.
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	gsessions "github.com/gorilla/sessions"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/cors"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/sessions"
)

// TokenLifetimes of everything the broker issues.
type TokenLifetimes struct {
	Access            time.Duration
	IDToken           time.Duration
	RefreshIdle       time.Duration
	RefreshAbsolute   time.Duration
	AuthRequest       time.Duration
	Code              time.Duration
	ClientCredentials time.Duration
}

// Options configure a Broker. main.go fills them from config.
type Options struct {
	// Issuer is usher's own issuer URL, exactly as tokens carry it.
	Issuer   string
	Clients  []Client
	Upstream Upstream
	Sessions sessions.Store
	Grants   grants.Store

	// SigningAlgorithm: ES256 (default), RS256 or EdDSA. SigningKeyPEMs, when
	// given, are used instead of keys generated and kept in the store; the
	// first one signs.
	SigningAlgorithm string
	SigningKeyPEMs   [][]byte
	// KeyEncryptionKey (32 bytes), when set, encrypts generated signing keys at rest.
	KeyEncryptionKey []byte
	// DemoURL, in usher dev, is the demo app the issuer root page links to.
	DemoURL string
	// KeyRotationPeriod > 0 rotates generated keys on that schedule.
	KeyRotationPeriod time.Duration
	Tokens            TokenLifetimes

	// SessionSecret keys the browser-session cookie (≥ 32 bytes).
	SessionSecret   []byte
	SessionIdle     time.Duration
	SessionAbsolute time.Duration
	CookieName      string

	// ClaimsNamespace prefixes invitation claims in tokens ("" = none).
	ClaimsNamespace string
	// DefaultRoles are given to every new user.
	DefaultRoles []string

	// Invitations.
	InvitationDefaultTTL time.Duration
	InvitationMaxTTL     time.Duration
	// InvitationEmailMatch is the default policy: any, exact or domain.
	InvitationEmailMatch string
	// RoleCatalog, when not empty, limits the roles an invitation may grant.
	RoleCatalog []string
	// PrivilegedRoles may be put on an invitation only by a client holding
	// the scope invitations:admin, or by an admin on the admin page
	// (default: AdminRole).
	PrivilegedRoles []string
	// AppName names the app on the accept page when the client has no name.
	AppName string
	// InvitationBaseURL prefixes /invite/<token> links (default: the issuer).
	InvitationBaseURL string
	// Mailer queues invitation mails; nil = mail not configured.
	Mailer InvitationMailer
	// AdminRole is the role that opens the admin page (default usher:admin).
	AdminRole string
	// AdminEmails get AdminRole when they sign in with that email verified.
	AdminEmails []string
	// Audit, when set, records who did what (admin sign-ins, invitations, grants).
	Audit func(ctx context.Context, e AuditEvent)
	// Metrics registers usher's Prometheus series (nil: not registered).
	Metrics prometheus.Registerer
	// RateLimits bound abuse of invitation links and the admin API.
	RateLimits RateLimits
	// ClientIP names the reverse proxies whose forwarding header is believed.
	ClientIP ClientIP
	// RedemptionHook, when set, approves each redemption before it commits.
	RedemptionHook *RedemptionHook
	// Mirror, when set, mirrors grants to the Auth0 tenant and answers
	// "does this email have an account" for invitees.
	Mirror AccountMirror
	// Webhooks, when set, receives invitation and user events.
	Webhooks WebhookSender

	Now    func() time.Time
	Logger *slog.Logger
}

// AccountMirror is the optional Auth0 Management API mirror (grants.Mirror):
// it tells whether an email has an upstream account, and copies grants there.
type AccountMirror interface {
	HasAccount(ctx context.Context, email string) (bool, error)
	EnqueueRedemption(ctx context.Context, upstreamUserID string, inv *grants.Invitation) error
	EnqueueRevocation(ctx context.Context, upstreamUserID, role, claimKey string) error
}

// WebhookSender emits events to the webhook outbox (grants.Webhooks).
type WebhookSender interface {
	WebhookAdmin
	Emit(ctx context.Context, e grants.WebhookEvent) error
}

// InvitationMailer sends invitation links (grants.Mailer in production).
type InvitationMailer interface {
	EnqueueInvitation(ctx context.Context, inv *grants.Invitation, link string) error
}

// Broker is the OpenID Provider plus the upstream client.
type Broker struct {
	invitations *grants.Invitations
	audit       func(ctx context.Context, e AuditEvent)
	metrics     *metrics
	limits      *limiters
	opts        Options
	clients     map[string]*Client
	sessions    sessions.Store
	grants      grants.Store
	keys        *keySet
	storage     opStorage
	provider    *op.Provider
	opServer    http.Handler
	upstream    *upstreamClient
	browser     *browserStore
	cookie      string
	log         *slog.Logger
	now         func() time.Time
	insecure    bool
}

// New builds the broker. It loads (or, the first time, generates and stores)
// the signing keys; it does not contact the upstream until the first sign-in.
func New(ctx context.Context, o Options) (*Broker, error) {
	if o.Sessions == nil || o.Grants == nil {
		return nil, errors.New("broker: Sessions and Grants stores are required")
	}
	iss, err := url.Parse(o.Issuer)
	if err != nil || iss.Host == "" {
		return nil, fmt.Errorf("broker: issuer %q is not an absolute URL", o.Issuer)
	}
	insecure := iss.Scheme == "http"
	if insecure && !isLoopback(iss.Hostname()) {
		return nil, fmt.Errorf("broker: issuer %q: plain http is only allowed on loopback", o.Issuer)
	}
	if len(o.SessionSecret) < 32 {
		return nil, errors.New("broker: session secret must be at least 32 bytes")
	}
	applyDefaults(&o)
	b := &Broker{
		opts: o, clients: map[string]*Client{}, sessions: o.Sessions, grants: o.Grants,
		log: o.Logger, now: o.Now, insecure: insecure, audit: o.Audit,
		metrics: newMetrics(o.Metrics), limits: newLimiters(o.RateLimits),
	}
	b.storage = opStorage{b}
	if b.audit == nil {
		b.audit = b.recordAudit
	}
	b.invitations = grants.NewInvitations(grants.InvitationsOptions{
		Store: o.Grants, DefaultTTL: o.InvitationDefaultTTL, MaxTTL: o.InvitationMaxTTL,
		DefaultEmailMatch: o.InvitationEmailMatch, RoleCatalog: o.RoleCatalog, PrivilegedRoles: o.PrivilegedRoles,
		ClaimsNamespace: o.ClaimsNamespace, Now: o.Now,
		KnownClient: func(id string) bool { _, ok := b.clients[id]; return ok },
	})
	for i := range o.Clients {
		c := &o.Clients[i]
		if _, dup := b.clients[c.ID]; dup {
			return nil, fmt.Errorf("broker: client %q registered twice", c.ID)
		}
		b.clients[c.ID] = c
	}
	b.keys, err = newKeySet(ctx, o.Sessions, o.SigningAlgorithm, clientIDTokenAlgs(o.Clients), o.SigningKeyPEMs, o.KeyEncryptionKey, o.Now)
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	// __Host- pins the cookie to this exact host and path over https
	// (RFC 6265bis); browsers refuse the prefix on plain http.
	b.cookie = o.CookieName
	if !insecure && iss.Path == "" || !insecure && iss.Path == "/" {
		b.cookie = "__Host-" + o.CookieName
	}
	b.browser = newBrowserStore(o.Sessions, o.SessionSecret, !insecure, o.SessionIdle, o.SessionAbsolute, o.Now)
	b.upstream = &upstreamClient{cfg: o.Upstream, redirectURL: b.url("/callback")}
	if b.upstream.cfg.HTTPClient == nil {
		b.upstream.cfg.HTTPClient = &http.Client{Timeout: 15 * time.Second}
	}
	if err := b.buildProvider(); err != nil {
		return nil, err
	}
	return b, nil
}

func applyDefaults(o *Options) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.SigningAlgorithm == "" {
		o.SigningAlgorithm = "ES256"
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	t := &o.Tokens
	def(&t.Access, 10*time.Minute)
	def(&t.IDToken, time.Hour)
	def(&t.RefreshIdle, 30*24*time.Hour)
	def(&t.RefreshAbsolute, 90*24*time.Hour)
	def(&t.AuthRequest, 10*time.Minute)
	def(&t.Code, time.Minute)
	def(&t.ClientCredentials, time.Hour)
	def(&o.SessionIdle, 30*time.Minute)
	def(&o.SessionAbsolute, 24*time.Hour)
	if o.CookieName == "" {
		o.CookieName = "usher_session"
	}
	if o.InvitationBaseURL == "" {
		o.InvitationBaseURL = o.Issuer
	}
	if o.AdminRole == "" {
		o.AdminRole = DefaultAdminRole
	}
	if o.PrivilegedRoles == nil {
		o.PrivilegedRoles = []string{o.AdminRole}
	}
}

// Paths usher answers at. They are Auth0's, so an app written for Auth0's SPA
// SDK can point its `domain` at usher unchanged.
const (
	pathAuthorize  = "/authorize"
	pathToken      = "/oauth/token"
	pathUserinfo   = "/userinfo"
	pathIntrospect = "/oauth/introspect"
	pathRevoke     = "/oauth/revoke"
	pathEndSession = "/oidc/logout"
	pathJWKS       = "/.well-known/jwks.json"
)

func (b *Broker) buildProvider() error {
	var key [32]byte
	copy(key[:], deriveKey(b.opts.SessionSecret, "usher op crypto"))
	cfg := &op.Config{
		CryptoKey:             key,
		CodeMethodS256:        true,
		AuthMethodPost:        true,
		GrantTypeRefreshToken: true,
		SupportedScopes:       []string{oidc.ScopeOpenID, oidc.ScopeProfile, oidc.ScopeEmail, oidc.ScopeOfflineAccess},
		SupportedClaims: []string{"sub", "aud", "exp", "iat", "iss", "auth_time", "nonce", "azp", "at_hash",
			"email", "email_verified", "name", "picture", "updated_at", "roles"},
	}
	algs := b.keys.algorithms()
	opts := []op.Option{
		op.WithAccessTokenVerifierOpts(op.WithSupportedAccessTokenSigningAlgorithms(algs...)),
		op.WithIDTokenHintVerifierOpts(op.WithSupportedIDTokenHintSigningAlgorithms(algs...)),
	}
	if b.insecure {
		opts = append(opts, op.WithAllowInsecure())
	}
	p, err := op.NewProvider(cfg, b.storage, op.StaticIssuer(b.opts.Issuer), opts...)
	if err != nil {
		return fmt.Errorf("broker: building the OpenID Provider: %w", err)
	}
	b.provider = p
	endpoints := op.Endpoints{
		Authorization: op.NewEndpoint(pathAuthorize),
		Token:         op.NewEndpoint(pathToken),
		Introspection: op.NewEndpoint(pathIntrospect),
		Userinfo:      op.NewEndpoint(pathUserinfo),
		Revocation:    op.NewEndpoint(pathRevoke),
		EndSession:    op.NewEndpoint(pathEndSession),
		JwksURI:       op.NewEndpoint(pathJWKS),
	}
	srv := &server{LegacyServer: op.NewLegacyServer(p, endpoints), b: b}
	b.opServer = op.RegisterLegacyServer(srv, http.NotFound, // the library's /authorize/callback?id= would let anyone holding an ID finish a login: disabled
		op.WithServerCORSOptions(&cors.Options{
			AllowOriginFunc:  b.corsAllowed,
			AllowedMethods:   []string{http.MethodGet, http.MethodPost},
			AllowedHeaders:   []string{"Authorization", "Content-Type", "Auth0-Client"},
			AllowCredentials: false,
		}))
	return nil
}

// corsAllowed: only origins of registered clients may call the token,
// userinfo and discovery endpoints from a browser.
func (b *Broker) corsAllowed(origin string) bool {
	origin = strings.ToLower(origin)
	for _, c := range b.clients {
		for _, o := range c.origins() {
			if strings.EqualFold(o, origin) {
				return true
			}
		}
	}
	return false
}

func (b *Broker) opClient(c *Client) *opClient {
	return &opClient{c: c, idTTL: b.opts.Tokens.IDToken, loginURL: func(id string) string {
		return b.url("/login?id=" + url.QueryEscape(id))
	}}
}

// url joins a path to the issuer without a double slash.
func (b *Broker) url(path string) string {
	return strings.TrimSuffix(b.opts.Issuer, "/") + path
}

// Issuer returns the issuer URL.
func (b *Broker) Issuer() string { return b.opts.Issuer }

// Handler serves every usher endpoint.
func (b *Broker) Handler() http.Handler {
	mux := http.NewServeMux()
	withIssuer := op.NewIssuerInterceptor(b.provider.IssuerFromRequest).Handler
	mux.Handle("GET /callback", pageHeaders(b.issRedirects(withIssuer(http.HandlerFunc(b.handleCallback)))))
	mux.Handle("GET /logout/done", pageHeaders(http.HandlerFunc(b.handleLogoutDone)))
	mux.Handle("GET /v2/logout", pageHeaders(http.HandlerFunc(b.handleAuth0Logout)))
	mux.Handle(pathAuthorize, pageHeaders(b.issRedirects(http.HandlerFunc(b.handleAuthorize))))
	mux.Handle(pathEndSession, pageHeaders(http.HandlerFunc(b.handleEndSession)))
	mux.Handle("GET /invite/{token}", pageHeaders(b.limitInvites(http.HandlerFunc(b.handleInvite))))
	mux.Handle("POST "+pathAccept, pageHeaders(b.issRedirects(http.HandlerFunc(b.handleAccept))))
	mux.Handle("GET /login/continue", pageHeaders(b.issRedirects(http.HandlerFunc(b.handleContinue))))
	mux.Handle("GET /login", pageHeaders(b.issRedirects(http.HandlerFunc(b.handleLogin))))
	mux.Handle("GET /admin/login", pageHeaders(http.HandlerFunc(b.handleAdminLogin)))
	b.apiRoutes(mux)
	b.adminRoutes(mux)
	mux.Handle(pathToken, b.instrumentToken(b.basicClientAuth(b.opServer)))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", b.handleReady)
	mux.Handle("GET /{$}", pageHeaders(http.HandlerFunc(b.handleRoot)))
	mux.Handle("/", b.basicClientAuth(b.opServer))
	return b.edge(mux)
}

func (b *Broker) handleReady(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := b.sessions.Ping(ctx); err != nil {
		http.Error(w, "store unreachable", http.StatusServiceUnavailable)
		return
	}
	if err := b.keys.ready(); err != nil {
		http.Error(w, "no signing key", http.StatusServiceUnavailable)
		return
	}
	w.Write([]byte("ready\n"))
}

// handleAuthorize reads the parameters the op decoder drops (Auth0's
// connection and screen_hint) into the context CreateAuthRequest sees.
func (b *Broker) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "malformed request", http.StatusBadRequest)
		return
	}
	if !b.authorizeWithinLimits(w, r) {
		return
	}
	// An unknown client has no redirect URI to trust: answer on a page.
	if _, ok := b.clients[r.Form.Get("client_id")]; !ok {
		renderPage(w, http.StatusBadRequest, page{Title: "Unknown application",
			Message: "This sign-in link names an application usher does not know (client_id). Check the application's configuration."})
		return
	}
	// {issuer}/authorize?client_id=…&invitation=… (or token=inv_…) alone is an invitation link.
	if tok := linkToken(r.Form); tok != "" && r.Form.Get("response_type") == "" && r.Form.Get("redirect_uri") == "" {
		b.limitInvites(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b.serveInvitation(w, r, tok, r.Form.Get("client_id"))
		})).ServeHTTP(w, r)
		return
	}
	ex := authorizeExtras{
		connection: clip(r.Form.Get("connection"), 100),
		screenHint: clip(r.Form.Get("screen_hint"), 20),
		audience:   r.Form.Get("audience"),
	}
	b.authorizeInvitation(r, &ex)
	if sess, err := b.browser.Get(r, b.cookie); err == nil {
		_, ex.signedIn = sessionAccount(sess)
	}
	ctx := context.WithValue(r.Context(), ctxAuthorizeExtras, ex)
	b.opServer.ServeHTTP(w, r.WithContext(ctx))
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

type httpPair struct {
	w http.ResponseWriter
	r *http.Request
}

func (b *Broker) handleEndSession(w http.ResponseWriter, r *http.Request) {
	ctx := context.WithValue(r.Context(), ctxHTTP, httpPair{w, r})
	b.opServer.ServeHTTP(w, r.WithContext(ctx))
}

// handleAuth0Logout is Auth0's /v2/logout (client_id, returnTo), which
// Auth0's SPA SDK calls, mapped onto RP-initiated logout.
func (b *Broker) handleAuth0Logout(w http.ResponseWriter, r *http.Request) {
	q := url.Values{}
	q.Set("client_id", r.URL.Query().Get("client_id"))
	if rt := r.URL.Query().Get("returnTo"); rt != "" {
		q.Set("post_logout_redirect_uri", rt)
	}
	r2 := r.Clone(r.Context())
	r2.URL.Path = pathEndSession
	r2.URL.RawQuery = q.Encode()
	r2.RequestURI = r2.URL.RequestURI()
	b.handleEndSession(w, r2)
}

// endSession clears usher's browser session and sends the browser through the
// upstream's logout (when it has one) before returning to the client.
func (b *Broker) endSession(ctx context.Context, req *op.EndSessionRequest) (string, error) {
	final := req.RedirectURI
	upstreamSID := ""
	if hp, ok := ctx.Value(ctxHTTP).(httpPair); ok {
		if sess, err := b.browser.Get(hp.r, b.cookie); err == nil {
			if acct, ok := sessionAccount(sess); ok {
				upstreamSID = acct.UpstreamSID
			}
			if err := b.revokeSessionTokens(ctx, sess); err != nil {
				return "", err
			}
			sess.Options.MaxAge = -1
			if err := sess.Save(hp.r, hp.w); err != nil {
				b.log.ErrorContext(ctx, "ending browser session", "err", err)
			}
		}
	}
	token, err := b.browser.codec.Encode("logout", final)
	if err != nil {
		return "", oidc.ErrServerError().WithParent(err)
	}
	if up := b.upstream.logoutURL(ctx, b.url("/logout/done"), token, upstreamSID); up != "" {
		return up, nil
	}
	return b.url("/logout/done?state=" + url.QueryEscape(token)), nil
}

func (b *Broker) handleLogoutDone(w http.ResponseWriter, r *http.Request) {
	var final string
	if err := b.browser.codec.Decode("logout", r.URL.Query().Get("state"), &final); err == nil && final != "" {
		// final was validated against the client's registered post-logout URIs.
		http.Redirect(w, r, final, http.StatusFound)
		return
	}
	renderPage(w, http.StatusOK, page{Title: "Signed out", Message: "You are signed out."})
}

// handleLogin is the login step of the authorization request `id`: answered
// from usher's own session when it can (session.go), else the upstream leg.
func (b *Broker) handleLogin(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	ar, err := b.sessions.GetAuthRequest(ctx, r.URL.Query().Get("id"))
	if err != nil {
		if errors.Is(err, sessions.ErrNotFound) {
			renderPage(w, http.StatusBadRequest, page{Title: "Sign-in expired",
				Message: "This sign-in took too long or was already completed. Go back to the application and sign in again."})
			return
		}
		b.unavailable(w, r, "loading the authorization request", err)
		return
	}
	if ar.Done {
		renderPage(w, http.StatusBadRequest, page{Title: "Sign-in already completed",
			Message: "Go back to the application and sign in again."})
		return
	}
	sess, err := b.browser.Get(r, b.cookie)
	if err != nil {
		b.unavailable(w, r, "loading the browser session", err)
		return
	}
	if b.answerFromSession(w, r, sess, ar) {
		return
	}
	if err := b.upstream.ensure(ctx); err != nil {
		b.log.ErrorContext(ctx, "upstream discovery failed", "err", err)
		b.authError(w, r, ar, oidc.ErrServerError().WithDescription("the sign-in service is unreachable; try again shortly"))
		return
	}
	prunePending(sess.Values, b.now())
	state, nonce, verifier := randomToken(24), randomToken(24), randomToken(32)
	p := pendingLogin{AuthRequestID: ar.ID, Nonce: nonce, Verifier: verifier, Expires: ar.ExpiresAt}
	enc, _ := jsonString(p)
	sess.Values[pendingPrefix+state] = enc
	if err := sess.Save(r, w); err != nil {
		b.unavailable(w, r, "saving the browser session", err)
		return
	}
	extra := b.invitationHints(ctx, ar)
	http.Redirect(w, r, b.upstream.authURL(ar, state, nonce, verifier, extra), http.StatusFound)
}

// handleCallback is the upstream's redirect back to usher.
func (b *Broker) handleCallback(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q := r.URL.Query()
	sess, err := b.browser.Get(r, b.cookie)
	if err != nil {
		b.unavailable(w, r, "loading the browser session", err)
		return
	}
	key := pendingPrefix + q.Get("state")
	raw, _ := sess.Values[key].(string)
	var p pendingLogin
	if q.Get("state") == "" || raw == "" || jsonParse(raw, &p) != nil || b.now().After(p.Expires) {
		// State not issued to this browser: a forged, replayed or foreign response.
		b.log.WarnContext(ctx, "upstream callback with a state this browser did not start")
		renderPage(w, http.StatusBadRequest, page{Title: "Sign-in could not be completed",
			Message: "This sign-in response does not belong to this browser session, or it expired. Go back to the application and sign in again."})
		return
	}
	delete(sess.Values, key) // single use
	if err := sess.Save(r, w); err != nil {
		b.unavailable(w, r, "saving the browser session", err)
		return
	}
	if p.Purpose == purposeAdmin {
		b.finishAdminLogin(w, r, sess, p)
		return
	}
	ar, err := b.sessions.GetAuthRequest(ctx, p.AuthRequestID)
	if err != nil {
		renderPage(w, http.StatusBadRequest, page{Title: "Sign-in expired",
			Message: "This sign-in took too long. Go back to the application and sign in again."})
		return
	}
	fail := func(e *oidc.Error) {
		_ = b.sessions.DeleteAuthRequest(ctx, ar.ID)
		op.AuthRequestError(w, r, authRequest{ar}, e, b.provider)
	}
	id, oerr := b.verifyUpstream(ctx, q, p)
	if oerr == nil {
		oerr = b.checkMaxAge(ar, id)
	}
	if oerr != nil {
		b.metrics.logins.WithLabelValues("rejected", "").Inc()
		fail(oerr)
		return
	}
	u, created, err := b.resolveUser(ctx, id)
	if err != nil {
		fail(oidc.ErrServerError().WithDescription("temporarily unavailable: resolving the user"))
		return
	}
	b.log.InfoContext(ctx, "sign-in", "user_id", u.ID, "new_user", created, "connection", id.Connection, "client_id", ar.ClientID)
	outcome := "sign_in"
	if created {
		outcome = "sign_up"
	}
	b.metrics.logins.WithLabelValues(outcome, connectionLabel(id.Connection)).Inc()
	ar.Subject = u.ID
	ar.AuthTime = id.AuthTime
	if ar.AuthTime.IsZero() {
		ar.AuthTime = b.now()
	}
	ar.AMR = id.AMR
	// New session ID after sign-in (session fixation), then remember the account.
	b.browser.renew(ctx, sess)
	acct := accountOf(u.ID, created, id, ar.AuthTime)
	rememberAccount(sess, acct)
	b.bindSignIn(sess, ar)
	if ar.InvitationHash != "" {
		b.clearInvitationCookie(w) // the auth request carries it from here on
		b.offerInvitation(w, r, sess, ar, acct)
		return
	}
	b.completeAuthorization(w, r, sess, ar)
}

// completeAuthorization marks the auth request done and answers the client.
func (b *Broker) completeAuthorization(w http.ResponseWriter, r *http.Request, sess *gsessions.Session, ar *sessions.AuthRequest) {
	ar.Done = true
	if err := b.sessions.UpdateAuthRequest(r.Context(), ar); err != nil {
		b.unavailable(w, r, "completing the authorization request", err)
		return
	}
	if err := sess.Save(r, w); err != nil {
		b.unavailable(w, r, "saving the browser session", err)
		return
	}
	b.authResponse(w, r.WithContext(op.ContextWithIssuer(r.Context(), b.opts.Issuer)), ar)
}

// verifyUpstream turns the upstream's answer into a verified identity, or the
// OIDC error the client should get.
func (b *Broker) verifyUpstream(ctx context.Context, q url.Values, p pendingLogin) (*upstreamIdentity, *oidc.Error) {
	if upErr := q.Get("error"); upErr != "" {
		// e.g. login_required after prompt=none, or an Auth0 Action or Rule
		// denying access: the SPA gets the same OIDC error.
		oerr := upstreamError(upErr, q.Get("error_description"))
		b.log.InfoContext(ctx, "upstream answered with an error", "upstream_error", clip(upErr, 64),
			"upstream_error_description", clip(q.Get("error_description"), 300), "error", oerr.ErrorType)
		return nil, oerr
	}
	if err := b.upstream.ensure(ctx); err != nil {
		b.log.ErrorContext(ctx, "upstream discovery failed", "err", err)
		b.metrics.upstreamErrors.WithLabelValues("discovery").Inc()
		return nil, oidc.ErrServerError().WithDescription("the sign-in service is unreachable")
	}
	// RFC 9207: when the upstream names itself, it must be the one we asked.
	if iss := q.Get("iss"); iss != "" && iss != b.upstream.cfg.Issuer {
		b.log.WarnContext(ctx, "upstream callback from an unexpected issuer", "iss", iss)
		return nil, oidc.ErrAccessDenied().WithDescription("the sign-in response came from an unexpected issuer")
	}
	start := time.Now()
	id, err := b.upstream.exchange(ctx, q.Get("code"), p)
	b.metrics.upstreamSeconds.WithLabelValues("token").Observe(time.Since(start).Seconds())
	if err != nil {
		b.metrics.upstreamErrors.WithLabelValues("token").Inc()
		b.log.WarnContext(ctx, "upstream sign-in rejected", "err", err)
		if errors.Is(err, errHS256) {
			b.upstream.hs256Once.Do(func() { b.log.ErrorContext(ctx, hs256Advice) })
			return nil, oidc.ErrServerError().WithDescription("the sign-in service is misconfigured: its ID tokens are signed with HS256, usher needs RS256")
		}
		return nil, oidc.ErrAccessDenied().WithDescription("the sign-in could not be verified")
	}
	if id.UserinfoErr != nil {
		b.log.WarnContext(ctx, "upstream userinfo failed; signing in with the ID token's claims", "err", id.UserinfoErr)
	}
	return id, nil
}

// resolveUser finds or creates the usher user of an upstream identity.
func (b *Broker) resolveUser(ctx context.Context, id *upstreamIdentity) (*grants.User, bool, error) {
	ident := grants.Identity{
		Issuer: b.opts.Upstream.identityIssuer(id.Issuer), Subject: id.Subject, Connection: id.Connection,
		Email: id.Email, EmailVerified: id.EmailVerified,
	}
	if b.opts.Upstream.LinkByVerifiedEmail {
		b.linkByVerifiedEmail(ctx, ident)
	}
	u, created, err := b.grants.ResolveIdentity(ctx, ident,
		grants.Profile{Email: id.Email, EmailVerified: id.EmailVerified, Name: id.Name, Picture: id.Picture},
		newUserID(), b.now())
	if err != nil {
		b.log.ErrorContext(ctx, "resolving the user", "err", err)
		return nil, false, err
	}
	if created {
		b.emit(ctx, grants.UserCreatedEvent(u, id.Connection))
	}
	b.bootstrapAdmin(ctx, u, id)
	if created && len(b.opts.DefaultRoles) > 0 {
		g, err := b.grants.AddRoles(ctx, u.ID, b.opts.DefaultRoles, b.now())
		if err != nil {
			b.log.ErrorContext(ctx, "adding default roles", "err", err)
		} else {
			b.emit(ctx, grants.GrantChangedEvent(g, "default_roles"))
		}
	}
	return u, created, nil
}

// linkByVerifiedEmail attaches a new identity to the existing user with the
// same verified email, so grants follow the person across connections
// (password, Google, Facebook). Only verified emails on both sides link: an
// unverified email would let anyone claim someone else's account. Off by
// default (upstream.link_by_verified_email): it trusts every connection's
// email verification.
func (b *Broker) linkByVerifiedEmail(ctx context.Context, ident grants.Identity) {
	if !ident.EmailVerified || ident.Email == "" {
		return
	}
	users, err := b.grants.UsersByEmail(ctx, ident.Email)
	if err != nil {
		b.log.WarnContext(ctx, "account linking: looking up the email", "err", err)
		return
	}
	var target *grants.User
	for i := range users {
		if users[i].EmailVerified && (target == nil || users[i].CreatedAt.Before(target.CreatedAt)) {
			target = &users[i]
		}
	}
	if target == nil {
		return
	}
	ident.UserID = target.ID
	ident.CreatedAt = b.now()
	switch err := b.grants.LinkIdentity(ctx, ident); {
	case err == nil:
		b.log.InfoContext(ctx, "identity linked by verified email", "user_id", target.ID, "connection", ident.Connection)
	case errors.Is(err, grants.ErrConflict):
		// Already linked to a user (maybe another): ResolveIdentity follows that link.
	default:
		b.log.WarnContext(ctx, "account linking failed", "err", err)
	}
}

// bootstrapAdmin gives the admin role to a configured admin email, verified
// by the upstream (an unverified email could be anyone's).
func (b *Broker) bootstrapAdmin(ctx context.Context, u *grants.User, id *upstreamIdentity) {
	if !id.EmailVerified || !slices.ContainsFunc(b.opts.AdminEmails, func(e string) bool { return grants.SameEmail(e, id.Email) }) {
		return
	}
	if g, err := b.grants.GetGrant(ctx, u.ID); err == nil && slices.Contains(g.Roles, b.opts.AdminRole) {
		return
	}
	g, err := b.grants.AddRoles(ctx, u.ID, []string{b.opts.AdminRole}, b.now())
	if err != nil {
		b.log.ErrorContext(ctx, "granting the bootstrap admin role", "user_id", u.ID, "err", err)
		return
	}
	b.log.InfoContext(ctx, "admin role granted from admin.emails", "user_id", u.ID)
	b.audit(ctx, AuditEvent{Action: "grant.changed", Actor: "config:admin.emails", Target: u.ID, Detail: map[string]string{"added_role": b.opts.AdminRole}})
	b.emit(ctx, grants.GrantChangedEvent(g, "admin_bootstrap"))
}

// emit hands an event to the webhook outbox; it never fails the request
// (the outbox is durable, a failure to queue is logged).
func (b *Broker) emit(ctx context.Context, e grants.WebhookEvent) {
	if b.opts.Webhooks == nil {
		return
	}
	if err := b.opts.Webhooks.Emit(ctx, e); err != nil {
		b.log.ErrorContext(ctx, "queueing a webhook event", "type", e.Type, "err", err)
	}
}

// upstreamError forwards the upstream's OIDC error code when it is one the
// SPA should see as such; anything else becomes access_denied.
func upstreamError(code, desc string) *oidc.Error {
	desc = clip(desc, 300)
	switch code {
	case "login_required":
		return oidc.ErrLoginRequired().WithDescription("%s", desc)
	case "interaction_required", "consent_required", "account_selection_required":
		return oidc.ErrInteractionRequired().WithDescription("%s: %s", code, desc)
	case "access_denied", "unauthorized":
		// Auth0 Rules' UnauthorizedError arrives as error=unauthorized, which
		// is no OIDC code; its description is meant for the person.
		return oidc.ErrAccessDenied().WithDescription("%s", desc)
	case "server_error":
		return oidc.ErrServerError().WithDescription("%s", desc)
	case "temporarily_unavailable":
		return &oidc.Error{ErrorType: "temporarily_unavailable", Description: desc}
	}
	return oidc.ErrAccessDenied().WithDescription("the sign-in service refused the request")
}

func (b *Broker) unavailable(w http.ResponseWriter, r *http.Request, what string, err error) {
	b.metrics.storeErrors.WithLabelValues(what).Inc()
	b.log.ErrorContext(r.Context(), "request failed", "what", what, "err", err)
	renderPage(w, http.StatusServiceUnavailable, page{Title: "Temporarily unavailable",
		Message: "usher could not reach its store. Try again in a moment."})
}

func prunePending(values map[any]any, now time.Time) {
	n := 0
	for k, v := range values {
		ks, _ := k.(string)
		if !strings.HasPrefix(ks, pendingPrefix) {
			continue
		}
		var p pendingLogin
		if s, _ := v.(string); jsonParse(s, &p) != nil || now.After(p.Expires) {
			delete(values, k)
			continue
		}
		n++
	}
	// Bound the session size: at most 10 sign-ins in flight per browser.
	if n >= 10 {
		for k := range values {
			if ks, _ := k.(string); strings.HasPrefix(ks, pendingPrefix) {
				delete(values, k)
			}
		}
	}
}

func newUserID() string { return "usr_" + randomToken(16) }

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// connectionLabel keeps the metric's label set bounded: Auth0's connection
// names for the usual ones, "other" for the rest.
func connectionLabel(c string) string {
	switch c {
	case "", "Username-Password-Authentication", "google-oauth2", "facebook", "apple", "github", "windowslive", "linkedin", "email", "sms":
		return c
	}
	return "other"
}
