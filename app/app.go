// Package app assembles usher from its configuration: it opens the store,
// builds the broker and serves it. main.go and the end-to-end tests share it,
// so the tests run exactly what `usher serve` and `usher dev` run.
package app

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/usher-oidc/usher/grants/outbox"

	"github.com/usher-oidc/usher/broker/upstream/auth0"
	"github.com/usher-oidc/usher/notify/mail"
	"github.com/usher-oidc/usher/notify/webhooks"

	"github.com/gorilla/securecookie"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/usher-oidc/usher/broker"
	"github.com/usher-oidc/usher/config"
	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/sessions"
	boltstore "github.com/usher-oidc/usher/store/bolt"
	redisstore "github.com/usher-oidc/usher/store/redis"
)

// Store is what a backend provides: both state interfaces and a Close.
type Store interface {
	sessions.Store
	grants.Store
	Close() error
}

// Options that tests (and `usher dev`) set beyond the config file.
type Options struct {
	Logger *slog.Logger
	Now    func() time.Time
	// UpstreamHTTPClient overrides the client used to reach the upstream.
	UpstreamHTTPClient *http.Client
	// Store, when set, is used instead of opening the configured one.
	Store Store
	// WrapStore, when set, decorates the store (tests count writes with it).
	WrapStore func(Store) Store
	// MailSender, when set, delivers mail instead of the configured SMTP
	// server (`usher dev` uses an in-memory outbox).
	MailSender mail.Sender
	// MailBackoff and WebhookBackoff override retry backoffs (tests).
	MailBackoff    time.Duration
	WebhookBackoff time.Duration
	// MailLease, WebhookLease, MirrorLease and OutboxLease override how long
	// a claimed mail job, webhook lane, mirror job or outbox invitation is
	// one replica's before another may take it over (tests make them short
	// to see a killed replica's work handed over); zero keeps the defaults.
	MailLease, WebhookLease, MirrorLease, OutboxLease time.Duration
	// DemoURL: `usher dev`'s demo app, linked from the issuer root page.
	DemoURL string
}

// App is a running usher.
type App struct {
	Metrics  *prometheus.Registry
	Config   *config.Config
	Broker   *broker.Broker
	Store    Store
	Mailer   *mail.Mailer
	Mirror   *auth0.Mirror
	Webhooks *webhooks.Webhooks
	// Outbox hands recorded invitation events to the consumers above.
	Outbox *outbox.Relay
	log    *slog.Logger
	now    func() time.Time
	owned  bool
	stop   context.CancelFunc
	// workers are the background loops (mail, mirror, webhooks, key
	// rotation): Close waits for them before it closes the store they use.
	workers sync.WaitGroup
}

// New builds usher from a validated config.
func New(ctx context.Context, cfg *config.Config, o Options) (*App, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	a := &App{Config: cfg, log: o.Logger, Store: o.Store, now: o.Now}
	bg, cancel := context.WithCancel(context.Background())
	a.stop = cancel
	if a.Store == nil {
		st, err := OpenStore(cfg, o.Now, o.Logger)
		if err != nil {
			return nil, err
		}
		a.Store, a.owned = st, true
	}
	newLimiter := sharedLimiter(a.Store) // before WrapStore hides the backend
	backup := backupFunc(a.Store)
	budget := managementBudget(a.Store, cfg)
	if o.WrapStore != nil {
		a.Store = o.WrapStore(a.Store)
	}
	bo, err := BrokerOptions(cfg)
	if err != nil {
		a.Close()
		return nil, err
	}
	bo.NewLimiter = newLimiter
	bo.Backup = backup
	bo.Sessions, bo.Grants = a.Store, a.Store
	bo.Now, bo.Logger = o.Now, o.Logger
	bo.DemoURL = o.DemoURL
	a.Metrics = prometheus.NewRegistry()
	a.Metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	bo.Metrics = a.Metrics
	if err := a.startBackground(bg, cfg, o, &bo, budget); err != nil {
		a.Close()
		return nil, err
	}
	a.Broker, err = broker.New(ctx, bo)
	if err != nil {
		a.Close()
		return nil, err
	}
	a.workers.Go(func() { a.Broker.Run(bg) })
	return a, nil
}

