package auth0

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/usher-oidc/usher/broker/upstream"
	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/grants/outbox"

	"github.com/auth0/go-auth0/management"
	"golang.org/x/oauth2"
)

// JobKindMirror is the job kind of queued Auth0 Management API updates.
const JobKindMirror = "auth0-mirror"

// The mirror writes its progress on each invitation's timeline as the
// upstream.EventMirror* events; the latest of them is the invitation's
// mirror status (upstream.MirrorStateOf).

// MirrorOptions configures NewMirror.
type MirrorOptions struct {
	Store grants.Store
	// Domain is the tenant's domain ("acme.eu.auth0.com", or host:port for a
	// loopback stand-in); no scheme, no path.
	Domain       string
	ClientID     string
	ClientSecret string
	// CreateRoles creates roles that do not exist in Auth0 yet; without it a
	// missing role is reported in the invitation's mirror status.
	CreateRoles bool
	// Insecure talks plain http (loopback tests and `usher dev` only).
	Insecure bool
	// HTTPClient carries the calls (its Transport and Timeout are used);
	// default: a client with a 30s timeout.
	HTTPClient *http.Client
	Now        func() time.Time
	Logger     *slog.Logger
	// PollInterval is how often the worker looks for due jobs when nothing
	// wakes it; default 1s.
	PollInterval time.Duration
	// BaseBackoff is the wait after the first failure, doubled per attempt
	// and capped at an hour; default 10s. A 429 waits for its Retry-After
	// instead.
	BaseBackoff time.Duration
	// MaxAge is how long a job is retried before the mirror gives up on it;
	// default 72h.
	MaxAge time.Duration
	// Lease is how long a claimed job is this process's before another
	// replica may take it; default 5 min. Tests set it short to see a killed
	// replica's job handed over; a job's run is then bounded by half of it.
	Lease time.Duration

	// RatePerSecond and RateBurst are the tenant's Management API budget
	// usher keeps to: calls a second, and at once at most; default 2 and 5
	// (a Free or non-production tenant).
	RatePerSecond float64
	RateBurst     int
	// LoginReserve is how many permits of the burst mirror jobs leave to
	// HasAccount (see "Pacing" in ratelimit.go); default RateBurst/2 (a
	// lookup asks at most twice), at most RateBurst-1.
	LoginReserve int
	// Budget is where the permits come from, keyed by Domain: a Redis
	// store's Budget shares them (and pauses) between every replica;
	// default NewLocalBudget(RatePerSecond, RateBurst), this process only.
	Budget Budget
	// AccountCacheTTL is how long a positive HasAccount answer is
	// remembered (in this process); default 5m, negative = off. Negative
	// answers are never remembered: the person may be signing up now.
	AccountCacheTTL time.Duration
}

// Mirror copies what invitations grant into the Auth0 tenant through the
// Management API: roles as Auth0 roles (RBAC) and app_metadata.usher =
// {roles, claims, invitations}. Its work goes through the durable job queue,
// so it never blocks nor fails a login; the only synchronous call,
// HasAccount, has a short deadline and its errors mean "unknown".
type Mirror struct {
	o    MirrorOptions
	api  *management.Management
	log  *slog.Logger
	loop *outbox.WakeLoop

	// lookup serves HasAccount: no go-auth0 retries (the login path does not
	// wait for them) and so none of their racy jitter (see drain).
	lookup *management.Management
	work   sync.Mutex // one job at a time

	budget Budget

	mu         sync.Mutex
	pauseUntil time.Time // the tenant asked us not to call before then
	roleIDs    map[string]string
	accounts   map[string]time.Time // email → until when "has an account" holds
	// connections: Auth0 user ID → its connection (Connection); never stale.
	connections map[string]string
}

const (
	mirrorBatch        = 10
	mirrorLease        = 5 * time.Minute
	mirrorJobBudget    = 2 * time.Minute // < mirrorLease, so no other worker takes a job mid-run
	mirrorLookupBudget = 3 * time.Second // HasAccount, on the login path
	mirrorTokenTimeout = 10 * time.Second
	mirrorRoleDesc     = "Granted through usher invitations"
	mirrorMetadataKey  = "usher"
)

