package app

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/usher-oidc/usher/notify/mail"

	"github.com/usher-oidc/usher/config"
	"github.com/usher-oidc/usher/demo"
	"github.com/usher-oidc/usher/devidp"
)

// Dev fixtures, printed by `usher dev` and used by the README's examples.
const (
	DevSPAClientID    = "demo"
	DevFunnelClientID = "funnel"
	DevFunnelSecret   = "funnel-dev-secret"
	DevUserEmail      = "ada@example.com"
	DevUserPassword   = "dev-password"
	// DevAdminEmail is listed in admin.emails: signing in with it opens
	// /admin (the admin bootstrap; no funnel may invite to the admin role).
	DevAdminEmail       = "admin@example.com"
	DevAdminPassword    = "dev-admin-password"
	devUpstreamClient   = "usher"
	devUpstreamSecret   = "usher-upstream-dev-secret"
	devManagementClient = "usher-management"
	devManagementSecret = "usher-management-dev-secret"
)

// DevOptions place the three loopback servers of `usher dev`. Empty addresses
// take a free port.
type DevOptions struct {
	Addr       string // usher, default 127.0.0.1:8080
	Issuer     string // default http://<Addr>
	DevIDPAddr string
	SPAAddr    string
	// MetricsAddr is the metrics listener, default a free loopback port.
	MetricsAddr string
	// StorePath: the bolt file; "" = a fresh temporary file removed on Close.
	StorePath string
	Logger    *slog.Logger
	Now       func() time.Time
	// Configure lets tests adjust the config before usher starts.
	Configure func(*config.Config)
	// AfterValidate changes the config after validation: tests use it to run
	// a config validation refuses (defence in depth of the broker itself).
	AfterValidate func(*config.Config)
	// WrapStore decorates usher's store (see Options.WrapStore).
	WrapStore func(Store) Store
	// MailSender replaces the dev outbox (tests send over real SMTP).
	MailSender     mail.Sender
	MailBackoff    time.Duration
	WebhookBackoff time.Duration
	// CustomDomain makes devidp answer also as http://localhost:<port>/, an
	// Auth0 custom domain in front of the canonical http://127.0.0.1:<port>/,
	// and configures usher as for a tenant with a custom domain:
	// upstream.auth0.domain is the custom domain, management.domain the
	// canonical one.
	CustomDomain bool
	// IDPOrganizations are devidp's Auth0 organizations (org_name in ID tokens too).
	IDPOrganizations []devidp.Organization
	// WrapIDP decorates devidp's handler (benchmarks time the upstream's
	// share of a sign-in with it).
	WrapIDP func(http.Handler) http.Handler
	// IDPSigningAlg is devidp's ID token algorithm (devidp.Config.SigningAlg):
	// "" is RS256, as Auth0 signs.
	IDPSigningAlg string
}

// Dev is a running `usher dev`: usher, devidp and the demo SPA.
type Dev struct {
	App       *App
	IDP       *devidp.Server
	Outbox    *mail.Outbox
	OutboxURL string
	Config    *config.Config
	IssuerURL string
	IDPURL    string
	// IDPCustomURL is devidp's custom domain (DevOptions.CustomDomain), else "".
	IDPCustomURL string
	SPAURL       string
	// MetricsURL is /metrics on the metrics listener (not the public one).
	MetricsURL string
	servers    []*http.Server // the first is usher's
	tmpDir     string
	appOpts    Options
}

func listen(addr string) (net.Listener, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	return net.Listen("tcp", addr)
}

// StartDev starts usher, devidp and the demo SPA on loopback.
func StartDev(ctx context.Context, o DevOptions) (*Dev, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	d := &Dev{}
	ok := false
	defer func() {
		if !ok {
			d.Close()
		}
	}()
	lns, err := devListeners(o)
	if err != nil {
		return nil, err
	}
	defer func() {
		if !ok {
			lns.close()
		}
	}()
	d.setURLs(o, lns)
	usherBase := strings.TrimSuffix(d.IssuerURL, "/")
	if d.IDP, err = d.startIDP(o, usherBase); err != nil {
		return nil, err
	}
	cfg, err := d.devConfig(o, lns)
	if err != nil {
		return nil, err
	}
	if err := d.startApp(ctx, o, cfg); err != nil {
		return nil, err
	}
	d.OutboxURL = usherBase + "/dev/outbox/"
	d.MetricsURL = "http://" + lns.metrics.Addr().String() + "/metrics"
	d.serve(o, lns)
	ok = true
	return d, nil
}