// startBackground starts the background workers (mail and the Auth0 mirror
// when configured, webhooks, the outbox), registers their queue-depth
// gauges, and hands the broker what it needs of them in bo.
func (a *App) startBackground(ctx context.Context, cfg *config.Config, o Options, bo *broker.Options, budget auth0.Budget) error {
	if err := a.startMailer(ctx, cfg, o, bo.SessionSecret); err != nil {
		return err
	}
	if err := a.startMirror(ctx, cfg, o, budget); err != nil {
		return err
	}
	bo.Upstream = NewUpstream(cfg, o.UpstreamHTTPClient, a.Mirror)
	if err := a.startWebhooks(ctx, cfg, o); err != nil {
		return err
	}
	bo.Webhooks = a.Webhooks
	if a.Mailer != nil {
		bo.Mailer = a.Mailer
	}
	a.registerQueueGauges(ctx)
	a.startOutbox(ctx, bo, o.OutboxLease)
	return nil
}

// startWebhooks starts the webhook worker. It runs even without endpoints:
// its sweep marks expired invitations.
func (a *App) startWebhooks(ctx context.Context, cfg *config.Config, o Options) error {
	whEndpoints := make([]webhooks.WebhookEndpoint, 0, len(cfg.Webhooks))
	for _, w := range cfg.Webhooks {
		whEndpoints = append(whEndpoints, webhooks.WebhookEndpoint{ID: w.ID, URL: w.URL, Secrets: w.Secrets, Events: w.Events})
	}
	var err error
	a.Webhooks, err = webhooks.NewWebhooks(webhooks.WebhooksOptions{Store: a.Store, Endpoints: whEndpoints, Now: o.Now,
		Logger: a.log, BaseBackoff: o.WebhookBackoff, Lease: o.WebhookLease})
	if err != nil {
		return err
	}
	a.workers.Go(func() { a.Webhooks.Run(ctx) })
	return nil
}

// registerQueueGauges registers the queue-depth gauges of the running
// workers: webhooks, then the Auth0 mirror and mail when they run.
func (a *App) registerQueueGauges(ctx context.Context) {
	a.Metrics.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "usher_webhook_queue_depth",
		Help: "Webhook lanes (endpoint × invitation) with undelivered events."}, queueDepth(ctx, a.Webhooks.QueueDepth)))
	if a.Mirror != nil {
		a.Metrics.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "usher_auth0_mirror_queue_depth",
			Help: "Auth0 Management API updates waiting (including retries)."}, queueDepth(ctx, a.Mirror.QueueDepth)))
	}
	if a.Mailer != nil {
		a.Metrics.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "usher_mail_queue_depth",
			Help: "Invitation mails waiting to be sent (including retries)."}, queueDepth(ctx, a.Mailer.QueueDepth)))
	}
}

// startOutbox runs the one runner that hands the events invitation use cases
// record to their consumers: the audit log first, the funnel counters, then
// webhooks, mail and the Auth0 mirror when configured.
func (a *App) startOutbox(ctx context.Context, bo *broker.Options, lease time.Duration) {
	consumers := []outbox.Consumer{outbox.Audit(a.Store), outbox.Funnel(a.Store), a.Webhooks}
	if a.Mailer != nil {
		consumers = append(consumers, a.Mailer)
	}
	if a.Mirror != nil {
		consumers = append(consumers, a.Mirror)
	}
	a.Outbox = outbox.NewRelay(outbox.RelayOptions{Store: a.Store, Consumers: consumers, Now: a.now, Logger: a.log, Lease: lease})
	bo.EventsRecorded = a.Outbox.Poke
	a.workers.Go(func() { a.Outbox.Run(ctx) })
}