// NewMirror checks the options and builds the Management API client; it
// does not contact Auth0. ctx carries values only (its cancellation is
// ignored): the client fetches and renews its token in the background.
func NewMirror(ctx context.Context, o MirrorOptions) (*Mirror, error) {
	domain, err := checkMirrorOptions(o)
	if err != nil {
		return nil, err
	}
	o.Domain = domain
	o.setDefaults()
	m := &Mirror{
		o: o, log: o.Logger.With("component", "auth0-mirror"),
		roleIDs: make(map[string]string), accounts: make(map[string]time.Time), budget: o.Budget,
		connections: make(map[string]string),
	}
	m.loop = outbox.NewWakeLoop(o.PollInterval, o.Now)
	m.loop.NotBefore = m.pausedUntil // never call before the reset a 429 or Remaining: 0 named
	if err := m.newAPIs(ctx); err != nil {
		return nil, err
	}
	return m, nil
}

// checkMirrorOptions reports what NewMirror cannot do without, and returns
// the Domain as the client wants it: a bare host (or host:port).
func checkMirrorOptions(o MirrorOptions) (domain string, err error) {
	var missing []string
	if o.Store == nil {
		missing = append(missing, "Store")
	}
	if o.ClientID == "" {
		missing = append(missing, "ClientID")
	}
	if o.ClientSecret == "" {
		missing = append(missing, "ClientSecret")
	}
	domain = strings.TrimSpace(o.Domain)
	if scheme, rest, ok := strings.Cut(domain, "://"); ok {
		if scheme == "http" && !o.Insecure {
			return "", fmt.Errorf("auth0 mirror: Domain %q is plain http; only loopback tests may do that (Insecure)", o.Domain)
		}
		domain = rest
	}
	domain = strings.TrimSuffix(domain, "/")
	if domain == "" {
		missing = append(missing, "Domain")
	} else if strings.ContainsAny(domain, "/?#") {
		return "", fmt.Errorf("auth0 mirror: Domain %q must be a host name (or host:port), without a path", o.Domain)
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("auth0 mirror: missing %s", strings.Join(missing, ", "))
	}
	return domain, nil
}

