package grants

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	WebhookUserCreated        = "user.created"
	WebhookGrantChanged       = "grant.changed"
)

// WebhookEventTypes lists every event type usher emits.
var WebhookEventTypes = []string{
	WebhookInvitationCreated, WebhookInvitationRedeemed, WebhookInvitationRevoked,
	WebhookInvitationDeclined, WebhookInvitationExpired, WebhookUserCreated, WebhookGrantChanged,
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
	Store     Store
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
	// two attempts at once. Its runner reschedules or completes the lane.
	running sync.Map

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
	expireSweepEvery = time.Minute
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
	w := &Webhooks{o: o, log: o.Logger.With("component", "webhooks"), endpoints: map[string]*webhookEndpoint{}, wake: make(chan struct{}, 1)}
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

// decodeWebhookSecret returns the key bytes of a "whsec_<base64>" secret.
func decodeWebhookSecret(s string) ([]byte, error) {
	b64, ok := strings.CutPrefix(s, "whsec_")
	if !ok {
		return nil, errors.New(`must start with "whsec_"`)
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		if key, err = base64.RawStdEncoding.DecodeString(b64); err != nil {
			return nil, errors.New(`must be "whsec_" followed by base64`)
		}
	}
	if len(key) < 24 || len(key) > 64 {
		return nil, fmt.Errorf("must encode 24 to 64 bytes, not %d", len(key))
	}
	return key, nil
}

// SignWebhook returns the webhook-signature header value for a message: one
// "v1,<base64>" per secret, space-separated.
func SignWebhook(secrets []string, id string, ts time.Time, body []byte) (string, error) {
	keys := make([][]byte, 0, len(secrets))
	for i, s := range secrets {
		k, err := decodeWebhookSecret(s)
		if err != nil {
			return "", fmt.Errorf("webhooks: secrets[%d]: %w", i, err)
		}
		keys = append(keys, k)
	}
	return signWebhook(keys, id, ts.Unix(), body), nil
}

func signWebhook(keys [][]byte, id string, ts int64, body []byte) string {
	sigs := make([]string, len(keys))
	for i, k := range keys {
		m := hmac.New(sha256.New, k)
		m.Write([]byte(id))
		m.Write([]byte{'.'})
		m.Write([]byte(strconv.FormatInt(ts, 10)))
		m.Write([]byte{'.'})
		m.Write(body)
		sigs[i] = "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
	}
	return strings.Join(sigs, " ")
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

// stamp orders events: the emit time in ns, strictly increasing within this
// process (for idempotent events, exactly their timestamp).
// A zero t means now, read under the lock so stamps follow the clock.
func (w *Webhooks) stamp(t time.Time, exact bool) int64 {
	if exact {
		return t.UnixNano()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if t.IsZero() {
		t = w.o.Now()
	}
	n := t.UnixNano()
	if n <= w.lastStamp {
		n = w.lastStamp + 1
	}
	w.lastStamp = n
	return n
}

func orderingKey(e WebhookEvent, eventID string) string {
	for _, k := range []string{"invitation_id", "user_id"} {
		if v, ok := e.Data[k].(string); ok && v != "" {
			return k + ":" + v
		}
	}
	return "event:" + eventID
}

func eventIDOf(e WebhookEvent) string {
	if e.ID != "" {
		return e.ID
	}
	return randomHex(16)
}

// Emit stores one delivery per subscribed endpoint and wakes the worker. The
// body is fixed now; the webhook-id is fixed per (event, endpoint). Events
// with the same invitation id (else user id) reach an endpoint in emit order.
func (w *Webhooks) Emit(ctx context.Context, e WebhookEvent) error {
	if !slices.Contains(WebhookEventTypes, e.Type) {
		return fmt.Errorf("webhooks: emit: unknown event type %q", e.Type)
	}
	if e.ID != "" && !eventIDRe.MatchString(e.ID) {
		return fmt.Errorf("webhooks: emit %s: invalid event id", e.Type)
	}
	now := w.o.Now()
	exact := e.ID != ""
	if exact && e.Timestamp.IsZero() {
		// The ordering stamp and the log record's ID derive from it.
		return fmt.Errorf("webhooks: emit %s: an event with an ID needs its Timestamp", e.Type)
	}
	stamp := w.stamp(e.Timestamp, exact)
	if e.Timestamp.IsZero() {
		e.Timestamp = time.Unix(0, stamp)
	}
	createdAt := now
	if !exact {
		createdAt = time.Unix(0, stamp).UTC() // the log's order and created_at agree
	}
	data := e.Data
	if data == nil {
		data = map[string]any{}
	}
	body, err := json.Marshal(struct {
		Type      string         `json:"type"`
		Timestamp time.Time      `json:"timestamp"`
		Data      map[string]any `json:"data"`
	}{e.Type, e.Timestamp.UTC(), data})
	if err != nil {
		return fmt.Errorf("webhooks: emit %s: %w", e.Type, err)
	}
	if len(body) > webhookBodyLimit {
		return fmt.Errorf("webhooks: emit %s: body of %d bytes is over %d", e.Type, len(body), webhookBodyLimit)
	}
	eventID := eventIDOf(e)
	key := orderingKey(e, eventID)
	var errs []error
	queued := false
	for _, id := range w.order {
		ep := w.endpoints[id]
		if ep.events != nil && !ep.events[e.Type] {
			continue
		}
		webhookID := "msg_" + hash32(eventID, id)
		rec := logRecord{WebhookID: webhookID, Endpoint: id, EventType: e.Type, CreatedAt: createdAt, Body: body}
		logID := fmt.Sprintf("whlog_%016x_%s", ^uint64(stamp), webhookID) // newest first
		ev := laneEvent{WebhookID: webhookID, Endpoint: id, EventType: e.Type, LogID: logID, Body: body, QueuedAt: now,
			Prior: webhookState{Status: DeliveryPending}}
		eventJobID := fmt.Sprintf("whevt_%016x_%s", uint64(stamp), webhookID) // oldest first
		ok, err := w.queue(ctx, rec, logID, ev, eventJobID, hash32(id, key), e.ID != "")
		if err != nil {
			errs = append(errs, fmt.Errorf("endpoint %q: %w", id, err))
			continue
		}
		if ok {
			queued = true
			w.log.DebugContext(ctx, "webhook queued", "endpoint", id, "webhook_id", webhookID, "event_type", e.Type)
		}
	}
	if queued {
		w.poke()
	}
	if len(errs) > 0 {
		return fmt.Errorf("webhooks: emit %s: %w", e.Type, errors.Join(errs...))
	}
	return nil
}

// queue stores a delivery: its log record (if new), its lane event, then the
// lane job. With idempotent set, an existing log record means an earlier
// Emit of the same event already queued it: nothing more is stored.
func (w *Webhooks) queue(ctx context.Context, rec logRecord, logID string, ev laneEvent, eventJobID, lane string, idempotent bool) (bool, error) {
	if rec.Body != nil {
		payload, _ := json.Marshal(rec)
		err := w.o.Store.EnqueueJob(ctx, &Job{ID: logID, Kind: logKindPrefix + rec.Endpoint, Payload: payload,
			RunAt: parkedAt, CreatedAt: rec.CreatedAt, LastError: webhookState{Status: DeliveryPending}.encode()})
		if errors.Is(err, ErrConflict) && idempotent {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("store delivery log record: %w", err)
		}
	}
	payload, _ := json.Marshal(ev)
	if err := w.o.Store.EnqueueJob(ctx, &Job{ID: eventJobID, Kind: laneKindPrefix + lane, Payload: payload,
		RunAt: parkedAt, CreatedAt: ev.QueuedAt}); err != nil && !errors.Is(err, ErrConflict) {
		return false, fmt.Errorf("store event: %w", err)
	}
	if err := w.enqueueLane(ctx, lane, ev.Endpoint); err != nil {
		return false, err
	}
	return true, nil
}

func (w *Webhooks) enqueueLane(ctx context.Context, lane, endpoint string) error {
	payload, _ := json.Marshal(lanePayload{Lane: lane, Endpoint: endpoint})
	now := w.o.Now()
	err := w.o.Store.EnqueueJob(ctx, &Job{ID: "whlane_" + lane, Kind: JobKindWebhook, Payload: payload, RunAt: now, CreatedAt: now})
	if err != nil && !errors.Is(err, ErrConflict) { // conflict: the lane is already queued
		return fmt.Errorf("store lane: %w", err)
	}
	return nil
}

func (w *Webhooks) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// peek reads parked jobs of kind in ID order.
func (w *Webhooks) peek(ctx context.Context, kind string, limit int) ([]Job, error) {
	return w.o.Store.PeekJobs(ctx, kind, limit)
}

// QueueDepth counts lanes with undelivered events (for metrics).
func (w *Webhooks) QueueDepth(ctx context.Context) (int, error) {
	return w.o.Store.JobCount(ctx, JobKindWebhook)
}

// Run delivers until ctx ends. It wakes on Emit, for its own retries when they
// fall due and otherwise every PollInterval; it runs ExpireSweep every minute
// and trims the delivery log every hour.
func (w *Webhooks) Run(ctx context.Context) {
	w.log.Info("webhook worker started", "endpoints", len(w.order))
	defer w.log.Info("webhook worker stopped")
	var lanes sync.WaitGroup
	defer lanes.Wait()
	timer := time.NewTimer(0)
	defer timer.Stop()
	var lastSweep, lastPrune time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		case <-timer.C:
		}
		if now := time.Now(); now.Sub(lastSweep) >= expireSweepEvery {
			lastSweep = now
			if err := w.ExpireSweep(ctx); err != nil && ctx.Err() == nil {
				w.log.Error("invitation expiry sweep", "error", err)
			}
		}
		if now := time.Now(); now.Sub(lastPrune) >= logPruneEvery {
			lastPrune = now
			w.pruneLogs(ctx)
		}
		w.drain(ctx, &lanes)
		if ctx.Err() != nil {
			return
		}
		timer.Reset(w.nextWait())
	}
}

func (w *Webhooks) nextWait() time.Duration {
	wait := w.o.PollInterval
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.nextRetry.IsZero() {
		d := w.nextRetry.Sub(w.o.Now())
		if d < wait {
			wait = max(d, 0)
		}
		if d <= w.o.PollInterval {
			w.nextRetry = time.Time{}
		}
	}
	return wait
}

func (w *Webhooks) noteRetry(at time.Time) {
	w.mu.Lock()
	if w.nextRetry.IsZero() || at.Before(w.nextRetry) {
		w.nextRetry = at
	}
	w.mu.Unlock()
}

func (w *Webhooks) lease() time.Duration { return laneBudget + w.o.Timeout + time.Minute }

// drain claims due lanes while fewer than webhookWorkers are in flight and
// works each in its own goroutine: a slow endpoint holds up its own lanes
// only. A finished lane wakes Run to claim more.
func (w *Webhooks) drain(ctx context.Context, wg *sync.WaitGroup) {
	for ctx.Err() == nil {
		free := webhookWorkers - int(w.inflight.Load())
		if free <= 0 {
			return
		}
		lanes, err := w.o.Store.ClaimJobs(ctx, JobKindWebhook, w.o.Now(), free, w.lease())
		if err != nil {
			if ctx.Err() == nil {
				w.log.Error("claim webhook lanes", "error", err)
			}
			return
		}
		for i := range lanes {
			if _, busy := w.running.LoadOrStore(lanes[i].ID, true); busy {
				continue
			}
			w.inflight.Add(1)
			wg.Go(func() {
				defer func() { w.inflight.Add(-1); w.poke() }()
				handBack := w.runLane(ctx, &lanes[i])
				// Not running any more before the lane is handed back: a
				// claim after the hand-back is the lane's next turn.
				w.running.Delete(lanes[i].ID)
				handBack()
			})
		}
		if len(lanes) < free {
			return
		}
	}
}

// runLane delivers a lane's events in order while it holds the lane's
// lease; it returns the hand-back (reschedule or complete the lane), which
// the caller runs once the lane is no longer marked running.
func (w *Webhooks) runLane(ctx context.Context, lane *Job) (handBack func()) {
	bg := context.WithoutCancel(ctx)
	var lp lanePayload
	if err := json.Unmarshal(lane.Payload, &lp); err != nil || lp.Lane == "" {
		w.log.Error("dropping malformed webhook lane", "job_id", lane.ID, "error", err)
		return func() { w.completeJob(bg, lane.ID) }
	}
	log := w.log.With("endpoint", lp.Endpoint, "lane", lp.Lane)
	kind := laneKindPrefix + lp.Lane
	retry := func(at time.Time, reason string) func() {
		return func() { w.retryLane(bg, log, lane.ID, at, reason) }
	}
	started := time.Now()
	for {
		if ctx.Err() != nil {
			return retry(w.o.Now(), "interrupted by shutdown")
		}
		if time.Since(started) > laneBudget {
			return func() { w.retryLane(bg, log, lane.ID, w.o.Now(), ""); w.poke() }
		}
		events, err := w.peek(ctx, kind, 1)
		if err != nil {
			if ctx.Err() == nil {
				log.Error("read webhook lane", "error", err)
			}
			at := w.o.Now().Add(w.o.BaseBackoff)
			w.noteRetry(at)
			return retry(at, shortReason("read lane: "+err.Error()))
		}
		if len(events) == 0 {
			return func() { w.finishLane(bg, log, lane.ID, lp) }
		}
		retryAt, done := w.deliver(ctx, log, &events[0])
		if !done {
			if ctx.Err() != nil {
				return retry(w.o.Now(), "interrupted by shutdown")
			}
			w.noteRetry(retryAt)
			return retry(retryAt, "")
		}
	}
}

// finishLane completes an empty lane. An Emit may have stored an event after
// the lane was read empty and found the lane job still there: look again.
func (w *Webhooks) finishLane(ctx context.Context, log *slog.Logger, id string, lp lanePayload) {
	w.completeJob(ctx, id)
	if n, err := w.o.Store.JobCount(ctx, laneKindPrefix+lp.Lane); err != nil || n > 0 {
		if err := w.enqueueLane(ctx, lp.Lane, lp.Endpoint); err != nil {
			log.Error("requeue webhook lane", "error", err)
		}
		w.poke()
	}
}

func (w *Webhooks) retryLane(ctx context.Context, log *slog.Logger, id string, at time.Time, reason string) {
	if err := w.o.Store.RetryJob(ctx, id, at, reason); err != nil {
		log.Error("reschedule webhook lane", "error", err)
	}
}

func (w *Webhooks) completeJob(ctx context.Context, id string) {
	if err := w.o.Store.CompleteJob(ctx, id); err != nil && !errors.Is(err, ErrNotFound) {
		w.log.Error("complete webhook job", "job_id", id, "error", err)
	}
}

// deliver makes one attempt at a lane's head event. done: the event is
// finished (delivered or given up) and the next one may go; otherwise the
// lane waits until retryAt.
func (w *Webhooks) deliver(ctx context.Context, log *slog.Logger, job *Job) (retryAt time.Time, done bool) {
	bg := context.WithoutCancel(ctx)
	var ev laneEvent
	if err := json.Unmarshal(job.Payload, &ev); err != nil || ev.WebhookID == "" {
		log.Error("dropping malformed webhook event", "job_id", job.ID, "error", err)
		w.completeJob(bg, job.ID)
		return time.Time{}, true
	}
	log = log.With("webhook_id", ev.WebhookID, "event_type", ev.EventType)
	st, ok := decodeState(job.LastError)
	if !ok {
		st = ev.Prior
		st.Status = DeliveryPending
	}
	ep := w.endpoints[ev.Endpoint]
	if ep == nil {
		st.Status, st.LastError = DeliveryFailed, "endpoint no longer configured"
		w.setLog(bg, log, ev.LogID, st)
		w.completeJob(bg, job.ID)
		log.Warn("webhook given up: endpoint no longer configured")
		return time.Time{}, true
	}

	start := w.o.Now()
	t0 := time.Now()
	code, err := w.send(ctx, ep, &ev)
	if err != nil && ctx.Err() != nil {
		return time.Time{}, false // shutdown: not an attempt
	}
	now := w.o.Now()
	att := WebhookAttempt{At: start, StatusCode: code, DurationMS: time.Since(t0).Milliseconds()}
	if err != nil {
		att.Error = shortReason(err.Error())
	}
	st.Attempts++
	st.LastAttemptAt, st.LastStatusCode, st.LastError = start, code, att.Error
	st.History = append(st.History, att)
	if n := len(st.History) - webhookHistory; n > 0 {
		st.History = slices.Clone(st.History[n:])
	}
	if err == nil {
		st.Status = DeliveryDelivered
		w.setLog(bg, log, ev.LogID, st)
		w.completeJob(bg, job.ID)
		log.Info("webhook delivered", "attempts", st.Attempts, "status_code", code)
		return time.Time{}, true
	}
	deadline := ev.QueuedAt.Add(w.o.MaxAge)
	if !now.Before(deadline) {
		st.Status = DeliveryFailed
		w.setLog(bg, log, ev.LogID, st)
		w.completeJob(bg, job.ID)
		log.Error("webhook given up", "attempts", st.Attempts, "error", err, "queued_at", ev.QueuedAt)
		return time.Time{}, true
	}
	st.Status = DeliveryPending
	w.setLog(bg, log, ev.LogID, st)
	if err := w.o.Store.RetryJob(bg, job.ID, parkedAt, st.encode()); err != nil {
		log.Error("record webhook attempt", "error", err)
	}
	at := now.Add(backoff(w.o.BaseBackoff, st.Attempts-ev.Prior.Attempts))
	if at.After(deadline) {
		at = deadline // one last try at the deadline
	}
	log.Warn("webhook failed; will retry", "attempts", st.Attempts, "error", err, "retry_at", at)
	return at, false
}

// setLog rewrites a delivery log record's state.
func (w *Webhooks) setLog(ctx context.Context, log *slog.Logger, logID string, st webhookState) {
	if err := w.o.Store.RetryJob(ctx, logID, parkedAt, st.encode()); err != nil {
		if errors.Is(err, ErrNotFound) {
			log.Warn("webhook delivery log record is gone (trimmed?)", "log_id", logID)
			return
		}
		log.Error("update webhook delivery log", "error", err)
	}
}

// send POSTs the event once. A non-2xx answer is an error with its code.
func (w *Webhooks) send(ctx context.Context, ep *webhookEndpoint, ev *laneEvent) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, w.o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.URL, bytes.NewReader(ev.Body))
	if err != nil {
		return 0, err
	}
	ts := w.o.Now().Unix()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "usher-webhooks")
	req.Header.Set("webhook-id", ev.WebhookID)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("webhook-signature", signWebhook(ep.keys, ev.WebhookID, ts, ev.Body))
	resp, err := w.o.HTTPClient.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return 0, fmt.Errorf("no answer within %s", w.o.Timeout)
		}
		var ue *url.Error
		if errors.As(err, &ue) { // its message repeats the URL
			return 0, ue.Err
		}
		return 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, fmt.Errorf("answered HTTP %d", resp.StatusCode)
	}
	return resp.StatusCode, nil
}

