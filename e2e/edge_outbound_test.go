package e2e

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
	"github.com/usher-oidc/usher/internal/testkit"
)

// redirector answers every request with a redirect to target, and target
// counts what reaches it: usher must not follow.
func redirector(t *testing.T) (from string, reached *atomic.Int64) {
	reached = &atomic.Int64{}
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		json.NewEncoder(w).Encode(map[string]any{"allow": true})
	}))
	t.Cleanup(target.Close)
	src := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+"/elsewhere", http.StatusTemporaryRedirect)
	}))
	t.Cleanup(src.Close)
	return src.URL, reached
}

// The redemption hook does not follow a redirect: a 3xx is a failed call.
func TestRedemptionHookNoRedirect(t *testing.T) {
	t.Parallel()
	hookURL, reached := redirector(t)
	d := startDev(t, app.DevOptions{Configure: func(c *config.Config) {
		c.Invitations.RedemptionHook = config.RedemptionHook{URL: hookURL, Timeout: config.Duration(2 * time.Second), Policy: "fail_closed"}
	}})
	api := funnelToken(t, d, "invitations:write invitations:read")
	const email = "redirected@example.com"
	inv := invite(t, d, api, map[string]any{"email": email, "roles": []string{"customer"}, "send_email": false})
	a := newAgent(t, d.SPAURL)
	resp, body, _ := a.signInWithInvitation(d, tokenOf(inv["url"].(string)), "signup",
		url.Values{"email": {email}, "password": {"password-123456"}, "name": {"R"}})
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "could not be checked") {
		t.Errorf("redirecting hook: %d, want the fail_closed refusal\n%s", resp.StatusCode, clipText(body))
	}
	if n := reached.Load(); n != 0 {
		t.Fatalf("the hook's redirect was followed: the target received %d requests", n)
	}
}

// A webhook receiver that redirects gets a failed attempt, and the target of
// the redirect receives nothing.
func TestWebhookNoRedirect(t *testing.T) {
	t.Parallel()
	whURL, reached := redirector(t)
	key := []byte("0123456789abcdef0123456789abcdef")
	d := startDev(t, app.DevOptions{WebhookBackoff: 20 * time.Millisecond, Configure: func(c *config.Config) {
		c.Webhooks = []config.Webhook{{ID: "crm", URL: whURL, Secrets: []string{"whsec_" + base64.StdEncoding.EncodeToString(key)}}}
	}})
	api := funnelToken(t, d, "invitations:write invitations:read")
	invite(t, d, api, map[string]any{"email": "wh-redirect@example.com", "send_email": false})
	var last map[string]any
	testkit.Eventually(t, "a second delivery attempt in the log of crm", func() bool {
		log := apiCall(t, d, http.MethodGet, "/api/webhooks/crm/deliveries?limit=10", api, nil)
		ds, _ := log.body["deliveries"].([]any)
		for _, x := range ds {
			if dl := x.(map[string]any); dl["attempts"].(float64) >= 2 {
				last = dl
			}
		}
		return last != nil
	})
	if last["status"] == "delivered" || last["last_status_code"] != float64(http.StatusTemporaryRedirect) {
		t.Errorf("redirected delivery recorded as %v", last)
	}
	if n := reached.Load(); n != 0 {
		t.Fatalf("the webhook's redirect was followed: the target received %d requests", n)
	}
}

// inviter is a plain display name: no links, no control characters or line
// breaks, at most 64 characters; refusals name the field.
func TestInviterIsPlainName(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	api := funnelToken(t, d, "invitations:write invitations:read")
	refused := []string{
		"http://evil.example/x", "Visit evil.example://now", "see www.evil.example", "WWW.EVIL.EXAMPLE",
		"Ada\nLovelace", "Ada\r\nBcc: x@evil.example", "Ada\tLovelace", "Ada\u202eecalevoL", "Ada\u2028Lovelace",
		strings.Repeat("a", 65),
	}
	for i, inviter := range refused {
		r := apiCall(t, d, http.MethodPost, "/api/invitations", api,
			map[string]any{"email": "inviter" + string(rune('a'+i)) + "@example.com", "inviter": inviter, "send_email": false})
		errs, _ := r.body["errors"].([]any)
		named := false
		for _, e := range errs {
			if m, _ := e.(map[string]any); m["field"] == "inviter" {
				named = true
			}
		}
		if r.status != http.StatusBadRequest || r.header.Get("Content-Type") != "application/problem+json" || !named {
			t.Errorf("inviter %q: %d %s, want 400 problem naming inviter", inviter, r.status, clipText(r.raw))
		}
	}
	// A real name is fine, and the outbox links to the invitation only.
	inv := invite(t, d, api, map[string]any{"email": "named@example.com", "inviter": "Ada Lovelace (Sales)", "send_email": true})
	var link string
	if !testkit.Within(10*time.Second, func() bool {
		resp, err := http.Get(d.OutboxURL + "messages.json")
		if err != nil {
			t.Fatal(err)
		}
		var msgs []struct {
			Link string `json:"link"`
		}
		json.NewDecoder(resp.Body).Decode(&msgs)
		resp.Body.Close()
		if len(msgs) > 0 {
			link = msgs[0].Link
		}
		return link != ""
	}) {
		t.Fatal("no message in the dev outbox within 10s")
	}
	if link != inv["url"] {
		t.Errorf("outbox link %q, want the invitation link %q", link, inv["url"])
	}
}