// setDefaults fills in the defaults documented on MirrorOptions.
func (o *MirrorOptions) setDefaults() {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.PollInterval <= 0 {
		o.PollInterval = time.Second
	}
	if o.Lease <= 0 {
		o.Lease = mirrorLease
	}
	if o.BaseBackoff <= 0 {
		o.BaseBackoff = 10 * time.Second
	}
	if o.MaxAge <= 0 {
		o.MaxAge = 72 * time.Hour
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if o.RatePerSecond <= 0 {
		o.RatePerSecond = 2
	}
	if o.RateBurst <= 0 {
		o.RateBurst = 5
	}
	if o.LoginReserve <= 0 {
		o.LoginReserve = o.RateBurst / 2
	}
	o.LoginReserve = min(o.LoginReserve, o.RateBurst-1)
	if o.Budget == nil {
		o.Budget = NewLocalBudget(o.RatePerSecond, o.RateBurst, o.Now)
	}
	if o.AccountCacheTTL == 0 {
		o.AccountCacheTTL = 5 * time.Minute
	}
}

// newAPIs builds the two Management API clients, m.api for the jobs and
// m.lookup for HasAccount, each behind its own pacer; ctx is NewMirror's.
func (m *Mirror) newAPIs(ctx context.Context) error {
	o := m.o
	base := o.HTTPClient.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	// The token request does not see the calls' contexts (oauth2 asks its
	// TokenSource without one), so its own client bounds it.
	tokenTimeout := mirrorTokenTimeout
	if t := o.HTTPClient.Timeout; t > 0 && t < tokenTimeout {
		tokenTimeout = t
	}
	tokenCtx := context.WithValue(context.WithoutCancel(ctx), oauth2.HTTPClient,
		&http.Client{Transport: base, Timeout: tokenTimeout})
	var err error
	// Jobs leave LoginReserve permits; a job's call waits in line for a
	// permit up to maxPacedWait, then the job goes back to the queue.
	jobs := &pacer{base: base, m: m, reserve: o.LoginReserve, maxWait: maxPacedWait}
	if m.api, err = newManagementAPI(tokenCtx, o, jobs); err != nil { // go-auth0's default: 429 retried twice
		return err
	}
	// The lookup may take the whole burst; it waits for a permit up to
	// maxLookupWait (a refill, not a pause: it is on the login path).
	if m.lookup, err = newManagementAPI(tokenCtx, o, &pacer{base: base, m: m, maxWait: maxLookupWait}, management.WithNoRetries()); err != nil {
		return err
	}
	return nil
}

// newManagementAPI builds one Management API client for o.Domain whose
// calls go through pace and whose token is fetched within tokenCtx.
func newManagementAPI(tokenCtx context.Context, o MirrorOptions, pace *pacer, extra ...management.Option) (*management.Management, error) {
	var opts []management.Option
	if o.Insecure {
		opts = append(opts, management.WithInsecure()) // before the credentials: it sets a static token
	}
	opts = append(opts,
		management.WithClientCredentials(tokenCtx, o.ClientID, o.ClientSecret),
		management.WithClient(&http.Client{
			Transport: pace, Timeout: o.HTTPClient.Timeout,
			CheckRedirect: o.HTTPClient.CheckRedirect,
		}),
	)
	api, err := management.New(o.Domain, append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("auth0 mirror: %w", err)
	}
	return api, nil
}

// --- lookups on the login path ---

// ErrMirrorRateLimited: HasAccount did not ask because Auth0 asked us to wait.
var ErrMirrorRateLimited = errors.New("auth0 mirror: rate limited by Auth0; not asking")

// HasAccount reports whether Auth0 knows an account (any connection) with
// this email, through users-by-email. It answers within a few seconds or
// with an error, on which the caller should carry on without the answer.
//
// users-by-email is case-sensitive: Auth0 stores database-connection emails
// lowercased and social or enterprise ones as the provider gave them
// (https://auth0.com/docs/api/management/v2/users-by-email/get-users-by-email),
// so it asks for the email as invited and, when that differs, lowercased.
func (m *Mirror) HasAccount(ctx context.Context, email string) (bool, error) {
	email = strings.TrimSpace(email)
	if email == "" {
		return false, errors.New("auth0 mirror: has account: empty email")
	}
	if m.knownAccount(email) {
		return true, nil
	}
	ctx, cancel := context.WithTimeout(ctx, mirrorLookupBudget)
	defer cancel()
	found, err := m.usersByEmail(ctx, email)
	if err == nil && !found && grants.EmailKey(email) != email {
		found, err = m.usersByEmail(ctx, grants.EmailKey(email))
	}
	if found {
		m.rememberAccount(email)
	}
	return found, err
}

// maxCachedAccounts bounds the positive HasAccount cache.
const maxCachedAccounts = 10000

func (m *Mirror) knownAccount(email string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	until, ok := m.accounts[email]
	return ok && m.o.Now().Before(until)
}

func (m *Mirror) rememberAccount(email string) {
	if m.o.AccountCacheTTL <= 0 {
		return
	}
	now := m.o.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.accounts) >= maxCachedAccounts {
		for k, until := range m.accounts {
			if !now.Before(until) {
				delete(m.accounts, k)
			}
		}
		if len(m.accounts) >= maxCachedAccounts {
			clear(m.accounts) // all fresh: start over rather than grow
		}
	}
	m.accounts[email] = now.Add(m.o.AccountCacheTTL)
}

// usersByEmail asks users-by-email for exactly this email.
func (m *Mirror) usersByEmail(ctx context.Context, email string) (bool, error) {
	if m.o.Now().Before(m.pausedUntil()) {
		return false, ErrMirrorRateLimited
	}
	type result struct {
		n   int
		err error
	}
	// The token fetch ignores ctx; never wait for it longer than the budget.
	ch := make(chan result, 1)
	go func() {
		users, err := m.lookup.User.ListByEmail(ctx, email, management.IncludeFields("user_id"))
		ch <- result{len(users), err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			if _, paced := pacedUntil(r.err); paced {
				return false, ErrMirrorRateLimited
			}
			return false, fmt.Errorf("auth0 mirror: users-by-email: %w", r.err)
		}
		return r.n > 0, nil
	case <-ctx.Done():
		return false, fmt.Errorf("auth0 mirror: users-by-email: %w", ctx.Err())
	}
}