// Deliveries lists an endpoint's deliveries, newest event first (limit:
// default 50, at most 1000). ErrNotFound for an endpoint that is not configured.
func (w *Webhooks) Deliveries(ctx context.Context, endpointID string, limit int) ([]WebhookDelivery, error) {
	if w.endpoints[endpointID] == nil {
		return nil, fmt.Errorf("webhooks: endpoint %q: %w", endpointID, ErrNotFound)
	}
	if limit <= 0 {
		limit = 50
	}
	limit = min(limit, 1000)
	jobs, err := w.peek(ctx, logKindPrefix+endpointID, limit)
	if err != nil {
		return nil, fmt.Errorf("webhooks: read delivery log of %q: %w", endpointID, err)
	}
	out := make([]WebhookDelivery, 0, len(jobs))
	for i := range jobs {
		if d, ok := deliveryOf(&jobs[i]); ok {
			out = append(out, d)
		}
	}
	return out, nil
}

func deliveryOf(j *Job) (WebhookDelivery, bool) {
	var rec logRecord
	if json.Unmarshal(j.Payload, &rec) != nil || rec.WebhookID == "" {
		return WebhookDelivery{}, false
	}
	st, _ := decodeState(j.LastError)
	return WebhookDelivery{
		ID: rec.WebhookID, Endpoint: rec.Endpoint, EventType: rec.EventType, Status: st.Status,
		Attempts: st.Attempts, LastStatusCode: st.LastStatusCode, LastError: st.LastError,
		CreatedAt: rec.CreatedAt, LastAttemptAt: st.LastAttemptAt, Payload: rec.Body, History: st.History,
	}, true
}

