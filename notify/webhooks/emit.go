package webhooks

// Emit, and the queueing it shares with a redelivery (log.go) and the
// runner: each delivery's log record, lane event and lane job (see
// webhooks.go for how they fit together).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/grants/outbox"
)

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
	return outbox.RandomHex(16)
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
	body, err := eventBody(e)
	if err != nil {
		return err
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
		ok, err := w.queueFor(ctx, id, webhookID, hash32(id, key), e, body, stamp, createdAt, now)
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

// eventBody is the JSON body sent for e, {"type","timestamp","data"}, at
// most webhookBodyLimit bytes.
func eventBody(e WebhookEvent) ([]byte, error) {
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
		return nil, fmt.Errorf("webhooks: emit %s: %w", e.Type, err)
	}
	if len(body) > webhookBodyLimit {
		return nil, fmt.Errorf("webhooks: emit %s: body of %d bytes is over %d", e.Type, len(body), webhookBodyLimit)
	}
	return body, nil
}

// queueFor queues Emit's delivery of e to the endpoint id in its lane: the
// log record's ID sorts newest first, the lane event's oldest first, both
// by stamp.
func (w *Webhooks) queueFor(ctx context.Context, id, webhookID, lane string, e WebhookEvent, body []byte, stamp int64, createdAt, now time.Time) (bool, error) {
	rec := logRecord{WebhookID: webhookID, Endpoint: id, EventType: e.Type, CreatedAt: createdAt, Body: body}
	logID := fmt.Sprintf("whlog_%016x_%s", ^uint64(stamp), webhookID) // newest first
	ev := laneEvent{WebhookID: webhookID, Endpoint: id, EventType: e.Type, LogID: logID, Body: body, QueuedAt: now,
		Prior: webhookState{Status: DeliveryPending}}
	eventJobID := fmt.Sprintf("whevt_%016x_%s", uint64(stamp), webhookID) // oldest first
	return w.queue(ctx, rec, logID, ev, eventJobID, lane, e.ID != "")
}

// queue stores a delivery: its log record (if new), its lane event, then the
// lane job. With idempotent set, an existing log record means an earlier
// Emit of the same event got at least that far; it may have failed or died
// before the lane event or the lane job was stored (the outbox then hands
// the event over again), so while the record is pending the rest is stored
// again (both IDs are fixed: what exists stays as it is). A delivered or
// given-up one is left alone.
func (w *Webhooks) queue(ctx context.Context, rec logRecord, logID string, ev laneEvent, eventJobID, lane string, idempotent bool) (bool, error) {
	if rec.Body != nil {
		payload, _ := json.Marshal(rec)
		err := w.o.Store.EnqueueJob(ctx, &grants.Job{ID: logID, Kind: logKindPrefix + rec.Endpoint, Payload: payload,
			RunAt: parkedAt, CreatedAt: rec.CreatedAt, LastError: webhookState{Status: DeliveryPending}.encode()})
		if errors.Is(err, grants.ErrConflict) && idempotent {
			pending, perr := w.logPending(ctx, logID)
			if perr != nil {
				return false, perr
			}
			if !pending {
				return false, nil
			}
			ev.Recheck, err = true, nil
		}
		if err != nil {
			return false, fmt.Errorf("store delivery log record: %w", err)
		}
	}
	payload, _ := json.Marshal(ev)
	if err := w.o.Store.EnqueueJob(ctx, &grants.Job{ID: eventJobID, Kind: laneKindPrefix + lane, Payload: payload,
		RunAt: parkedAt, CreatedAt: ev.QueuedAt}); err != nil && !errors.Is(err, grants.ErrConflict) {
		return false, fmt.Errorf("store event: %w", err)
	}
	if err := w.enqueueLane(ctx, lane, ev.Endpoint); err != nil {
		return false, err
	}
	return true, nil
}

// logPending reports whether the delivery log record logID is
// still pending. The log keeps pending records however old; a record no
// longer there was finished and trimmed.
func (w *Webhooks) logPending(ctx context.Context, logID string) (bool, error) {
	j, err := w.o.Store.GetJob(ctx, logID)
	if errors.Is(err, grants.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read delivery log record: %w", err)
	}
	st, _ := decodeState(j.LastError)
	return st.Status == DeliveryPending, nil
}

func (w *Webhooks) enqueueLane(ctx context.Context, lane, endpoint string) error {
	payload, _ := json.Marshal(lanePayload{Lane: lane, Endpoint: endpoint})
	now := w.o.Now()
	err := w.o.Store.EnqueueJob(ctx, &grants.Job{ID: "whlane_" + lane, Kind: JobKindWebhook, Payload: payload, RunAt: now, CreatedAt: now})
	if err != nil && !errors.Is(err, grants.ErrConflict) { // conflict: the lane is already queued
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
