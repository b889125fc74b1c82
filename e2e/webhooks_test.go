package e2e

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
	"github.com/usher-oidc/usher/internal/testkit"
)

// receiver verifies Standard Webhooks signatures on its own (not with
// usher's code) and records the events it accepts.
type receiver struct {
	secret []byte
	mu     sync.Mutex
	events []map[string]any
	ids    map[string]bool
	fail   int // answer 500 this many times first
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, body, ok := verifiedWebhook(r, rc.secret)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if !ok {
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	if rc.fail > 0 {
		rc.fail--
		http.Error(w, "try later", http.StatusInternalServerError)
		return
	}
	if !rc.ids[id] { // deduplicate on webhook-id, as the spec asks receivers to
		rc.ids[id] = true
		var e map[string]any
		json.Unmarshal(body, &e)
		rc.events = append(rc.events, e)
	}
	w.WriteHeader(http.StatusNoContent)
}

func (rc *receiver) types() []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []string
	for _, e := range rc.events {
		out = append(out, e["type"].(string))
	}
	return out
}

// Webhooks from a running usher: signed events for an invitation's life and
// the user it created reach a receiver that fails twice first; the delivery
// log and manual redelivery work through the admin API.
func TestWebhooksFromUsher(t *testing.T) {
	t.Parallel()
	key := []byte("0123456789abcdef0123456789abcdef")
	rc := &receiver{secret: key, ids: map[string]bool{}, fail: 2}
	srv := httptest.NewServer(rc)
	t.Cleanup(srv.Close)
	d := startDev(t, app.DevOptions{WebhookBackoff: 20 * time.Millisecond, Configure: func(c *config.Config) {
		c.Webhooks = []config.Webhook{{ID: "crm", URL: srv.URL, Secrets: []string{"whsec_" + base64.StdEncoding.EncodeToString(key)}}}
	}})
	api := funnelToken(t, d, "invitations:write invitations:read")
	inv := invite(t, d, api, map[string]any{"email": "hooked@example.com", "roles": []string{"customer"}, "send_email": false})
	a := newAgent(t, d.SPAURL)
	resp, body, v := a.signInWithInvitation(d, tokenOf(inv["url"].(string)), "signup",
		url.Values{"email": {"hooked@example.com"}, "password": {"password-123456"}, "name": {"H"}})
	subOf(t, d, a, resp, body, v)
	other := invite(t, d, api, map[string]any{"email": "dropped@example.com", "send_email": false})
	apiCall(t, d, http.MethodDelete, "/api/invitations/"+other["id"].(string), api, nil)

	want := []string{"invitation.created", "user.created", "invitation.redeemed", "grant.changed", "invitation.created", "invitation.revoked"}
	if !testkit.Within(30*time.Second, func() bool { return len(rc.types()) >= len(want) }) {
		t.Errorf("%d webhooks within 30s, want %d", len(rc.types()), len(want)) // which are missing: below
	}
	got := rc.types()
	for _, w := range want {
		found := false
		for i, g := range got {
			if g == w {
				got = append(got[:i], got[i+1:]...)
				found = true
				break
			}
		}
		if !found {
			t.Fatalf("receiver lacks %s: got %v", w, rc.types())
		}
	}
	// Per invitation, in order: created before redeemed.
	order := map[string][]string{}
	rc.mu.Lock()
	for _, e := range rc.events {
		data, _ := e["data"].(map[string]any)
		if id, _ := data["invitation_id"].(string); id != "" && strings.HasPrefix(e["type"].(string), "invitation.") {
			order[id] = append(order[id], e["type"].(string))
		}
	}
	rc.mu.Unlock()
	if o := order[inv["id"].(string)]; len(o) != 2 || o[0] != "invitation.created" || o[1] != "invitation.redeemed" {
		t.Errorf("events of one invitation out of order: %v", o)
	}

	log := apiCall(t, d, http.MethodGet, "/api/webhooks/crm/deliveries?limit=50", api, nil)
	deliveries, _ := log.body["deliveries"].([]any)
	if log.status != http.StatusOK || len(deliveries) < len(want) {
		t.Fatalf("delivery log: %d %s", log.status, log.raw)
	}
	first := deliveries[len(deliveries)-1].(map[string]any)
	if first["status"] != "delivered" || first["attempts"].(float64) < 2 {
		t.Errorf("the first delivery survived the failures? %v", first)
	}
	before := len(rc.types())
	attempts := first["attempts"].(float64)
	if r := apiCall(t, d, http.MethodPost, "/api/webhooks/deliveries/"+first["id"].(string)+"/redeliver", api, nil); r.status != http.StatusAccepted {
		t.Fatalf("redeliver: %d %s", r.status, r.raw)
	}
	// Wait until the log shows the redelivery made, then check the receiver
	// recognised it by its webhook-id.
	if !testkit.Within(30*time.Second, func() bool {
		log := apiCall(t, d, http.MethodGet, "/api/webhooks/crm/deliveries?limit=50", api, nil)
		for _, x := range log.body["deliveries"].([]any) {
			dl := x.(map[string]any)
			if dl["id"] == first["id"] && dl["status"] == "delivered" && dl["attempts"].(float64) > attempts {
				return true
			}
		}
		return false
	}) {
		t.Fatal("the redelivery was never made")
	}
	if after := len(rc.types()); after != before {
		t.Errorf("a redelivery with the same webhook-id was not deduplicated by the receiver")
	}
}

// startDevWithWebhooks runs usher dev with one webhook endpoint, "crm", at
// a receiver of the test's own (only the given event types, when any),
// retrying fast.
func startDevWithWebhooks(t *testing.T, events ...string) (*app.Dev, *receiver) {
	t.Helper()
	key := []byte("0123456789abcdef0123456789abcdef")
	rc := &receiver{secret: key, ids: map[string]bool{}}
	srv := httptest.NewServer(rc)
	t.Cleanup(srv.Close)
	d := startDev(t, app.DevOptions{WebhookBackoff: 20 * time.Millisecond, Configure: func(c *config.Config) {
		c.Webhooks = []config.Webhook{{ID: "crm", URL: srv.URL, Secrets: []string{"whsec_" + base64.StdEncoding.EncodeToString(key)},
			Events: events}}
	}})
	return d, rc
}

// verifiedWebhook reads a Standard Webhooks request and checks its
// signature with key, with the test's own code (not usher's); ok is false
// for a bad or missing signature.
func verifiedWebhook(r *http.Request, key []byte) (id string, body []byte, ok bool) {
	body, _ = io.ReadAll(r.Body)
	id, ts := r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp")
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "." + string(body)))
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	for _, sig := range strings.Fields(r.Header.Get("webhook-signature")) {
		ok = ok || hmac.Equal([]byte(sig), []byte(want))
	}
	return id, body, ok
}