// startMirror starts the Auth0 Management API mirror when configured.
func (a *App) startMirror(ctx context.Context, cfg *config.Config, o Options, budget auth0.Budget) error {
	m := cfg.Upstream.Auth0.Management
	if !cfg.Upstream.IsAuth0() || !m.Enabled() {
		return nil
	}
	// The Management API answers only for the canonical tenant domain.
	domain := strings.TrimRight(cfg.Upstream.ManagementDomain(), "/")
	insecure := strings.HasPrefix(domain, "http://")
	domain = strings.TrimPrefix(strings.TrimPrefix(domain, "https://"), "http://")
	mirror, err := auth0.NewMirror(ctx, auth0.MirrorOptions{Store: a.Store, Domain: domain, ClientID: m.ClientID,
		ClientSecret: m.ClientSecret, CreateRoles: m.CreateRoles, Insecure: insecure, HTTPClient: o.UpstreamHTTPClient,
		Now: o.Now, Logger: a.log, RatePerSecond: m.RateLimit.PerSecond, RateBurst: m.RateLimit.Burst,
		Budget: budget, Lease: o.MirrorLease})
	if err != nil {
		return fmt.Errorf("upstream.auth0.management: %w", err)
	}
	a.Mirror = mirror
	a.workers.Go(func() { mirror.Run(ctx) })
	return nil
}

// startMailer starts the background mail worker when mail is configured (or
// a sender is given). The job payload holds the invitation link, so it is
// sealed with keys derived from the session secret all replicas share.
func (a *App) startMailer(ctx context.Context, cfg *config.Config, o Options, secret []byte) error {
	sender := o.MailSender
	if sender == nil && cfg.Mail.Enabled() {
		s, err := mail.NewSMTPSender(mail.SMTPConfig{Host: cfg.Mail.SMTP.Host, Port: cfg.Mail.SMTP.Port,
			TLS: cfg.Mail.SMTP.TLS, Username: cfg.Mail.SMTP.Username, Password: cfg.Mail.SMTP.Password, From: cfg.Mail.From})
		if err != nil {
			return fmt.Errorf("mail.smtp: %w", err)
		}
		sender = s
	}
	if sender == nil {
		return nil
	}
	tpl, err := mail.LoadTemplates(cfg.Mail.TemplatesDir)
	if err != nil {
		return fmt.Errorf("mail.templates_dir: %w", err)
	}
	hashKey, err := hkdf.Key(sha256.New, secret, nil, "usher mail job hmac", 32)
	if err != nil {
		return err
	}
	blockKey, err := hkdf.Key(sha256.New, secret, nil, "usher mail job aes", 32)
	if err != nil {
		return err
	}
	sealer := securecookie.New(hashKey, blockKey)
	sealer.MaxAge(int((7 * 24 * time.Hour).Seconds()))
	br, err := loadBranding(cfg)
	if err != nil {
		return err
	}
	a.Mailer = mail.NewMailer(mail.MailerOptions{Store: a.Store, Sender: sender, Templates: tpl, Sealer: sealer,
		AppName: cfg.Invitations.AppName, AppNames: clientNames(cfg), Logo: br.Logo, Accent: br.Accent, Now: o.Now, Logger: a.log, BaseBackoff: o.MailBackoff, Lease: o.MailLease})
	a.workers.Go(func() { a.Mailer.Run(ctx) })
	return nil
}

// OpenStore opens the configured backend.
func OpenStore(cfg *config.Config, now func() time.Time, log *slog.Logger) (Store, error) {
	switch cfg.Store.Driver {
	case "", "bolt":
		st, err := boltstore.Open(cfg.Store.Path, boltstore.Options{Now: now, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("opening store %s: %w", cfg.Store.Path, err)
		}
		return st, nil
	case "redis":
		r := cfg.Store.Redis
		st, err := redisstore.Open(redisstore.Config{URL: r.URL, Addrs: r.Addrs, MasterName: r.MasterName,
			Username: r.Username, Password: r.Password, DB: r.DB, PoolSize: r.PoolSize},
			redisstore.Options{Now: now, Logger: log, RecordFormat: cfg.Store.RecordFormat})
		if err != nil {
			return nil, fmt.Errorf("opening the Redis store: %w", err)
		}
		return st, nil
	default:
		return nil, fmt.Errorf("store.driver %q is not supported (bolt or redis)", cfg.Store.Driver)
	}
}

// sharedLimiter is how the broker's rate limits are built on st: on Redis
// every replica shares them; elsewhere (bbolt, one process) nil keeps them in
// memory.
func sharedLimiter(st Store) broker.NewLimiter {
	rs, ok := st.(*redisstore.Store)
	if !ok {
		return nil
	}
	return func(name string, perPeriod int, period time.Duration) broker.Limiter {
		return rs.RateLimiter(name, perPeriod, period)
	}
}

// backupFunc is what serves GET /api/store/backup on st: the bbolt file's
// online snapshot (its flow file of sign-ins in flight is left out on
// purpose), or nil on Redis, whose own persistence backs it up.
func backupFunc(st Store) func(io.Writer) (int64, error) {
	if bs, ok := st.(*boltstore.Store); ok {
		return bs.Backup
	}
	return nil
}

// managementBudget is the Auth0 Management API budget on st: on Redis one
// every replica shares (keyed by the tenant domain); elsewhere nil, the
// mirror's own in-process budget (bbolt: one process).
func managementBudget(st Store, cfg *config.Config) auth0.Budget {
	rs, ok := st.(*redisstore.Store)
	if !ok {
		return nil
	}
	r := cfg.Upstream.Auth0.Management.RateLimit
	return rs.Budget("auth0-management", r.PerSecond, r.Burst)
}

// Handler serves every public usher endpoint. /metrics is not among them:
// it is MetricsHandler, on its own listener (metrics.listen).
func (a *App) Handler() http.Handler {
	return RequestID(a.Broker.Handler())
}

// MetricsHandler serves /metrics for the metrics listener.
func (a *App) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.Metrics, promhttp.HandlerOpts{}))
	return mux
}