// Redeliver queues a delivered or failed delivery again, with the same
// webhook-id and body (receivers dedupe on the id). ErrNotFound if the log
// does not (or no longer) hold it, ErrDeliveryPending while it is still tried.
func (w *Webhooks) Redeliver(ctx context.Context, deliveryID string) error {
	if !webhookIDRe.MatchString(deliveryID) {
		return fmt.Errorf("webhooks: redeliver %q: %w", clipStr(deliveryID, 80), ErrNotFound)
	}
	for _, id := range w.order {
		jobs, err := w.peek(ctx, logKindPrefix+id, w.o.LogRetain+logPruneSlack)
		if err != nil {
			return fmt.Errorf("webhooks: redeliver %s: read log of %q: %w", deliveryID, id, err)
		}
		for i := range jobs {
			if !strings.HasSuffix(jobs[i].ID, "_"+deliveryID) {
				continue
			}
			d, ok := deliveryOf(&jobs[i])
			if !ok || d.ID != deliveryID {
				continue
			}
			return w.redeliver(ctx, &jobs[i], d)
		}
	}
	return fmt.Errorf("webhooks: redeliver %s: %w", deliveryID, ErrNotFound)
}

func (w *Webhooks) redeliver(ctx context.Context, logJob *Job, d WebhookDelivery) error {
	st, _ := decodeState(logJob.LastError)
	if st.Status == DeliveryPending {
		return fmt.Errorf("webhooks: redeliver %s: %w", d.ID, ErrDeliveryPending)
	}
	now := w.o.Now()
	st.Status = DeliveryPending
	if err := w.o.Store.RetryJob(ctx, logJob.ID, parkedAt, st.encode()); err != nil {
		return fmt.Errorf("webhooks: redeliver %s: %w", d.ID, err)
	}
	var body map[string]any
	_ = json.Unmarshal(d.Payload, &body)
	data, _ := body["data"].(map[string]any)
	key := orderingKey(WebhookEvent{Data: data}, d.ID)
	ev := laneEvent{WebhookID: d.ID, Endpoint: d.Endpoint, EventType: d.EventType, LogID: logJob.ID, Body: d.Payload,
		QueuedAt: now, Prior: st}
	eventJobID := fmt.Sprintf("whevt_%016x_%s_%s", uint64(w.stamp(now, false)), d.ID, randomHex(4))
	if _, err := w.queue(ctx, logRecord{Endpoint: d.Endpoint}, "", ev, eventJobID, hash32(d.Endpoint, key), false); err != nil {
		return fmt.Errorf("webhooks: redeliver %s: %w", d.ID, err)
	}
	w.log.InfoContext(ctx, "webhook redelivery queued", "endpoint", d.Endpoint, "webhook_id", d.ID)
	w.poke()
	return nil
}

