package webhooks_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usher-oidc/usher/grants/outbox"

	"github.com/usher-oidc/usher/internal/testkit"

	"github.com/usher-oidc/usher/notify/webhooks"

	"github.com/usher-oidc/usher/grants"
	boltstore "github.com/usher-oidc/usher/store/bolt"
)

// ---- an independent Standard Webhooks receiver ----

var (
	errReplay   = errors.New("replayed webhook-id")
	errStale    = errors.New("timestamp outside the tolerance")
	errBadSig   = errors.New("no valid signature")
	errNoHeader = errors.New("missing webhook header")
)

// receiver verifies deliveries the way the spec tells a consumer to, with
// nothing from usher: it decodes the whsec_ secrets itself, recomputes the
// HMAC over "{id}.{timestamp}.{body}", compares in constant time, enforces a
// 5-minute timestamp tolerance and remembers the webhook-ids it processed.
type receiver struct {
	t    *testing.T
	keys [][]byte
	now  func() time.Time
	srv  *httptest.Server

	mu        sync.Mutex
	fail      int               // answer 500 to this many valid deliveries
	failEvery int               // if > 0: answer 500 to every failEvery-th valid delivery
	failAll   bool              // answer 500 to every valid delivery
	hang      int               // never answer this many valid deliveries: hold them until the sender hangs up
	gate      chan struct{}     // if set: answer valid deliveries only once it is closed
	seen      map[string]bool   // webhook-ids processed
	events    []receivedEvent   // processed, in arrival order
	arrivals  []string          // webhook-id of every request, valid or not
	rejects   map[string]int    // reason -> count
	lastReq   *capturedDelivery // the last request, to replay
	valid     int
}

type receivedEvent struct {
	ID   string
	Type string
	Data map[string]any
	Sigs int
}

type capturedDelivery struct {
	Header http.Header
	Body   []byte
}

func newReceiver(t *testing.T, secrets []string, now func() time.Time) *receiver {
	t.Helper()
	r := &receiver{t: t, now: now, seen: map[string]bool{}, rejects: map[string]int{}}
	if r.now == nil {
		r.now = time.Now
	}
	for _, s := range secrets {
		b64, ok := strings.CutPrefix(s, "whsec_")
		if !ok {
			t.Fatalf("receiver: secret without whsec_ prefix")
		}
		key, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			t.Fatalf("receiver: secret: %v", err)
		}
		r.keys = append(r.keys, key)
	}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve)) // loopback
	t.Cleanup(r.srv.Close)
	return r
}

// verify checks one delivery and, when it is new and authentic, marks its id seen.
func (r *receiver) verify(h http.Header, body []byte) error {
	id, ts, sig := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || ts == "" || sig == "" {
		return errNoHeader
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return errNoHeader
	}
	if d := r.now().Sub(time.Unix(sec, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return errStale
	}
	signed := []byte(id + "." + ts + "." + string(body))
	match := false
	for _, key := range r.keys {
		m := hmac.New(sha256.New, key)
		m.Write(signed)
		want := m.Sum(nil)
		for _, part := range strings.Fields(sig) {
			version, b64, ok := strings.Cut(part, ",")
			if !ok || version != "v1" {
				continue
			}
			got, err := base64.StdEncoding.DecodeString(b64)
			if err == nil && hmac.Equal(got, want) {
				match = true
			}
		}
	}
	if !match {
		return errBadSig
	}
	if r.seen[id] {
		return errReplay
	}
	return nil
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.arrivals = append(r.arrivals, req.Header.Get("webhook-id"))
	r.lastReq = &capturedDelivery{Header: req.Header.Clone(), Body: body}
	if req.Method != http.MethodPost || req.Header.Get("Content-Type") != "application/json" {
		r.rejects["method or content type"]++
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	if err := r.verify(req.Header, body); err != nil {
		r.rejects[err.Error()]++
		if errors.Is(err, errReplay) {
			w.WriteHeader(http.StatusOK) // acknowledged, not processed again
			return
		}
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	r.valid++
	if r.hang > 0 {
		// A receiver that does not answer in time (the world, not the
		// worker): it holds the request until the sender gives up on it.
		r.hang--
		r.mu.Unlock()
		<-req.Context().Done()
		r.mu.Lock()
		return
	}
	if gate := r.gate; gate != nil {
		r.mu.Unlock()
		<-gate
		r.mu.Lock()
	}
	if r.failAll || r.fail > 0 || (r.failEvery > 0 && r.valid%r.failEvery == 0) {
		if r.fail > 0 {
			r.fail--
		}
		http.Error(w, "try later", http.StatusInternalServerError)
		return
	}
	var msg struct {
		Type      string         `json:"type"`
		Timestamp time.Time      `json:"timestamp"`
		Data      map[string]any `json:"data"`
	}
	if err := json.Unmarshal(body, &msg); err != nil || msg.Type == "" || msg.Timestamp.IsZero() {
		r.rejects["body"]++
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	id := req.Header.Get("webhook-id")
	r.seen[id] = true
	r.events = append(r.events, receivedEvent{ID: id, Type: msg.Type, Data: msg.Data, Sigs: len(strings.Fields(req.Header.Get("webhook-signature")))})
	w.WriteHeader(http.StatusNoContent)
}

func (r *receiver) processed() []receivedEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]receivedEvent(nil), r.events...)
}

func (r *receiver) rejected(reason error) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rejects[reason.Error()]
}

