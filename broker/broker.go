package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/usher-oidc/usher/broker/admin"
	"github.com/usher-oidc/usher/broker/upstream"
	"github.com/usher-oidc/usher/notify/webhooks"

	"github.com/gorilla/securecookie"
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
	Sessions sessions.Store
	Grants   grants.Store

	// Upstream is the identity provider sign-ins are delegated to
	// (upstream/oidc or upstream/auth0, chosen by app); its optional
	// capabilities (upstream.AccountFinder, GrantMirror, Organizations,
	// LogoutRedirector) turn the matching features on.
	Upstream upstream.Upstream
	// LinkByVerifiedEmail maps identities with the same verified email to one user.
	LinkByVerifiedEmail bool

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
	// Branding is the logo and accent colour of usher's invitee pages.
	Branding Branding
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
	// NewLimiter, when set, builds the rate limiters (a Redis store's are
	// shared by every replica); nil counts in this process's memory.
	NewLimiter NewLimiter
	// ClientIP names the reverse proxies whose forwarding header is believed.
	ClientIP ClientIP
	// RedemptionHook, when set, approves each redemption before it commits.
	RedemptionHook *RedemptionHook
	// Webhooks, when set, receives user and grant events (invitation events
	// reach it through the outbox runner).
	Webhooks WebhookSender
	// EventsRecorded, when set, is called after an invitation use case
	// recorded events: it wakes this process's outbox runner.
	EventsRecorded func()
	// Backup, when set, writes a consistent snapshot of the store to w
	// (boltstore.Store.Backup) for GET /api/store/backup; nil (Redis): 501.
	Backup func(w io.Writer) (int64, error)

	Now    func() time.Time
	Logger *slog.Logger
}

// WebhookSender emits events to the webhook outbox (webhooks.Webhooks).
type WebhookSender interface {
	admin.WebhookAdmin
	Emit(ctx context.Context, e webhooks.WebhookEvent) error
}

// InvitationMailer seals invitation links for the mail queue (mail.Mailer
// in production); the outbox runner queues the mails themselves.
type InvitationMailer interface {
	SealLink(invitationID, link string) (string, error)
}

// Broker is the OpenID Provider plus the upstream client.
type Broker struct {
	// verified caches access tokens whose signature was checked (tokencache.go).
	verified    verifiedTokens
	invitations *grants.Service
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
	codeCrypto  codeCrypto
	codeSeal    *codeSeal
	refreshSeal *securecookie.SecureCookie // seals refresh tokens' family data (refreshseal.go)
	opServer    http.Handler
	upstream    upstream.Upstream
	caps        upstreamCapabilities
	browser     *browserStore
	cookie      string
	log         *slog.Logger
	now         func() time.Time
	insecure    bool
	// hs256Once: the upstream's HS256 advice is logged once per process.
	hs256Once sync.Once
}