// pruneLogs trims each endpoint's delivery log to LogRetain deliveries,
// keeping pending ones.
func (w *Webhooks) pruneLogs(ctx context.Context) {
	for _, id := range w.order {
		for ctx.Err() == nil {
			jobs, err := w.peek(ctx, logKindPrefix+id, w.o.LogRetain+logPruneSlack)
			if err != nil {
				w.log.Error("read webhook delivery log", "endpoint", id, "error", err)
				break
			}
			removed := 0
			for i := w.o.LogRetain; i < len(jobs); i++ {
				if st, _ := decodeState(jobs[i].LastError); st.Status == DeliveryPending {
					continue
				}
				if err := w.o.Store.CompleteJob(ctx, jobs[i].ID); err == nil {
					removed++
				}
			}
			if len(jobs) < w.o.LogRetain+logPruneSlack || removed == 0 {
				break
			}
		}
	}
}

// ExpireSweep finds pending invitations past their expiry without an
// "expired" timeline event for that expiry, emits invitation.expired and then
// appends the event. The emit is idempotent (its ID is derived from the
// invitation and its expiry), so a sweep that crashes between the two steps,
// or two replicas sweeping at once, still deliver it once.
func (w *Webhooks) ExpireSweep(ctx context.Context) error {
	now := w.o.Now()
	cursor := ""
	for {
		invs, next, err := w.o.Store.ListInvitations(ctx, InvitationFilter{Status: StatusExpired, Limit: 500, Cursor: cursor}, now)
		if err != nil {
			return fmt.Errorf("webhooks: expiry sweep: %w", err)
		}
		for i := range invs {
			if err := ctx.Err(); err != nil {
				return err
			}
			inv := &invs[i]
			if expiryNoted(inv) || inv.EffectiveStatus(now) != StatusExpired {
				continue
			}
			if err := w.Emit(ctx, InvitationExpiredEvent(inv)); err != nil {
				w.log.ErrorContext(ctx, "emit invitation.expired", "invitation_id", inv.ID, "error", err)
				continue // not marked: the next sweep tries again
			}
			expiresAt := inv.ExpiresAt
			_, err := w.o.Store.UpdateInvitation(ctx, inv.ID, func(i *Invitation) error {
				if expiryNoted(i) || !i.ExpiresAt.Equal(expiresAt) || i.EffectiveStatus(now) != StatusExpired {
					return errSkipUpdate
				}
				i.Events = append(i.Events, Event{Type: "expired", At: i.ExpiresAt})
				return nil
			})
			if err != nil && !errors.Is(err, errSkipUpdate) && !errors.Is(err, ErrNotFound) {
				w.log.ErrorContext(ctx, "note invitation expiry", "invitation_id", inv.ID, "error", err)
			}
		}
		if next == "" {
			return nil
		}
		cursor = next
	}
}

