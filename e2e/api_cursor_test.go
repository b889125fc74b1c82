package e2e

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/usher-oidc/usher/app"
)

// A cursor usher did not issue is the caller's mistake (400 invalid-query on
// the cursor field), not a store outage (503); an unknown member of an
// invitation body is named back to the caller.
func TestAPIInvalidCursorAndUnknownField(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	api := funnelToken(t, d, "invitations:write invitations:read")
	for _, email := range []string{"cursor-1@example.com", "cursor-2@example.com"} {
		invite(t, d, api, map[string]any{"email": email, "send_email": false})
	}
	// The outbox runner writes the audit log moments after the change.
	auditWhen(t, d, "/api/audit?action=invitation.created", api, func(r apiResult) bool {
		recs, _ := r.body["records"].([]any)
		return len(recs) >= 2
	})

	for _, path := range []string{"/api/invitations", "/api/audit"} {
		for _, cursor := range []string{"!!not a cursor!!", "eA", "TmFOfGludi0x"} {
			r := apiCall(t, d, http.MethodGet, path+"?cursor="+url.QueryEscape(cursor), api, nil)
			if r.status != http.StatusBadRequest || r.body["type"] != "https://usher.dev/problems/invalid-query" || !hasField(r.body, "cursor") {
				t.Errorf("GET %s?cursor=%q: %d %s, want 400 invalid-query on the cursor field", path, cursor, r.status, r.raw)
			}
		}
		first := apiCall(t, d, http.MethodGet, path+"?limit=1", api, nil)
		if first.status != http.StatusOK {
			t.Fatalf("GET %s?limit=1: %d %s", path, first.status, first.raw)
		}
		next, _ := first.body["next_cursor"].(string)
		if next == "" {
			t.Fatalf("GET %s?limit=1: no next_cursor: %s", path, first.raw)
		}
		if r := apiCall(t, d, http.MethodGet, path+"?limit=1&cursor="+url.QueryEscape(next), api, nil); r.status != http.StatusOK {
			t.Errorf("GET %s with the cursor usher issued: %d %s", path, r.status, r.raw)
		}
	}

	r := apiCall(t, d, http.MethodPost, "/api/invitations", api, `{"email": "x@example.com", "colour": "red"}`)
	const want = `Unknown field "colour"; see the API reference for the accepted fields.`
	if r.status != http.StatusBadRequest || r.body["detail"] != want {
		t.Fatalf("unknown field: %d %s, want detail %q", r.status, r.raw, want)
	}
}

// hasField reports whether a problem's errors name field.
func hasField(problem map[string]any, field string) bool {
	errs, _ := problem["errors"].([]any)
	for _, e := range errs {
		if m, _ := e.(map[string]any); m["field"] == field {
			return true
		}
	}
	return false
}
