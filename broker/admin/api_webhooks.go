package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/usher-oidc/usher/notify/webhooks"

	"github.com/usher-oidc/usher/grants"
)

// WebhookAdmin is what the admin API needs of the webhook sender
// (*webhooks.Webhooks satisfies it).
type WebhookAdmin interface {
	Deliveries(ctx context.Context, endpointID string, limit int) ([]webhooks.WebhookDelivery, error)
	Redeliver(ctx context.Context, id string) error
}

var _ WebhookAdmin = (*webhooks.Webhooks)(nil)

// webhookRoutes mounts the delivery log and manual redelivery:
//
//	GET  /api/webhooks/{endpoint}/deliveries?limit=N   (invitations:read)  newest first, N 1..1000 (default 50)
//	POST /api/webhooks/deliveries/{id}/redeliver       (invitations:write) 202; same webhook-id and body
func (h *API) webhookRoutes(mux *http.ServeMux, wh WebhookAdmin) {
	mux.Handle("GET /api/webhooks/{endpoint}/deliveries", h.api(scopeRead, func(w http.ResponseWriter, r *http.Request, _ Caller) {
		h.apiWebhookDeliveries(w, r, wh)
	}))
	mux.Handle("POST /api/webhooks/deliveries/{id}/redeliver", h.api(scopeWrite, func(w http.ResponseWriter, r *http.Request, c Caller) {
		h.apiWebhookRedeliver(w, r, c, wh)
	}))
}

func (h *API) apiWebhookDeliveries(w http.ResponseWriter, r *http.Request, wh WebhookAdmin) {
	endpoint := r.PathValue("endpoint")
	limit, ok := queryLimit(w, r.URL.Query(), 50)
	if !ok {
		return
	}
	ds, err := wh.Deliveries(r.Context(), endpoint, limit)
	switch {
	case errors.Is(err, grants.ErrNotFound):
		writeProblem(w, http.StatusNotFound, "not-found", "Webhook endpoint not found",
			fmt.Sprintf("No webhook endpoint has the id %q; endpoints are configured under webhooks in usher's config.", clip(endpoint, 100)))
		return
	case err != nil:
		h.storeProblem(w, r, "reading the webhook delivery log", err)
		return
	}
	if ds == nil {
		ds = []webhooks.WebhookDelivery{}
	}
	writeJSON(w, http.StatusOK, struct {
		Deliveries []webhooks.WebhookDelivery `json:"deliveries"`
	}{ds})
}

func (h *API) apiWebhookRedeliver(w http.ResponseWriter, r *http.Request, c Caller, wh WebhookAdmin) {
	id := r.PathValue("id")
	err := wh.Redeliver(r.Context(), id)
	switch {
	case errors.Is(err, grants.ErrNotFound):
		writeProblem(w, http.StatusNotFound, "not-found", "Delivery not found",
			fmt.Sprintf("No delivery with the id %q is in the delivery log (it keeps the latest deliveries of each endpoint).", clip(id, 100)))
		return
	case errors.Is(err, webhooks.ErrDeliveryPending):
		writeProblem(w, http.StatusConflict, "delivery-pending", "Delivery still pending",
			"This delivery is still being tried; it can be redelivered once it is delivered or has failed.")
		return
	case err != nil:
		h.storeProblem(w, r, "queueing the redelivery", err)
		return
	}
	h.Logger.InfoContext(r.Context(), "webhook redelivery requested", "webhook_id", id, "client_id", c.ClientID)
	writeJSON(w, http.StatusAccepted, struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}{id, webhooks.DeliveryPending})
}