// expiryNoted: the timeline already has the "expired" event of the current
// expiry (a resend gives a new expiry, which expires anew).
func expiryNoted(inv *Invitation) bool {
	for _, e := range inv.Events {
		if e.Type == "expired" && e.At.Equal(inv.ExpiresAt) {
			return true
		}
	}
	return false
}

// Event constructors, so every caller sends the same data for a type.

func invitationData(inv *Invitation) map[string]any {
	d := map[string]any{
		"invitation_id": inv.ID,
		"email":         inv.Email,
		"roles":         nonNil(inv.Roles),
		"expires_at":    inv.ExpiresAt.UTC(),
	}
	if inv.ExternalID != "" {
		d["external_id"] = inv.ExternalID
	}
	if inv.ClientID != "" {
		d["client_id"] = inv.ClientID
	}
	if inv.Inviter != "" {
		d["inviter"] = inv.Inviter
	}
	if len(inv.Metadata) > 0 {
		d["metadata"] = inv.Metadata
	}
	return d
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// InvitationCreatedEvent is invitation.created.
func InvitationCreatedEvent(inv *Invitation) WebhookEvent {
	return idempotent(WebhookEvent{Type: WebhookInvitationCreated, Timestamp: inv.CreatedAt, Data: invitationData(inv)},
		"invitation.created:"+inv.ID)
}

// InvitationRedeemedEvent is invitation.redeemed for an invitation as
// RedeemInvitation returned it. signup: the redeemer's usher user was created
// by this sign-in. email and verified are what the upstream said about the
// redeemer; the outcome sent is "exact" (same address, verified), "domain"
// (same domain, verified) or "none" (allowed by the policy "any").
func InvitationRedeemedEvent(inv *Invitation, signup bool, email string, verified bool) WebhookEvent {
	d := invitationData(inv)
	d["user_id"] = inv.RedeemedBy
	d["connection"] = inv.RedeemedConnection
	d["signup"] = signup
	outcome := "none"
	switch {
	case verified && email != "" && SameEmail(email, inv.Email):
		outcome = "exact"
	case verified && emailDomain(email) != "" && emailDomain(email) == emailDomain(inv.Email):
		outcome = "domain"
	}
	d["email_match"] = map[string]any{"policy": inv.EmailMatch, "outcome": outcome}
	ts := time.Time{}
	if inv.RedeemedAt != nil {
		ts = *inv.RedeemedAt
	}
	return idempotent(WebhookEvent{Type: WebhookInvitationRedeemed, Timestamp: ts, Data: d}, "invitation.redeemed:"+inv.ID)
}

// InvitationRevokedEvent is invitation.revoked.
func InvitationRevokedEvent(inv *Invitation) WebhookEvent {
	ts := time.Time{}
	if inv.RevokedAt != nil {
		ts = *inv.RevokedAt
	}
	return idempotent(WebhookEvent{Type: WebhookInvitationRevoked, Timestamp: ts, Data: invitationData(inv)}, "invitation.revoked:"+inv.ID)
}

// InvitationDeclinedEvent is invitation.declined: the invitee pressed
// Decline on the accept page; user_id is the account they were signed in with.
func InvitationDeclinedEvent(inv *Invitation) WebhookEvent {
	d := invitationData(inv)
	ts := time.Time{}
	if inv.DeclinedAt != nil {
		ts = *inv.DeclinedAt
	}
	if inv.DeclinedBy != "" {
		d["user_id"] = inv.DeclinedBy
	}
	return idempotent(WebhookEvent{Type: WebhookInvitationDeclined, Timestamp: ts, Data: d}, "invitation.declined:"+inv.ID)
}

// idempotent gives e the ID when it has the timestamp that must come with one.
func idempotent(e WebhookEvent, id string) WebhookEvent {
	if !e.Timestamp.IsZero() {
		e.ID = id
	}
	return e
}

// InvitationExpiredEvent is invitation.expired (ExpireSweep sends it).
func InvitationExpiredEvent(inv *Invitation) WebhookEvent {
	return WebhookEvent{Type: WebhookInvitationExpired, Timestamp: inv.ExpiresAt, Data: invitationData(inv),
		ID: "invitation.expired:" + inv.ID + ":" + strconv.FormatInt(inv.ExpiresAt.UnixNano(), 10)}
}

// UserCreatedEvent is user.created; connection is the upstream connection
// of the sign-up ("" if unknown).
func UserCreatedEvent(u *User, connection string) WebhookEvent {
	d := map[string]any{"user_id": u.ID, "email": u.Email, "email_verified": u.EmailVerified}
	if u.Name != "" {
		d["name"] = u.Name
	}
	if connection != "" {
		d["connection"] = connection
	}
	return idempotent(WebhookEvent{Type: WebhookUserCreated, Timestamp: u.CreatedAt, Data: d}, "user.created:"+u.ID)
}

// GrantChangedEvent is grant.changed with the grant as it is now; reason
// says why (e.g. "invitation_redeemed", "default_roles", "role_removed",
// "claim_removed").
func GrantChangedEvent(g *Grant, reason string) WebhookEvent {
	claims := g.Claims
	if claims == nil {
		claims = map[string]any{}
	}
	return WebhookEvent{Type: WebhookGrantChanged, Timestamp: g.UpdatedAt, Data: map[string]any{
		"user_id": g.UserID, "roles": nonNil(g.Roles), "claims": claims,
		"invitations": nonNil(g.Invitations), "reason": reason,
	}}
}