// Server timeouts: every request usher serves is small, so a client that
// trickles its headers or body is cut off after a few seconds instead of
// holding a connection (and a goroutine) for as long as it likes.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 8 * time.Second
	idleTimeout       = 60 * time.Second
	maxHeaderBytes    = 64 << 10
)

// NewServer is the http.Server every usher listener runs (serve and dev).
func NewServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: readHeaderTimeout, ReadTimeout: readTimeout,
		IdleTimeout: idleTimeout, MaxHeaderBytes: maxHeaderBytes}
}

// queueDepthEvery is how often the queue-depth gauges ask the store: a
// scrape reads the last value and never queries the store itself.
const queueDepthEvery = 15 * time.Second

// queueDepth adapts a queue's depth to a gauge refreshed on a timer; a store
// error reads as -1 so a dashboard shows the failure instead of an empty queue.
func queueDepth(ctx context.Context, depth func(context.Context) (int, error)) func() float64 {
	var last atomic.Uint64
	refresh := func() {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		v := -1.0
		if n, err := depth(c); err == nil {
			v = float64(n)
		}
		last.Store(math.Float64bits(v))
	}
	refresh()
	go func() {
		t := time.NewTicker(queueDepthEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				refresh()
			}
		}
	}()
	return func() float64 { return math.Float64frombits(last.Load()) }
}

// workersStopTimeout bounds how long Close waits for background loops to
// notice the cancellation (an in-flight delivery ends with its context).
const workersStopTimeout = 15 * time.Second

// Close stops background work, waits for it (bounded), and releases the
// store if New opened it: a worker still running would write to, and log
// about, a closed store.
func (a *App) Close() error {
	if a.stop != nil {
		a.stop()
	}
	done := make(chan struct{})
	go func() { a.workers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(workersStopTimeout):
		a.log.Warn("background workers did not stop in time; closing the store anyway")
	}
	if a.owned && a.Store != nil {
		return a.Store.Close()
	}
	return nil
}

// Serve runs the HTTP server until ctx ends, then shuts down gracefully.
func Serve(ctx context.Context, srv *http.Server, serve func() error, log *slog.Logger) error {
	errc := make(chan error, 1)
	go func() { errc <- serve() }()
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	case <-ctx.Done():
		log.Info("shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	}
}

// ServeAll runs the public listener (cfg.Listen) and the metrics listener
// (cfg.Metrics.Listen) until ctx ends or one of them fails.
func (a *App) ServeAll(ctx context.Context, log *slog.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	public, metrics := NewServer(a.Handler()), NewServer(a.MetricsHandler())
	public.Addr, metrics.Addr = a.Config.Listen, a.Config.Metrics.Listen
	errc := make(chan error, 2)
	for _, srv := range []*http.Server{public, metrics} {
		go func() {
			err := Serve(ctx, srv, srv.ListenAndServe, log)
			cancel() // one listener down stops the other
			errc <- err
		}()
	}
	return errors.Join(<-errc, <-errc)
}
