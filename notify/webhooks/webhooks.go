package webhooks

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/usher-oidc/usher/grants"
)

// Webhooks follow the Standard Webhooks specification
// (https://www.standardwebhooks.com): every delivery is a POST of the JSON
// body {"type","timestamp","data"} with the headers webhook-id (the same on
// every retry and redelivery, so receivers dedupe on it), webhook-timestamp
// (unix seconds of the attempt) and webhook-signature ("v1,<base64 HMAC-SHA256
// of id.timestamp.body>", one per secret, space-separated, so a receiver that
// knows either the old or the new secret accepts it during a rotation).
//
// How it is stored, with nothing but the job queue of Store:
//
//   - Lanes give the ordering. Every event belongs to a lane, one per
//     (endpoint, ordering key); the key is the invitation id, else the user
//     id, else the event itself. A lane's undelivered events are jobs of the
//     kind "webhook-lane:<lane>", parked (RunAt far in the future, never due)
//     and ordered by ID, which starts with the emit time. The lane itself is
//     one job of kind JobKindWebhook with a deterministic ID: it is the lock.
//     Whoever holds its lease delivers the lane's oldest event, and the next
//     one only once that one is delivered or given up; a failure reschedules
//     the lane job (backoff), so nothing behind it overtakes. When the lane
//     is empty its job is completed, then the lane is counted again and the
//     job re-enqueued if an event slipped in meanwhile (Emit stores the
//     event before it enqueues the lane job, so one of the two sees the
//     other).
//   - The delivery log is one parked job per delivery, of the kind
//     "webhook-log:<endpoint>", with an ID that sorts newest first. Its
//     payload (webhook-id, event type, body) never changes; its state
//     (status, attempts, last status code and error, the recent attempts) is
//     JSON kept in the job's LastError, rewritten in place with RetryJob.
//   - Parked jobs are read with Store.PeekJobs, which changes nothing.
//
// Delivery is at least once: a crash between a 2xx and the bookkeeping sends
// the same webhook-id again.

// JobKindWebhook is the job kind of webhook lanes (see above): JobCount of it
// is the number of (endpoint, ordering key) lanes with undelivered events.
const JobKindWebhook = "webhook"

// Webhook event types.
const (
	WebhookInvitationCreated  = "invitation.created"
	WebhookInvitationRedeemed = "invitation.redeemed"
	WebhookInvitationRevoked  = "invitation.revoked"
	WebhookInvitationDeclined = "invitation.declined"
	WebhookInvitationExpired  = "invitation.expired"
	// WebhookInvitationAwaitingVerification: accepted by an account whose
	// email matches but is not verified yet; redeemed once it is.
	WebhookInvitationAwaitingVerification = "invitation.awaiting_verification"
	WebhookUserCreated                    = "user.created"
	WebhookGrantChanged                   = "grant.changed"
	// WebhookUserErased: an operator erased the user; receivers erase
	// their copy (data: user_id only).
	WebhookUserErased = "user.erased"
)

// WebhookEventTypes lists every event type usher emits.
var WebhookEventTypes = []string{
	WebhookInvitationCreated, WebhookInvitationRedeemed, WebhookInvitationRevoked,
	WebhookInvitationDeclined, WebhookInvitationExpired, WebhookInvitationAwaitingVerification, WebhookUserCreated, WebhookGrantChanged, WebhookUserErased,
}

// Delivery statuses.
const (
	DeliveryPending   = "pending"
	DeliveryDelivered = "delivered"
	DeliveryFailed    = "failed"
)

// ErrDeliveryPending: a redelivery was asked for a delivery still being tried.
var ErrDeliveryPending = errors.New("delivery still pending")

// WebhookEndpoint is one receiver.
type WebhookEndpoint struct {
	// ID names the endpoint in the API and the logs: letters, digits, '.', '_', '-'.
	ID  string
	URL string
	// Secrets are "whsec_" + base64 of 24 to 64 random bytes. The first is
	// the current one; during a rotation a second one is given and every
	// message is signed with both.
	Secrets []string
	// Events the endpoint receives; empty means all.
	Events []string
}

// WebhookEvent is what happened. The body sent is {"type","timestamp","data"}.
type WebhookEvent struct {
	Type      string
	Timestamp time.Time // default: now
	Data      map[string]any
	// ID is optional. When set, it must be the same for the same happening
	// (e.g. "invitation.expired:<id>:<expiry>"): Emit then becomes
	// idempotent, so a retry after a crash does not deliver twice.
	ID string
}