// New builds the broker. It loads (or, the first time, generates and stores)
// the signing keys; it does not contact the upstream until the first sign-in.
func New(ctx context.Context, o Options) (*Broker, error) {
	iss, insecure, err := checkOptions(&o)
	if err != nil {
		return nil, err
	}
	applyDefaults(&o)
	b := &Broker{
		opts: o, clients: map[string]*Client{}, sessions: o.Sessions, grants: o.Grants,
		log: o.Logger, now: o.Now, insecure: insecure, audit: o.Audit,
		metrics: newMetrics(o.Metrics),
	}
	b.limits = newLimiters(o.RateLimits, o.NewLimiter, o.Now, b.metrics, o.Logger)
	b.storage = opStorage{b}
	if b.audit == nil {
		b.audit = b.recordAudit
	}
	b.invitations = b.newInvitationService(o)
	if err := b.registerClients(o.Clients); err != nil {
		return nil, err
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
	b.upstream, b.caps = o.Upstream, capabilitiesOf(o.Upstream)
	if err := b.buildProvider(); err != nil {
		return nil, err
	}
	return b, nil
}

// checkOptions refuses the options New cannot start with. It returns the
// issuer, parsed, and whether it is plain http (allowed on loopback only).
func checkOptions(o *Options) (*url.URL, bool, error) {
	if o.Sessions == nil || o.Grants == nil {
		return nil, false, errors.New("broker: Sessions and Grants stores are required")
	}
	if o.Upstream == nil {
		return nil, false, errors.New("broker: Upstream is required")
	}
	iss, err := url.Parse(o.Issuer)
	if err != nil || iss.Host == "" {
		return nil, false, fmt.Errorf("broker: issuer %q is not an absolute URL", o.Issuer)
	}
	insecure := iss.Scheme == "http"
	if insecure && !isLoopback(iss.Hostname()) {
		return nil, false, fmt.Errorf("broker: issuer %q: plain http is only allowed on loopback", o.Issuer)
	}
	if len(o.SessionSecret) < 32 {
		return nil, false, errors.New("broker: session secret must be at least 32 bytes")
	}
	return iss, insecure, nil
}

// newInvitationService is the invitation use cases over o's grants store;
// invitation mails' links are sealed only when o has a Mailer.
func (b *Broker) newInvitationService(o Options) *grants.Service {
	var sealLink func(*grants.Invitation, string) (string, error)
	if o.Mailer != nil {
		sealLink = func(inv *grants.Invitation, token string) (string, error) {
			return o.Mailer.SealLink(inv.ID, b.inviteLink(inv, token))
		}
	}
	return grants.NewService(grants.ServiceOptions{
		Store: o.Grants, DefaultTTL: o.InvitationDefaultTTL, MaxTTL: o.InvitationMaxTTL,
		DefaultEmailMatch: o.InvitationEmailMatch, RoleCatalog: o.RoleCatalog, PrivilegedRoles: o.PrivilegedRoles,
		ClaimsNamespace: o.ClaimsNamespace, Now: o.Now, SealLink: sealLink, Recorded: o.EventsRecorded, UpstreamSubjects: b.upstreamSubjects,
		KnownClient: func(id string) bool { _, ok := b.clients[id]; return ok },
	})
}

// registerClients indexes clients by ID, refusing an ID registered twice.
func (b *Broker) registerClients(clients []Client) error {
	for i := range clients {
		c := &clients[i]
		if _, dup := b.clients[c.ID]; dup {
			return fmt.Errorf("broker: client %q registered twice", c.ID)
		}
		b.clients[c.ID] = c
	}
	return nil
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
	b.codeCrypto = newCodeCrypto(b.opts.SessionSecret, b.opts.Tokens.Code, p.Crypto())
	b.codeSeal = newCodeSeal(b.opts.SessionSecret, b.opts.Tokens.Code)
	b.refreshSeal = newRefreshSeal(b.opts.SessionSecret, b.opts.Tokens.RefreshAbsolute)
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
	return &opClient{c: c, idTTL: b.opts.Tokens.IDToken, loginURL: b.opClientLoginURL}
}

// opClientLoginURL is where the op sends the browser once it stored auth
// request id: its login step (authorize_inline.go runs it at once).
func (b *Broker) opClientLoginURL(id string) string {
	return b.url("/login?id=" + url.QueryEscape(id))
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
	mux.HandleFunc("GET "+brandPrefix+"{name}", b.handleLogo)
	mux.Handle("GET /invite/{token}", pageHeaders(b.limitInvites(http.HandlerFunc(b.handleInvite))))
	mux.Handle("POST "+pathAccept, pageHeaders(b.issRedirects(http.HandlerFunc(b.handleAccept))))
	mux.Handle("GET "+pathProblem, pageHeaders(http.HandlerFunc(b.handleProblem)))
	mux.Handle("POST "+pathProblem, pageHeaders(http.HandlerFunc(b.handleProblemAnswer)))
	mux.Handle("GET "+pathVerify, pageHeaders(http.HandlerFunc(b.handleVerifyPage)))
	mux.Handle("POST "+pathVerify, pageHeaders(b.issRedirects(http.HandlerFunc(b.handleVerifyAnswer))))
	mux.Handle("GET /login/continue", pageHeaders(b.issRedirects(http.HandlerFunc(b.handleContinue))))
	mux.Handle("GET /login", pageHeaders(b.issRedirects(http.HandlerFunc(b.handleLogin))))
	b.adminAPI().Mount(mux)
	b.adminPage().Mount(mux)
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

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// emit hands an event to the webhook outbox; it never fails the request
// (the outbox is durable, a failure to queue is logged).
func (b *Broker) emit(ctx context.Context, e webhooks.WebhookEvent) {
	if b.opts.Webhooks == nil {
		return
	}
	if err := b.opts.Webhooks.Emit(ctx, e); err != nil {
		b.log.ErrorContext(ctx, "queueing a webhook event", "type", e.Type, "err", err)
	}
}

func (b *Broker) unavailable(w http.ResponseWriter, r *http.Request, what string, err error) {
	b.metrics.storeErrors.WithLabelValues(what).Inc()
	b.log.ErrorContext(r.Context(), "request failed", "what", what, "err", err)
	b.renderPage(w, r, http.StatusServiceUnavailable, page{Key: "unavailable"})
}

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
