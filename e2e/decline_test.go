package e2e

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usher-oidc/usher/internal/testkit"
)

// Decline on the accept page: the invitation becomes declined for good (an
// audit record, an invitation.declined webhook, a "declined" line on its
// timeline), the sign-in continues without it, and the link afterwards
// answers 410 "This invitation was declined". Declined is final for revoke
// and resend, and listable with status=declined.
func TestAcceptPageDecline(t *testing.T) {
	t.Parallel()
	d, rc := startDevWithWebhooks(t)
	api := funnelToken(t, d, "invitations:write invitations:read")

	// During a sign-in that carries the invitation.
	inv := invite(t, d, api, map[string]any{"email": "no-thanks@example.com", "roles": []string{"customer"}, "send_email": false})
	id := inv["id"].(string)
	a := newAgent(t, d.SPAURL)
	u, verifier, _ := authorizeURL(d, url.Values{"invitation": {tokenOf(inv["url"].(string))}})
	resp, body := a.get(u)
	resp, body = a.devidpForm(resp, body, "signup", url.Values{"email": {"no-thanks@example.com"}, "password": {"password-123456"}, "name": {"N"}})
	if !strings.Contains(body, ">Decline</button>") {
		t.Fatalf("the accept page must offer Decline:\n%s", clipText(body))
	}
	resp, body = a.answerAccept(resp, body, "decline")
	c := jwtClaims(t, exchangeCode(t, d, a.callbackOf(resp, body).Get("code"), verifier).IDToken)
	if roles := rolesOf(c); len(roles) != 0 {
		t.Fatalf("Decline still granted roles %v", roles)
	}
	sub := claimString(c, "sub")
	st, events := invitationStatus(t, d, api, id)
	if st != "declined" || !slices.Contains(events, "declined") {
		t.Fatalf("after Decline: status %s, events %v", st, events)
	}
	got := apiCall(t, d, http.MethodGet, "/api/invitations/"+id, api, nil)
	if got.body["declined_by"] != sub || got.body["declined_at"] == nil {
		t.Errorf("declined_by/declined_at: %s", got.raw)
	}

	// The link now says so, with 410, to this browser and to a fresh one.
	for _, who := range []*agent{a, newAgent(t, d.SPAURL)} {
		resp, body = who.get(inv["url"].(string))
		if resp.StatusCode != http.StatusGone || !strings.Contains(body, "This invitation was declined") {
			t.Fatalf("a declined link: %d\n%s", resp.StatusCode, clipText(body))
		}
	}
	// And the next sign-in of this browser goes straight to the app.
	code, v := a.signIn(d, "no-thanks@example.com", "password-123456", false)
	if roles := rolesOf(jwtClaims(t, exchangeCode(t, d, code, v).IDToken)); len(roles) != 0 {
		t.Fatalf("a later sign-in got %v", roles)
	}

	// Final for the admin API; listable as declined, not as pending.
	if r := apiCall(t, d, http.MethodDelete, "/api/invitations/"+id, api, nil); r.status != http.StatusConflict || !strings.Contains(r.raw, "declined") {
		t.Errorf("revoking a declined invitation: %d %s", r.status, r.raw)
	}
	if r := apiCall(t, d, http.MethodPost, "/api/invitations/"+id+"/resend", api, nil); r.status != http.StatusConflict {
		t.Errorf("resending a declined invitation: %d %s", r.status, r.raw)
	}
	listed := func(status string) []string {
		r := apiCall(t, d, http.MethodGet, "/api/invitations?status="+status, api, nil)
		if r.status != http.StatusOK {
			t.Fatalf("list status=%s: %d %s", status, r.status, r.raw)
		}
		var ids []string
		for _, i := range r.body["invitations"].([]any) {
			ids = append(ids, i.(map[string]any)["id"].(string))
		}
		return ids
	}
	if ids := listed("declined"); !slices.Equal(ids, []string{id}) {
		t.Errorf("status=declined lists %v, want [%s]", ids, id)
	}
	if slices.Contains(listed("pending"), id) {
		t.Errorf("a declined invitation is listed as pending")
	}

	// From the link, in a browser already signed in to usher.
	inv2 := invite(t, d, api, map[string]any{"email": "linked@example.com", "roles": []string{"customer"}, "send_email": false})
	b, _ := signedInAgent(t, d, "linked@example.com")
	resp, body = b.get(inv2["url"].(string))
	resp, body = b.answerAccept(resp, body, "decline")
	if resp.StatusCode != http.StatusSeeOther && resp.StatusCode != http.StatusFound {
		t.Fatalf("Decline from the link should continue to the app, got %d\n%s", resp.StatusCode, clipText(body))
	}
	if st, events := invitationStatus(t, d, api, inv2["id"].(string)); st != "declined" || !slices.Contains(events, "declined") {
		t.Fatalf("after Decline from the link: status %s, events %v", st, events)
	}

	// The audit log and the webhook receiver saw both.
	targets := map[string]string{}
	auditWhen(t, d, "/api/audit?action=invitation.declined", api, func(audit apiResult) bool {
		for _, rec := range audit.body["records"].([]any) {
			r := rec.(map[string]any)
			targets[r["target"].(string)] = r["actor"].(string)
		}
		return targets[id] != "" && targets[inv2["id"].(string)] != ""
	})
	if targets[id] != sub {
		t.Errorf("audit invitation.declined: actor %q, want %s", targets[id], sub)
	}
	declined := func() int {
		n := 0
		for _, ty := range rc.types() {
			if ty == "invitation.declined" {
				n++
			}
		}
		return n
	}
	reached := testkit.Within(20*time.Second, func() bool { return declined() >= 2 })
	if n := declined(); !reached || n != 2 {
		t.Fatalf("invitation.declined webhooks: %d, events %v", n, rc.types())
	}
}