// setURLs sets the URLs of usher (the issuer, unless DevOptions.Issuer
// gives it), devidp and the demo SPA from their listeners.
func (d *Dev) setURLs(o DevOptions, lns *devListens) {
	d.IssuerURL = o.Issuer
	if d.IssuerURL == "" {
		d.IssuerURL = "http://" + lns.usher.Addr().String()
	}
	d.IDPURL = "http://" + lns.idp.Addr().String() + "/"
	d.SPAURL = "http://" + lns.spa.Addr().String()
	if o.CustomDomain {
		d.IDPCustomURL = "http://localhost:" + strconv.Itoa(lns.idp.Addr().(*net.TCPAddr).Port) + "/"
	}
}

// startApp starts usher itself with cfg.
func (d *Dev) startApp(ctx context.Context, o DevOptions, cfg *config.Config) error {
	d.Config = cfg
	d.Outbox = mail.NewOutbox()
	// Mail goes to the outbox page unless a test configured an SMTP server.
	var sender mail.Sender
	switch {
	case o.MailSender != nil:
		sender = o.MailSender
	case !cfg.Mail.Enabled():
		sender = d.Outbox
	}
	d.appOpts = Options{Logger: o.Logger, Now: o.Now, WrapStore: o.WrapStore, MailSender: sender, MailBackoff: o.MailBackoff, WebhookBackoff: o.WebhookBackoff, DemoURL: d.SPAURL}
	var err error
	d.App, err = New(ctx, cfg, d.appOpts)
	return err
}

// serve starts the servers of usher, devidp, the demo SPA and the metrics
// on their listeners.
func (d *Dev) serve(o DevOptions, lns *devListens) {
	spa := demo.Handler(demo.Config{Issuer: d.IssuerURL, ClientID: DevSPAClientID, Origin: d.SPAURL})
	var idp http.Handler = d.IDP
	if o.WrapIDP != nil {
		idp = o.WrapIDP(idp)
	}
	for _, s := range []struct {
		ln net.Listener
		h  http.Handler
	}{{lns.usher, d.usherMux()}, {lns.idp, idp}, {lns.spa, spa}, {lns.metrics, d.App.MetricsHandler()}} {
		srv := NewServer(s.h)
		d.servers = append(d.servers, srv)
		go srv.Serve(s.ln)
	}
}

// devListens are the four listeners of `usher dev`.
type devListens struct{ usher, idp, spa, metrics net.Listener }

func (l *devListens) close() {
	for _, ln := range []net.Listener{l.usher, l.idp, l.spa, l.metrics} {
		ln.Close()
	}
}

// devListeners opens them all, or none.
func devListeners(o DevOptions) (*devListens, error) {
	var opened []net.Listener
	open := func(addr, what string) (net.Listener, error) {
		ln, err := listen(addr)
		if err != nil {
			for _, l := range opened {
				l.Close()
			}
			return nil, fmt.Errorf("%s listener: %w", what, err)
		}
		opened = append(opened, ln)
		return ln, nil
	}
	var l devListens
	var err error
	if l.usher, err = open(o.Addr, "usher"); err != nil {
		return nil, err
	}
	if l.idp, err = open(o.DevIDPAddr, "devidp"); err != nil {
		return nil, err
	}
	if l.spa, err = open(o.SPAAddr, "demo SPA"); err != nil {
		return nil, err
	}
	if l.metrics, err = open(o.MetricsAddr, "metrics"); err != nil {
		return nil, err
	}
	return &l, nil
}

// startIDP builds the stand-in Auth0 tenant with the dev fixtures.
func (d *Dev) startIDP(o DevOptions, usherBase string) (*devidp.Server, error) {
	idp, err := devidp.New(devidp.Config{
		Issuer: d.IDPURL,
		Clients: []devidp.Client{{
			ID: devUpstreamClient, Secret: devUpstreamSecret,
			RedirectURIs:           []string{usherBase + "/callback"},
			PostLogoutRedirectURIs: []string{usherBase + "/logout/done"},
		}},
		ManagementClients: []devidp.Client{{ID: devManagementClient, Secret: devManagementSecret}},
		Organizations:     o.IDPOrganizations, OrganizationNames: len(o.IDPOrganizations) > 0,
		Users: []devidp.User{
			{Email: DevUserEmail, Password: DevUserPassword, Name: "Ada Lovelace", EmailVerified: true},
			{Email: DevAdminEmail, Password: DevAdminPassword, Name: "Dev Admin", EmailVerified: true},
		},
		Logger:       o.Logger.With("component", "devidp"),
		CustomDomain: d.IDPCustomURL,
		SigningAlg:   o.IDPSigningAlg,
	})
	if err != nil {
		return nil, fmt.Errorf("devidp: %w", err)
	}
	return idp, nil
}