// --- enqueueing ---

// mirrorPayload is a stored job.
type mirrorPayload struct {
	Op           string `json:"op"` // redeem, revoke
	UpstreamUser string `json:"upstream_user"`
	// UsherUser: whose grant the job follows; a redemption mirrors only what
	// the grant still holds, a revocation leaves what it holds again.
	UsherUser string `json:"usher_user,omitempty"`
	// redeem
	InvitationID string         `json:"invitation_id,omitempty"`
	Roles        []string       `json:"roles,omitempty"`
	Claims       map[string]any `json:"claims,omitempty"`
	// revoke
	Role     string `json:"role,omitempty"`
	ClaimKey string `json:"claim_key,omitempty"`

	// Set while a job runs (linked.go): the primary Auth0 user UpstreamUser
	// was linked into, and the lease held on it.
	linkedTo     string
	primaryLease *grants.Job
}

const (
	opRedeem = "redeem"
	opRevoke = "revoke"
)

// EnqueueRedemption queues the mirroring of a redeemed invitation onto the
// Auth0 user upstreamUserID outside the outbox (for tools and tests): it
// hands Consume a redeemed event of its own. See Consume for what the job
// writes.
func (m *Mirror) EnqueueRedemption(ctx context.Context, upstreamUserID string, inv *grants.Invitation) error {
	if inv == nil || inv.ID == "" {
		return errors.New("auth0 mirror: enqueue redemption: invitation without id")
	}
	if upstreamUserID == "" {
		return fmt.Errorf("auth0 mirror: enqueue redemption of %s: empty upstream user id", inv.ID)
	}
	return m.Consume(ctx, inv, grants.OutboxEvent{ID: "evt_" + outbox.RandomHex(12), Type: grants.EventInvitationRedeemed,
		At: m.o.Now(), UpstreamUser: upstreamUserID})
}

// EnqueueRevocation queues the removal of a role (Auth0 role and
// app_metadata.usher.roles entry) and/or a claim key (from
// app_metadata.usher.claims) from the Auth0 user upstreamUserID.
func (m *Mirror) EnqueueRevocation(ctx context.Context, upstreamUserID string, role string, claimKey string) error {
	if upstreamUserID == "" {
		return errors.New("auth0 mirror: enqueue revocation: empty upstream user id")
	}
	if role == "" && claimKey == "" {
		return errors.New("auth0 mirror: enqueue revocation: neither role nor claim key")
	}
	p := mirrorPayload{Op: opRevoke, UpstreamUser: upstreamUserID, Role: role, ClaimKey: claimKey}
	if err := m.enqueue(ctx, p, m.o.Now()); err != nil {
		return fmt.Errorf("auth0 mirror: enqueue revocation for %s: %w", upstreamUserID, err)
	}
	return nil
}

func (m *Mirror) enqueue(ctx context.Context, p mirrorPayload, now time.Time) error {
	payload, err := json.Marshal(p)
	if err != nil {
		return err
	}
	job := &grants.Job{ID: "auth0_" + outbox.RandomHex(16), Kind: JobKindMirror, Payload: payload, RunAt: now, CreatedAt: now}
	if err := m.o.Store.EnqueueJob(ctx, job); err != nil {
		return err
	}
	m.log.Info("auth0 update queued", "job_id", job.ID, "op", p.Op, "upstream_user", p.UpstreamUser, "invitation_id", p.InvitationID)
	m.loop.Poke()
	return nil
}

// QueueDepth counts queued mirror jobs, for metrics.
func (m *Mirror) QueueDepth(ctx context.Context) (int, error) {
	return m.o.Store.JobCount(ctx, JobKindMirror)
}

// --- status ---

// Status is the mirror status of an invitation: "" when it was never
// queued, "pending", "synced" or "failed: reason".
func (m *Mirror) Status(ctx context.Context, invitationID string) (string, error) {
	inv, err := m.o.Store.GetInvitation(ctx, invitationID)
	if err != nil {
		return "", err
	}
	return upstream.MirrorStateOf(inv).String(), nil
}

// --- the worker ---

// --- errors ---

// --- the Auth0 side ---