func (r *receiver) set(fn func(r *receiver)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fn(r)
}

// post sends a raw delivery to the receiver, as an attacker replaying would.
func (r *receiver) post(t *testing.T, h http.Header, body []byte) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, r.srv.URL, bytes.NewReader(body))
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// ---- fixtures ----

type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newSecret(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return "whsec_" + base64.StdEncoding.EncodeToString(b)
}

func openStoreAt(t *testing.T, now func() time.Time) *boltstore.Store {
	t.Helper()
	s, err := boltstore.Open(filepath.Join(t.TempDir(), "usher.db"), boltstore.Options{Now: now, SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// watchedStore is the store as one worker sees it, with what the worker does
// with its lanes made observable: each look for due lanes (a ClaimJobs of
// JobKindWebhook), where it falls among the other events and how many lanes
// it found, and which lanes it holds (handed out by a look and not yet
// handed back with RetryJob or CompleteJob). A test that must show nothing
// more happened hinges on these events, not on time.
type watchedStore struct {
	grants.Store
	mu    sync.Mutex
	seq   int // events so far (looks begun and ended, hand-backs): their order
	looks []look
	held  map[string]bool // lane job IDs handed out and not handed back since
}

type look struct {
	began, ended int  // seq at its start and its end (0: not ended)
	idle         bool // no lane was held when it began
	found        int  // lanes it handed out
	failed       bool
}

func watch(st grants.Store) *watchedStore { return &watchedStore{Store: st, held: map[string]bool{}} }

func (s *watchedStore) ClaimJobs(ctx context.Context, kind string, now time.Time, limit int, lease time.Duration) ([]grants.Job, error) {
	if kind != webhooks.JobKindWebhook {
		return s.Store.ClaimJobs(ctx, kind, now, limit, lease)
	}
	s.mu.Lock()
	s.seq++
	i := len(s.looks)
	s.looks = append(s.looks, look{began: s.seq, idle: len(s.held) == 0})
	s.mu.Unlock()
	jobs, err := s.Store.ClaimJobs(ctx, kind, now, limit, lease)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	s.looks[i].ended, s.looks[i].found, s.looks[i].failed = s.seq, len(jobs), err != nil
	for _, j := range jobs {
		s.held[j.ID] = true
	}
	return jobs, err
}

func (s *watchedStore) RetryJob(ctx context.Context, id string, runAt time.Time, lastErr string) error {
	err := s.Store.RetryJob(ctx, id, runAt, lastErr)
	s.handedBack(id)
	return err
}

func (s *watchedStore) CompleteJob(ctx context.Context, id string) error {
	err := s.Store.CompleteJob(ctx, id)
	s.handedBack(id)
	return err
}

func (s *watchedStore) RetryClaimedJob(ctx context.Context, claimed *grants.Job, runAt time.Time, lastErr string) error {
	err := s.Store.RetryClaimedJob(ctx, claimed, runAt, lastErr)
	s.handedBack(claimed.ID)
	return err
}

func (s *watchedStore) CompleteClaimedJob(ctx context.Context, claimed *grants.Job) error {
	err := s.Store.CompleteClaimedJob(ctx, claimed)
	s.handedBack(claimed.ID)
	return err
}

func (s *watchedStore) handedBack(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held[id] {
		delete(s.held, id)
		s.seq++
	}
}

func (s *watchedStore) inFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.held)
}

func (s *watchedStore) mark() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seq
}

// idleLookSince returns what the first look that began after mark, with no
// lane held, found; ok is false until such a look has ended.
func (s *watchedStore) idleLookSince(mark int) (found int, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.looks {
		if l.began > mark && l.idle && l.ended != 0 && !l.failed {
			return l.found, true
		}
	}
	return 0, false
}

// claimedSince reports whether a look that began after mark handed out a lane.
func (s *watchedStore) claimedSince(mark int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.looks {
		if l.began > mark && l.found > 0 {
			return true
		}
	}
	return false
}

// worker is a Webhooks with the store it was given, watched.
type worker struct {
	*webhooks.Webhooks
	store *watchedStore
}