// devConfig is `usher dev`'s configuration: the Auth0 preset against devidp,
// the demo SPA and the funnel as clients, then the caller's changes.
func (d *Dev) devConfig(o DevOptions, lns *devListens) (*config.Config, error) {
	cfg := config.Default()
	cfg.Dev = true
	cfg.Admin.Emails = []string{DevAdminEmail}
	cfg.Issuer = d.IssuerURL
	cfg.Listen = lns.usher.Addr().String()
	cfg.Metrics.Listen = lns.metrics.Addr().String()
	cfg.Store.Path = o.StorePath
	if cfg.Store.Path == "" {
		dir, err := os.MkdirTemp("", "usher-dev-")
		if err != nil {
			return nil, err
		}
		d.tmpDir = dir
		cfg.Store.Path = filepath.Join(dir, "usher.db")
	}
	// devidp answers as an Auth0 tenant does, so dev runs the Auth0 preset,
	// Management API mirror included.
	cfg.Upstream.Auth0 = config.Auth0{
		Domain: strings.TrimSuffix(d.IDPURL, "/"), ClientID: devUpstreamClient, ClientSecret: devUpstreamSecret,
		Connections: []string{"Username-Password-Authentication", "google-oauth2", "facebook"},
		Management:  config.Management{ClientID: devManagementClient, ClientSecret: devManagementSecret, CreateRoles: true},
		UserIDClaim: config.DefaultUserIDClaim,
	}
	cfg.Clients = []config.Client{
		{
			ID: DevSPAClientID, Name: "Demo SPA", Type: config.ClientPublic,
			RedirectURIs:           []string{d.SPAURL + "/callback"},
			PostLogoutRedirectURIs: []string{d.SPAURL + "/"},
			InitiateLoginURI:       d.SPAURL + "/login",
		},
		{
			ID: DevFunnelClientID, Name: "Conversion funnel (dev)", Type: config.ClientConfidential,
			Secret: DevFunnelSecret, GrantTypes: []string{config.GrantClientCredentials},
			Scopes: []string{"invitations:write", "invitations:read"},
		},
	}
	if o.CustomDomain {
		cfg.Upstream.Auth0.Management.Domain = cfg.Upstream.Auth0.Domain
		cfg.Upstream.Auth0.Domain = strings.TrimSuffix(d.IDPCustomURL, "/")
	}
	if o.Configure != nil {
		o.Configure(cfg)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("dev config: %w", err)
	}
	if o.AfterValidate != nil {
		o.AfterValidate(cfg)
	}
	return cfg, nil
}

func (d *Dev) usherMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/dev/outbox/", http.StripPrefix("/dev/outbox", d.Outbox.Handler()))
	mux.Handle("/", d.App.Handler())
	return mux
}

// RestartUsher stops usher and starts it again on the same address and
// store, with configure applied to a copy of its config; devidp and the demo
// SPA keep running (and the metrics listener keeps the first App's metrics).
func (d *Dev) RestartUsher(ctx context.Context, configure func(*config.Config)) error {
	d.servers[0].Close()
	d.App.Close()
	cfg := *d.Config
	if configure != nil {
		configure(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("dev config: %w", err)
	}
	a, err := New(ctx, &cfg, d.appOpts)
	if err != nil {
		return err
	}
	d.App, d.Config = a, &cfg
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("usher listener: %w", err)
	}
	d.servers[0] = NewServer(d.usherMux())
	go d.servers[0].Serve(ln)
	return nil
}

// Close stops the servers and removes the temporary store.
func (d *Dev) Close() {
	for _, s := range d.servers {
		s.Close()
	}
	if d.App != nil {
		d.App.Close()
	}
	if d.tmpDir != "" {
		os.RemoveAll(d.tmpDir)
	}
}