// WebhooksOptions configures NewWebhooks.
type WebhooksOptions struct {
	Store     grants.Store
	Endpoints []WebhookEndpoint
	// HTTPClient sends the deliveries; by default one that does not follow
	// redirects (a 3xx is a failed delivery).
	HTTPClient *http.Client
	Now        func() time.Time
	Logger     *slog.Logger
	// PollInterval: how often the worker looks for due lanes when nothing
	// wakes it; default 1s.
	PollInterval time.Duration
	// BaseBackoff is the wait after an event's first failed attempt, doubled
	// per attempt and capped at an hour; default 5s.
	BaseBackoff time.Duration
	// MaxAge: an event is retried until this long after it was emitted (or
	// redelivered), then given up; default 24h.
	MaxAge time.Duration
	// Timeout bounds one delivery attempt; default 10s.
	Timeout time.Duration
	// Lease is how long a claimed lane is this process's before another
	// replica may take it; default laneBudget + Timeout + 1 min. Tests set
	// it short to see a killed replica's lane handed over: a lane is then
	// worked for at most half of it (one delivery may still run Timeout).
	Lease time.Duration
	// LogRetain is how many deliveries per endpoint the log keeps (pending
	// ones are always kept); default 1000.
	LogRetain int
}

// WebhookAttempt is one delivery attempt.
type WebhookAttempt struct {
	At         time.Time `json:"at"`
	StatusCode int       `json:"status_code,omitempty"`
	Error      string    `json:"error,omitempty"`
	DurationMS int64     `json:"duration_ms"`
}

// WebhookDelivery is one event sent (or being sent) to one endpoint.
type WebhookDelivery struct {
	ID             string           `json:"id"` // the webhook-id
	Endpoint       string           `json:"endpoint"`
	EventType      string           `json:"event_type"`
	Status         string           `json:"status"` // pending, delivered, failed
	Attempts       int              `json:"attempts"`
	LastStatusCode int              `json:"last_status_code,omitempty"`
	LastError      string           `json:"last_error,omitempty"`
	CreatedAt      time.Time        `json:"created_at"`
	LastAttemptAt  time.Time        `json:"last_attempt_at,omitzero"`
	Payload        json.RawMessage  `json:"payload"`
	History        []WebhookAttempt `json:"history,omitempty"` // the latest attempts, oldest first
}

// Webhooks queues events durably and delivers them in the background.
type Webhooks struct {
	o         WebhooksOptions
	log       *slog.Logger
	endpoints map[string]*webhookEndpoint
	order     []string // endpoint IDs in configuration order
	wake      chan struct{}

	inflight atomic.Int32 // lanes being worked by this process
	// running names the lane jobs this process is working. A lease can lapse
	// while its lane is still worked (a slow endpoint, a clock that jumps),
	// and the store then hands the same lane out again: within this process
	// that second claim is dropped, so one lane (and so one event) never has
	// two attempts at once, and its runner hands the lane back with that
	// newest claim.
	runningMu sync.Mutex
	running   map[string]*grants.Job

	mu        sync.Mutex
	nextRetry time.Time
	lastStamp int64
}

type webhookEndpoint struct {
	WebhookEndpoint
	keys   [][]byte
	events map[string]bool // nil: all
}

const (
	laneKindPrefix   = "webhook-lane:"
	logKindPrefix    = "webhook-log:"
	webhookWorkers   = 16          // lanes worked at once per process
	laneBudget       = time.Minute // then the lane is handed back, so others get a turn
	webhookHistory   = 20
	webhookBodyLimit = 64 << 10
	logPruneSlack    = 200
	logPruneEvery    = time.Hour
)

// parkedAt is the RunAt of jobs that are never due: lane events and log
// records. It is also the instant they are read at (see the package comment).
var parkedAt = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

var endpointIDRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
var eventIDRe = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,200}$`)
var webhookIDRe = regexp.MustCompile(`^msg_[0-9a-f]{32}$`)

// NewWebhooks checks the endpoints and fills in defaults. Errors name the
// endpoint and the field, never a secret.
func NewWebhooks(o WebhooksOptions) (*Webhooks, error) {
	if o.Store == nil {
		return nil, errors.New("webhooks: no store")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.PollInterval <= 0 {
		o.PollInterval = time.Second
	}
	if o.BaseBackoff <= 0 {
		o.BaseBackoff = 5 * time.Second
	}
	if o.MaxAge <= 0 {
		o.MaxAge = 24 * time.Hour
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.LogRetain <= 0 {
		o.LogRetain = 1000
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	w := &Webhooks{o: o, log: o.Logger.With("component", "webhooks"), endpoints: map[string]*webhookEndpoint{}, wake: make(chan struct{}, 1), running: map[string]*grants.Job{}}
	for i, e := range o.Endpoints {
		ep, err := checkEndpoint(e)
		if err != nil {
			name := e.ID
			if name == "" {
				name = "#" + strconv.Itoa(i+1)
			}
			return nil, fmt.Errorf("webhooks: endpoint %q: %w", name, err)
		}
		if w.endpoints[e.ID] != nil {
			return nil, fmt.Errorf("webhooks: endpoint %q: id: used by two endpoints", e.ID)
		}
		w.endpoints[e.ID] = ep
		w.order = append(w.order, e.ID)
	}
	return w, nil
}

func checkEndpoint(e WebhookEndpoint) (*webhookEndpoint, error) {
	if !endpointIDRe.MatchString(e.ID) {
		return nil, errors.New("id: must be 1 to 64 letters, digits, '.', '_' or '-'")
	}
	u, err := url.Parse(e.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, errors.New("url: must be an absolute http(s) URL")
	}
	if u.Fragment != "" {
		return nil, errors.New("url: must not have a #fragment")
	}
	if len(e.Secrets) == 0 || len(e.Secrets) > 2 {
		return nil, errors.New("secrets: give one secret, or two while rotating (the current one first)")
	}
	ep := &webhookEndpoint{WebhookEndpoint: e}
	for i, s := range e.Secrets {
		key, err := decodeWebhookSecret(s)
		if err != nil {
			return nil, fmt.Errorf("secrets[%d]: %w", i, err)
		}
		ep.keys = append(ep.keys, key)
	}
	if len(e.Events) > 0 {
		ep.events = map[string]bool{}
		for i, t := range e.Events {
			if !slices.Contains(WebhookEventTypes, t) {
				return nil, fmt.Errorf("events[%d]: unknown event type %q (known: %s)", i, t, strings.Join(WebhookEventTypes, ", "))
			}
			ep.events[t] = true
		}
	}
	return ep, nil
}

// Stored records.

type lanePayload struct {
	Lane     string `json:"lane"`
	Endpoint string `json:"endpoint"`
}

// laneEvent is one undelivered event of a lane; its state (webhookState, the
// whole delivery's so far) lives in the job's LastError.
type laneEvent struct {
	WebhookID string          `json:"webhook_id"`
	Endpoint  string          `json:"endpoint"`
	EventType string          `json:"event_type"`
	LogID     string          `json:"log_id"`
	Body      json.RawMessage `json:"body"`
	QueuedAt  time.Time       `json:"queued_at"` // MaxAge counts from here
	Prior     webhookState    `json:"prior"`     // the delivery's state when queued (redelivery)
	// Recheck: queued again for a log record that already existed (the
	// outbox handed the event over twice). Its first copy may have been
	// delivered, and its job completed, between the check here and this
	// copy's queueing; the lane looks at the log once more before sending.
	Recheck bool `json:"recheck,omitempty"`
}

// logRecord is a delivery log entry's fixed part; webhookState the rest.
type logRecord struct {
	WebhookID string          `json:"webhook_id"`
	Endpoint  string          `json:"endpoint"`
	EventType string          `json:"event_type"`
	CreatedAt time.Time       `json:"created_at"`
	Body      json.RawMessage `json:"body"`
}

type webhookState struct {
	Status         string           `json:"status"`
	Attempts       int              `json:"attempts"`
	LastStatusCode int              `json:"last_status_code,omitempty"`
	LastError      string           `json:"last_error,omitempty"`
	LastAttemptAt  time.Time        `json:"last_attempt_at,omitzero"`
	History        []WebhookAttempt `json:"history,omitempty"`
}

func (s webhookState) encode() string {
	b, _ := json.Marshal(s)
	return string(b)
}

func decodeState(s string) (webhookState, bool) {
	var st webhookState
	if s == "" || json.Unmarshal([]byte(s), &st) != nil || st.Status == "" {
		return webhookState{Status: DeliveryPending}, false
	}
	return st, true
}

func hash32(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// peek reads parked jobs of kind in ID order.
func (w *Webhooks) peek(ctx context.Context, kind string, limit int) ([]grants.Job, error) {
	return w.o.Store.PeekJobs(ctx, kind, limit)
}

// QueueDepth counts lanes with undelivered events (for metrics).
func (w *Webhooks) QueueDepth(ctx context.Context) (int, error) {
	return w.o.Store.JobCount(ctx, JobKindWebhook)
}
