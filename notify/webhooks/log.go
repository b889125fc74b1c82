package webhooks

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/grants/outbox"
)

// Deliveries lists an endpoint's deliveries, newest event first (limit:
// default 50, at most 1000). ErrNotFound for an endpoint that is not configured.
func (w *Webhooks) Deliveries(ctx context.Context, endpointID string, limit int) ([]WebhookDelivery, error) {
	if w.endpoints[endpointID] == nil {
		return nil, fmt.Errorf("webhooks: endpoint %q: %w", endpointID, grants.ErrNotFound)
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

func deliveryOf(j *grants.Job) (WebhookDelivery, bool) {
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
		return fmt.Errorf("webhooks: redeliver %q: %w", grants.ClipStr(deliveryID, 80), grants.ErrNotFound)
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
	return fmt.Errorf("webhooks: redeliver %s: %w", deliveryID, grants.ErrNotFound)
}

func (w *Webhooks) redeliver(ctx context.Context, logJob *grants.Job, d WebhookDelivery) error {
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
	eventJobID := fmt.Sprintf("whevt_%016x_%s_%s", uint64(w.stamp(now, false)), d.ID, outbox.RandomHex(4))
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