func newWebhooks(t *testing.T, st grants.Store, eps []webhooks.WebhookEndpoint, mod func(*webhooks.WebhooksOptions)) *worker {
	t.Helper()
	ws := watch(st)
	o := webhooks.WebhooksOptions{
		Store: ws, Endpoints: eps, Logger: testkit.Logger(t),
		PollInterval: 20 * time.Millisecond, BaseBackoff: 5 * time.Millisecond, Timeout: 5 * time.Second,
	}
	if mod != nil {
		mod(&o)
	}
	w, err := webhooks.NewWebhooks(o)
	if err != nil {
		t.Fatal(err)
	}
	return &worker{Webhooks: w, store: ws}
}

func runWebhooks(t *testing.T, w *worker) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// waitWebhooksIdle waits until the worker has nothing left to do: no lane
// queued and none held (being worked).
func waitWebhooksIdle(t *testing.T, w *worker) {
	t.Helper()
	testkit.Eventually(t, "the webhook worker to go idle (queue drained, no lane held)", func() bool {
		n, err := w.QueueDepth(context.Background())
		return err == nil && n == 0 && w.store.inFlight() == 0
	})
}

// nextIdleLook waits for the worker's next look for due lanes that begins
// after the call with no lane held, and returns how many lanes it found. Zero
// means that, with everything before the call done, nothing was due: the
// deterministic form of "nothing more happens".
func nextIdleLook(t *testing.T, w *worker) int {
	t.Helper()
	mark := w.store.mark()
	var found int
	testkit.Eventually(t, "the webhook worker to look for due lanes with none held", func() bool {
		var ok bool
		found, ok = w.store.idleLookSince(mark)
		return ok
	})
	return found
}

func delivery(t *testing.T, w *worker, endpoint, id string) webhooks.WebhookDelivery {
	t.Helper()
	ds, err := w.Deliveries(context.Background(), endpoint, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if d.ID == id {
			return d
		}
	}
	t.Fatalf("delivery %s not in the log of %s (%d entries)", id, endpoint, len(ds))
	return webhooks.WebhookDelivery{}
}

// ---- tests ----

