package e2e

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/usher-oidc/usher/app"
)

// Who invited whom, who redeemed, who revoked: GET /api/audit answers it.
func TestAuditLog(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	api := funnelToken(t, d, "invitations:write invitations:read")
	kept := invite(t, d, api, map[string]any{"email": "audited@example.com", "roles": []string{"r"}, "send_email": false})
	gone := invite(t, d, api, map[string]any{"email": "gone@example.com", "send_email": false})
	apiCall(t, d, http.MethodDelete, "/api/invitations/"+gone["id"].(string), api, nil)
	a := newAgent(t, d.SPAURL)
	resp, body, v := a.signInWithInvitation(d, tokenOf(kept["url"].(string)), "signup",
		url.Values{"email": {"audited@example.com"}, "password": {"password-123456"}, "name": {"A"}})
	sub := subOf(t, d, a, resp, body, v)

	want := map[string]string{ // action → target
		"invitation.created":  kept["id"].(string),
		"invitation.revoked":  gone["id"].(string),
		"invitation.redeemed": kept["id"].(string),
	}
	found := map[string]map[string]any{}
	all := auditWhen(t, d, "/api/audit", api, func(a apiResult) bool {
		for _, rec := range a.body["records"].([]any) {
			r := rec.(map[string]any)
			if target, ok := want[r["action"].(string)]; ok && r["target"] == target {
				found[r["action"].(string)] = r
			}
		}
		return len(found) == len(want)
	})
	for action, r := range found {
		if action == "invitation.redeemed" && r["actor"] != sub {
			t.Errorf("redemption actor = %v, want the user %s", r["actor"], sub)
		}
		if action != "invitation.redeemed" && r["actor"] != "client:funnel" {
			t.Errorf("%v actor = %v, want client:funnel\n%s", action, r["actor"], all.raw)
		}
	}
	only := apiCall(t, d, http.MethodGet, "/api/audit?action=invitation.revoked", api, nil)
	if recs := only.body["records"].([]any); len(recs) != 1 {
		t.Fatalf("filtered audit: %s", only.raw)
	}
	if bad := apiCall(t, d, http.MethodGet, "/api/audit?since=yesterday", api, nil); bad.status != http.StatusBadRequest {
		t.Fatalf("bad since: %d", bad.status)
	}
}