func TestWebhooksEveryEventOnceInOrder(t *testing.T) {
	t.Parallel()
	secret := newSecret(t)
	rcv := newReceiver(t, []string{secret}, nil)
	rcv.failEvery = 3 // every third valid delivery answers 500: retries must not reorder
	st, _ := testkit.OpenBolt(t)
	eps := []webhooks.WebhookEndpoint{{ID: "crm", URL: rcv.srv.URL + "/hooks", Secrets: []string{secret}}}
	// Two "replicas" share the store: each emits and each drains.
	w1 := newWebhooks(t, st, eps, nil)
	w2 := newWebhooks(t, st, eps, nil)
	runWebhooks(t, w1)
	runWebhooks(t, w2)

	const invitations = 12
	steps := []string{webhooks.WebhookInvitationCreated, webhooks.WebhookInvitationRedeemed, webhooks.WebhookGrantChanged, webhooks.WebhookInvitationRevoked}
	var wg sync.WaitGroup
	for i := range invitations {
		wg.Go(func() {
			w := w1
			for n, typ := range steps {
				if n%2 == 1 {
					w = w2
				}
				data := map[string]any{"invitation_id": fmt.Sprintf("inv-%02d", i), "seq": n}
				if err := w.Emit(context.Background(), webhooks.WebhookEvent{Type: typ, Data: data}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Go(func() { // events of no invitation
		for i := range 5 {
			if err := w1.Emit(context.Background(), webhooks.WebhookEvent{Type: webhooks.WebhookUserCreated,
				Data: map[string]any{"user_id": fmt.Sprintf("u%d", i)}}); err != nil {
				t.Error(err)
			}
		}
	})
	wg.Wait()

	want := invitations*len(steps) + 5
	testkit.Eventually(t, "every event delivered", func() bool { return len(rcv.processed()) >= want })
	waitWebhooksIdle(t, w1)
	waitWebhooksIdle(t, w2)
	got := rcv.processed()
	if len(got) != want {
		t.Fatalf("processed %d events, want %d", len(got), want)
	}
	ids := map[string]bool{}
	next := map[string]int{}
	for _, e := range got {
		if ids[e.ID] {
			t.Errorf("webhook-id %s processed twice", e.ID)
		}
		ids[e.ID] = true
		inv, _ := e.Data["invitation_id"].(string)
		if inv == "" {
			continue
		}
		seq := int(e.Data["seq"].(float64))
		if seq != next[inv] || e.Type != steps[seq] {
			t.Errorf("invitation %s: got %s (seq %d), want seq %d", inv, e.Type, seq, next[inv])
		}
		next[inv] = seq + 1
	}
	if rcv.rejected(errReplay) != 0 || rcv.rejected(errBadSig) != 0 || rcv.rejected(errStale) != 0 {
		t.Fatalf("receiver rejected deliveries: %v", rcv.rejects)
	}
	ds, err := w1.Deliveries(context.Background(), "crm", 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != want {
		t.Fatalf("delivery log has %d entries, want %d", len(ds), want)
	}
	for i, d := range ds {
		if d.Status != webhooks.DeliveryDelivered || d.Attempts < 1 || !ids[d.ID] {
			t.Fatalf("delivery %+v", d)
		}
		// Ordered by the event's ordering stamp: emit time, made unique by nanoseconds.
		if i > 0 && d.CreatedAt.After(ds[i-1].CreatedAt.Add(time.Millisecond)) {
			t.Fatalf("delivery log not newest first at %d: %s %v > %s %v", i, d.ID, d.CreatedAt, ds[i-1].ID, ds[i-1].CreatedAt)
		}
	}
}

func TestWebhooksSurviveFiveFailures(t *testing.T) {
	t.Parallel()
	secret := newSecret(t)
	rcv := newReceiver(t, []string{secret}, nil)
	rcv.fail = 5
	st, _ := testkit.OpenBolt(t)
	w := newWebhooks(t, st, []webhooks.WebhookEndpoint{{ID: "crm", URL: rcv.srv.URL, Secrets: []string{secret}}}, nil)
	runWebhooks(t, w)

	if err := w.Emit(t.Context(), webhooks.WebhookEvent{Type: webhooks.WebhookInvitationCreated, Data: map[string]any{"invitation_id": "inv-1"}}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "the delivery", func() bool { return len(rcv.processed()) == 1 })
	waitWebhooksIdle(t, w)
	id := rcv.processed()[0].ID
	rcv.mu.Lock()
	arrivals := append([]string(nil), rcv.arrivals...)
	rcv.mu.Unlock()
	if len(arrivals) != 6 {
		t.Fatalf("%d requests, want 6 (5 failures, 1 success)", len(arrivals))
	}
	for _, a := range arrivals {
		if a != id {
			t.Fatalf("a retry changed the webhook-id: %v", arrivals)
		}
	}
	d := delivery(t, w, "crm", id)
	if d.Status != webhooks.DeliveryDelivered || d.Attempts != 6 || d.LastStatusCode != http.StatusNoContent || d.LastError != "" ||
		d.EventType != webhooks.WebhookInvitationCreated || len(d.History) != 6 {
		t.Fatalf("delivery log entry: %+v", d)
	}
	for i, a := range d.History[:5] {
		if a.StatusCode != 500 || !strings.Contains(a.Error, "500") {
			t.Fatalf("attempt %d: %+v", i+1, a)
		}
		if i > 0 && a.At.Before(d.History[i-1].At) {
			t.Fatalf("attempts out of order: %+v", d.History)
		}
	}
	var body map[string]any
	if err := json.Unmarshal(d.Payload, &body); err != nil || body["type"] != webhooks.WebhookInvitationCreated {
		t.Fatalf("payload %s: %v", d.Payload, err)
	}
}

func TestWebhooksReceiverRejectsReplayAndStale(t *testing.T) {
	t.Parallel()
	secret := newSecret(t)
	rcv := newReceiver(t, []string{secret}, nil)
	st, _ := testkit.OpenBolt(t)
	w := newWebhooks(t, st, []webhooks.WebhookEndpoint{{ID: "crm", URL: rcv.srv.URL, Secrets: []string{secret}}}, nil)
	runWebhooks(t, w)
	if err := w.Emit(t.Context(), webhooks.WebhookEvent{Type: webhooks.WebhookUserCreated, Data: map[string]any{"user_id": "u1"}}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "the delivery", func() bool { return len(rcv.processed()) == 1 })
	rcv.mu.Lock()
	genuine := *rcv.lastReq
	rcv.mu.Unlock()

	// A replay of the genuine request (valid signature, fresh timestamp) is refused.
	rcv.post(t, genuine.Header, genuine.Body)
	if rcv.rejected(errReplay) != 1 || len(rcv.processed()) != 1 {
		t.Fatalf("replay: rejects %v, processed %d", rcv.rejects, len(rcv.processed()))
	}

	// A message signed by usher's signer 10 minutes ago is stale...
	body := []byte(`{"type":"user.created","timestamp":"2024-01-01T00:00:00Z","data":{"user_id":"u2"}}`)
	old := time.Now().Add(-10 * time.Minute)
	sig, err := webhooks.SignWebhook([]string{secret}, "msg_stale", old, body)
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{"Content-Type": {"application/json"}, "Webhook-Id": {"msg_stale"},
		"Webhook-Timestamp": {strconv.FormatInt(old.Unix(), 10)}, "Webhook-Signature": {sig}}
	if code := rcv.post(t, h, body); code != http.StatusUnauthorized || rcv.rejected(errStale) != 1 {
		t.Fatalf("stale: %d, rejects %v", code, rcv.rejects)
	}
	// ...a tampered body does not verify...
	now := time.Now()
	sig, _ = webhooks.SignWebhook([]string{secret}, "msg_fresh", now, body)
	h.Set("Webhook-Id", "msg_fresh")
	h.Set("Webhook-Timestamp", strconv.FormatInt(now.Unix(), 10))
	h.Set("Webhook-Signature", sig)
	if code := rcv.post(t, h, append(bytes.Clone(body[:len(body)-2]), `3"}}`...)); code != http.StatusUnauthorized || rcv.rejected(errBadSig) != 1 {
		t.Fatalf("tampered: %d, rejects %v", code, rcv.rejects)
	}
	// ...nor one signed with another secret...
	other, _ := webhooks.SignWebhook([]string{newSecret(t)}, "msg_fresh", now, body)
	h.Set("Webhook-Signature", other)
	if code := rcv.post(t, h, body); code != http.StatusUnauthorized || rcv.rejected(errBadSig) != 2 {
		t.Fatalf("other secret: %d, rejects %v", code, rcv.rejects)
	}
	// ...and the same message, fresh and intact, passes.
	h.Set("Webhook-Signature", sig)
	if code := rcv.post(t, h, body); code != http.StatusNoContent || len(rcv.processed()) != 2 {
		t.Fatalf("fresh: %d, rejects %v", code, rcv.rejects)
	}
}

func TestWebhooksSecretRotation(t *testing.T) {
	t.Parallel()
	oldSecret, newSecret := newSecret(t), newSecret(t)
	knowsOld := newReceiver(t, []string{oldSecret}, nil)
	knowsNew := newReceiver(t, []string{newSecret}, nil)
	rotating := []string{newSecret, oldSecret}
	st, _ := testkit.OpenBolt(t)
	w := newWebhooks(t, st, []webhooks.WebhookEndpoint{
		{ID: "old", URL: knowsOld.srv.URL, Secrets: rotating},
		{ID: "new", URL: knowsNew.srv.URL, Secrets: rotating, Events: []string{webhooks.WebhookUserCreated}},
	}, nil)
	runWebhooks(t, w)
	if err := w.Emit(t.Context(), webhooks.WebhookEvent{Type: webhooks.WebhookUserCreated, Data: map[string]any{"user_id": "u1"}}); err != nil {
		t.Fatal(err)
	}
	// Not subscribed by "new": goes to "old" only.
	if err := w.Emit(t.Context(), webhooks.WebhookEvent{Type: webhooks.WebhookGrantChanged, Data: map[string]any{"user_id": "u1"}}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "both receivers", func() bool { return len(knowsOld.processed()) == 2 && len(knowsNew.processed()) == 1 })
	waitWebhooksIdle(t, w)
	for _, r := range []*receiver{knowsOld, knowsNew} {
		got := r.processed()
		if got[0].Type != webhooks.WebhookUserCreated || got[0].Sigs != 2 {
			t.Fatalf("got %+v, want user.created with two signatures", got[0])
		}
		if r.rejected(errBadSig) != 0 {
			t.Fatalf("rejects: %v", r.rejects)
		}
	}
	if knowsOld.processed()[0].ID == knowsNew.processed()[0].ID {
		t.Fatal("two endpoints got the same webhook-id for one event")
	}
}

// A lane whose lease lapses while its attempt is in flight (a stall, a clock
// jump) is claimed again by the same worker, which skips that claim so one
// event never has two attempts at once. The run then hands the lane back with
// that newer claim: with its own, lapsed one the store's fence refuses the
// hand-back and the lane stays leased to nobody until the new claim lapses.
func TestLeaseLapsingMidAttemptHandsBackTheNewerClaim(t *testing.T) {
	t.Parallel()
	clock := &testClock{now: time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)}
	secret := newSecret(t)
	rcv := newReceiver(t, []string{secret}, clock.Now)
	release := make(chan struct{})
	rcv.failAll, rcv.gate = true, release
	st := openStoreAt(t, clock.Now)
	w := newWebhooks(t, st, []webhooks.WebhookEndpoint{{ID: "crm", URL: rcv.srv.URL, Secrets: []string{secret}}}, func(o *webhooks.WebhooksOptions) {
		o.Now = clock.Now
		o.BaseBackoff = time.Minute
	})
	runWebhooks(t, w)
	if err := w.Emit(t.Context(), webhooks.WebhookEvent{Type: webhooks.WebhookInvitationRevoked, Data: map[string]any{"invitation_id": "inv-7"}}); err != nil {
		t.Fatal(err)
	}
	attempts := func() int {
		rcv.mu.Lock()
		defer rcv.mu.Unlock()
		return len(rcv.arrivals)
	}
	testkit.Eventually(t, "the first attempt to arrive (and be held)", func() bool { return attempts() == 1 })
	mark := w.store.mark()
	clock.Advance(time.Hour) // past the lane's lease, the attempt still in flight
	testkit.Eventually(t, "the worker to claim the lane again", func() bool { return w.store.claimedSince(mark) })
	rcv.set(func(r *receiver) { r.gate = nil })
	close(release)
	rcv.mu.Lock()
	id := rcv.arrivals[0]
	rcv.mu.Unlock()
	testkit.Eventually(t, "the failed attempt logged", func() bool { return delivery(t, w, "crm", id).Attempts == 1 })
	clock.Advance(time.Minute) // the backoff, well short of a fresh lease
	testkit.Eventually(t, "the second attempt", func() bool { return attempts() == 2 })
}

func TestWebhooksGiveUpThenRedeliver(t *testing.T) {
	t.Parallel()
	clock := &testClock{now: time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)}
	secret := newSecret(t)
	rcv := newReceiver(t, []string{secret}, clock.Now)
	rcv.failAll = true
	st := openStoreAt(t, clock.Now)
	w := newWebhooks(t, st, []webhooks.WebhookEndpoint{{ID: "crm", URL: rcv.srv.URL, Secrets: []string{secret}}}, func(o *webhooks.WebhooksOptions) {
		o.Now = clock.Now
		o.MaxAge = 24 * time.Hour
		o.BaseBackoff = time.Minute
	})
	runWebhooks(t, w)
	if err := w.Emit(t.Context(), webhooks.WebhookEvent{Type: webhooks.WebhookInvitationRevoked, Data: map[string]any{"invitation_id": "inv-9"}}); err != nil {
		t.Fatal(err)
	}
	attempts := func() int {
		rcv.mu.Lock()
		defer rcv.mu.Unlock()
		return len(rcv.arrivals)
	}
	testkit.Eventually(t, "the first attempt", func() bool { return attempts() == 1 })
	rcv.mu.Lock()
	id := rcv.arrivals[0]
	rcv.mu.Unlock()
	testkit.Eventually(t, "the attempt logged", func() bool { return delivery(t, w, "crm", id).Attempts == 1 })
	d := delivery(t, w, "crm", id)
	if d.Status != webhooks.DeliveryPending || d.LastStatusCode != 500 {
		t.Fatalf("after one failure: %+v", d)
	}
	if err := w.Redeliver(t.Context(), id); !errors.Is(err, webhooks.ErrDeliveryPending) {
		t.Fatalf("redeliver while pending: %v", err)
	}
	// Once the failed attempt's lane is handed back, the worker's next look
	// finds nothing due: the clock has not moved, so the backoff has not elapsed.
	if found := nextIdleLook(t, w); found != 0 {
		t.Fatalf("the worker found %d lanes due before the backoff elapsed", found)
	}
	if n := attempts(); n != 1 {
		t.Fatalf("%d attempts before the backoff elapsed", n)
	}

	// A minute later: the second attempt; a day later: a last one at the deadline, then give up.
	clock.Advance(time.Minute)
	testkit.Eventually(t, "the second attempt", func() bool { return attempts() == 2 })
	// Let the worker record it (and schedule the last retry) before the clock
	// jumps: otherwise it schedules from the jumped clock, past the deadline.
	testkit.Eventually(t, "the second attempt logged", func() bool { return delivery(t, w, "crm", id).Attempts == 2 })
	clock.Advance(25 * time.Hour)
	testkit.Eventually(t, "giving up", func() bool { return delivery(t, w, "crm", id).Status == webhooks.DeliveryFailed })
	waitWebhooksIdle(t, w)
	d = delivery(t, w, "crm", id)
	if d.Attempts != 3 || attempts() != 3 || d.LastStatusCode != 500 {
		t.Fatalf("given up: %+v after %d requests", d, attempts())
	}
	clock.Advance(time.Hour)
	if found := nextIdleLook(t, w); found != 0 {
		t.Fatalf("the worker found %d lanes due an hour after giving up", found)
	}
	if n := attempts(); n != 3 {
		t.Fatalf("still trying after giving up: %d attempts", n)
	}

	// Manual redelivery: same webhook-id, same body.
	rcv.set(func(r *receiver) { r.failAll = false })
	if err := w.Redeliver(t.Context(), "msg_00000000000000000000000000000000"); !errors.Is(err, grants.ErrNotFound) {
		t.Fatalf("redeliver unknown: %v", err)
	}
	if err := w.Redeliver(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "the redelivery", func() bool { return len(rcv.processed()) == 1 })
	got := rcv.processed()[0]
	if got.ID != id || got.Type != webhooks.WebhookInvitationRevoked || got.Data["invitation_id"] != "inv-9" {
		t.Fatalf("redelivered %+v", got)
	}
	testkit.Eventually(t, "delivered in the log", func() bool { return delivery(t, w, "crm", id).Status == webhooks.DeliveryDelivered })
	if d := delivery(t, w, "crm", id); d.Attempts != 4 || len(d.History) != 4 {
		t.Fatalf("after redelivery: %+v", d)
	}
	if ds, _ := w.Deliveries(t.Context(), "crm", 10); len(ds) != 1 {
		t.Fatalf("redelivery added a log entry: %d", len(ds))
	}
	if _, err := w.Deliveries(t.Context(), "nope", 10); !errors.Is(err, grants.ErrNotFound) {
		t.Fatalf("deliveries of an unknown endpoint: %v", err)
	}
}

func TestWebhooksExpireSweepOnce(t *testing.T) {
	t.Parallel()
	clock := &testClock{now: time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)}
	secret := newSecret(t)
	rcv := newReceiver(t, []string{secret}, clock.Now)
	st := openStoreAt(t, clock.Now)
	mk := func(id string, ttl time.Duration) {
		_, hash := testkit.InvitationToken(t)
		now := clock.Now()
		if _, err := st.CreateInvitation(t.Context(), &grants.Invitation{ID: id, TokenHash: hash, Email: id + "@example.com",
			Roles: []string{"viewer"}, EmailMatch: "any", Status: grants.StatusPending, CreatedAt: now, ExpiresAt: now.Add(ttl)}); err != nil {
			t.Fatal(err)
		}
	}
	mk("inv-short", time.Hour)
	mk("inv-long", 7*24*time.Hour)
	eps := []webhooks.WebhookEndpoint{{ID: "crm", URL: rcv.srv.URL, Secrets: []string{secret}}}
	w := newWebhooks(t, st, eps, func(o *webhooks.WebhooksOptions) { o.Now = clock.Now })
	svc := grants.NewService(grants.ServiceOptions{Store: st, Now: clock.Now})
	other := grants.NewService(grants.ServiceOptions{Store: st, Now: clock.Now}) // a second replica sweeping too

	if n, err := svc.Expire(t.Context()); err != nil || n != 0 { // nothing expired yet
		t.Fatalf("sweep before expiry: noted %d, %v", n, err)
	}
	clock.Advance(2 * time.Hour)
	var wg sync.WaitGroup
	var noted atomic.Int64
	for _, x := range []*grants.Service{svc, other, svc} {
		wg.Go(func() {
			n, err := x.Expire(t.Context())
			if err != nil {
				t.Error(err)
			}
			noted.Add(int64(n))
		})
	}
	wg.Wait()
	if n, err := svc.Expire(t.Context()); err != nil || noted.Load()+int64(n) != 1 {
		t.Fatalf("expiry noted %d times (+%d, %v), want once", noted.Load(), n, err)
	}
	relay := outbox.NewRelay(outbox.RelayOptions{Store: st, Consumers: []outbox.Consumer{w}, Now: clock.Now, Logger: testkit.Logger(t)})
	if n := relay.Drain(t.Context()); n != 1 {
		t.Fatalf("outbox handed over %d events, want 1", n)
	}
	runWebhooks(t, w)
	testkit.Eventually(t, "the expired event", func() bool { return len(rcv.processed()) >= 1 })
	waitWebhooksIdle(t, w)
	got := rcv.processed()
	if len(got) != 1 || got[0].Type != webhooks.WebhookInvitationExpired || got[0].Data["invitation_id"] != "inv-short" {
		t.Fatalf("processed %+v, want one invitation.expired for inv-short", got)
	}
	n := 0
	for _, e := range testkit.Invitation(t, st, "inv-short").Events {
		if e.Type == "expired" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d expired timeline events, want 1", n)
	}
	if testkit.Invitation(t, st, "inv-long").HasEvent("expired") {
		t.Fatal("an unexpired invitation got an expired event")
	}
}

func TestWebhooksIdempotentEmit(t *testing.T) {
	t.Parallel()
	secret := newSecret(t)
	rcv := newReceiver(t, []string{secret}, nil)
	st, _ := testkit.OpenBolt(t)
	w := newWebhooks(t, st, []webhooks.WebhookEndpoint{{ID: "crm", URL: rcv.srv.URL, Secrets: []string{secret}}}, nil)
	inv, _, _ := testkit.PendingInvitation(t, st, "ada@example.com")
	for range 3 {
		if err := w.Emit(t.Context(), webhooks.InvitationCreatedEvent(inv)); err != nil {
			t.Fatal(err)
		}
	}
	runWebhooks(t, w)
	testkit.Eventually(t, "the delivery", func() bool { return len(rcv.processed()) == 1 })
	// Idle (queue drained, no lane held): every delivery queued has been made.
	waitWebhooksIdle(t, w)
	if got := rcv.processed(); len(got) != 1 || got[0].Data["email"] != "ada@example.com" {
		t.Fatalf("processed %+v", got)
	}
}

func TestNewWebhooksValidates(t *testing.T) {
	t.Parallel()
	st, _ := testkit.OpenBolt(t)
	good := newSecret(t)
	short := "whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 16))
	for _, tc := range []struct {
		ep   webhooks.WebhookEndpoint
		want string
	}{
		{webhooks.WebhookEndpoint{ID: "crm", URL: "ftp://x", Secrets: []string{good}}, `endpoint "crm": url`},
		{webhooks.WebhookEndpoint{ID: "crm", URL: "/relative", Secrets: []string{good}}, `endpoint "crm": url`},
		{webhooks.WebhookEndpoint{ID: "crm", URL: "https://x.example/h"}, `endpoint "crm": secrets`},
		{webhooks.WebhookEndpoint{ID: "crm", URL: "https://x.example/h", Secrets: []string{"secret123456789012345678901234"}}, `endpoint "crm": secrets[0]: must start with "whsec_"`},
		{webhooks.WebhookEndpoint{ID: "crm", URL: "https://x.example/h", Secrets: []string{good, "whsec_!!!"}}, `endpoint "crm": secrets[1]: must be "whsec_" followed by base64`},
		{webhooks.WebhookEndpoint{ID: "crm", URL: "https://x.example/h", Secrets: []string{short}}, `endpoint "crm": secrets[0]: must encode 24 to 64 bytes`},
		{webhooks.WebhookEndpoint{ID: "crm", URL: "https://x.example/h", Secrets: []string{good, good, good}}, `endpoint "crm": secrets`},
		{webhooks.WebhookEndpoint{ID: "crm", URL: "https://x.example/h", Secrets: []string{good}, Events: []string{"invitation.nope"}}, `endpoint "crm": events[0]: unknown event type`},
		{webhooks.WebhookEndpoint{ID: "", URL: "https://x.example/h", Secrets: []string{good}}, `endpoint "#1": id`},
	} {
		_, err := webhooks.NewWebhooks(webhooks.WebhooksOptions{Store: st, Endpoints: []webhooks.WebhookEndpoint{tc.ep}})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want it to contain %q", tc.ep.URL, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), strings.TrimPrefix(good, "whsec_")) {
			t.Errorf("error shows the secret: %v", err)
		}
	}
	dup := []webhooks.WebhookEndpoint{{ID: "a", URL: "https://x.example", Secrets: []string{good}}, {ID: "a", URL: "https://y.example", Secrets: []string{good}}}
	if _, err := webhooks.NewWebhooks(webhooks.WebhooksOptions{Store: st, Endpoints: dup}); err == nil || !strings.Contains(err.Error(), `endpoint "a": id`) {
		t.Errorf("duplicate id: %v", err)
	}
}

func TestWebhooksTimeoutIsRetried(t *testing.T) {
	t.Parallel()
	secret := newSecret(t)
	rcv := newReceiver(t, []string{secret}, nil)
	rcv.hang = 1 // the first attempt gets no answer at all
	st, _ := testkit.OpenBolt(t)
	// A timeout the answered attempt meets even on a loaded machine (-race,
	// many tests at once): 100ms was missed there.
	w := newWebhooks(t, st, []webhooks.WebhookEndpoint{{ID: "crm", URL: rcv.srv.URL, Secrets: []string{secret}}},
		func(o *webhooks.WebhooksOptions) { o.Timeout = time.Second })
	runWebhooks(t, w)
	if err := w.Emit(t.Context(), webhooks.WebhookEvent{Type: webhooks.WebhookUserCreated, Data: map[string]any{"user_id": "u1"}}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "the delivery", func() bool { return len(rcv.processed()) == 1 })
	testkit.Eventually(t, "delivered in the log", func() bool {
		return delivery(t, w, "crm", rcv.processed()[0].ID).Status == webhooks.DeliveryDelivered
	})
	d := delivery(t, w, "crm", rcv.processed()[0].ID)
	if d.Attempts != 2 || !strings.Contains(d.History[0].Error, "no answer within 1s") || d.History[0].StatusCode != 0 {
		t.Fatalf("delivery %+v", d)
	}
}
