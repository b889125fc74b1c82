package e2e

import (
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/usher-oidc/usher/app"
)

// GET /api/invitations searches by the start of an email (any case) or an
// external ID, within a creation window, page by page; values it cannot use
// are a 400 naming the field.
func TestAPIInvitationSearch(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	api := funnelToken(t, d, "invitations:write invitations:read")
	// The dates around the creations (two at midnight UTC).
	today := time.Now().UTC().Format(time.DateOnly)
	for _, inv := range []map[string]any{
		{"email": "grace@example.com", "external_id": "crm-1"},
		{"email": "Grace.Hopper@navy.example", "external_id": "crm-2"},
		{"email": "graham@example.com", "external_id": "erp-3"},
		{"email": "ada@grace.example"},
	} {
		inv["send_email"] = false
		invite(t, d, api, inv)
	}
	emails := func(path string) []string {
		t.Helper()
		var out []string
		for range 10 {
			r := apiCall(t, d, http.MethodGet, path, api, nil)
			if r.status != http.StatusOK {
				t.Fatalf("GET %s: %d %s", path, r.status, r.raw)
			}
			list, _ := r.body["invitations"].([]any)
			for _, x := range list {
				m, _ := x.(map[string]any)
				out = append(out, m["email"].(string))
			}
			next, _ := r.body["next_cursor"].(string)
			if next == "" {
				return out
			}
			u, _ := url.Parse(path)
			q := u.Query()
			q.Set("cursor", next)
			path = u.Path + "?" + q.Encode()
		}
		t.Fatalf("GET %s: no end after 10 pages", path)
		return nil
	}
	until := time.Now().UTC().Format(time.DateOnly)
	tomorrow := time.Now().UTC().AddDate(0, 0, 1).Format(time.DateOnly)
	for _, c := range []struct {
		query string
		want  []string
	}{
		{"email_prefix=grace", []string{"Grace.Hopper@navy.example", "grace@example.com"}},
		{"email_prefix=GR&limit=1", []string{"Grace.Hopper@navy.example", "grace@example.com", "graham@example.com"}},
		{"external_id_prefix=crm-", []string{"grace@example.com", "Grace.Hopper@navy.example"}},
		{"email_prefix=gr&external_id_prefix=erp", []string{"graham@example.com"}},
		{"email_prefix=grace&status=revoked", nil},
		{"email_prefix=grace&created_since=" + today + "&created_until=" + until, []string{"Grace.Hopper@navy.example", "grace@example.com"}},
		{"email_prefix=grace&created_since=" + tomorrow, nil},
		{"email_prefix=ada&created_until=" + url.QueryEscape(time.Now().Add(time.Hour).UTC().Format(time.RFC3339)), []string{"ada@grace.example"}},
	} {
		if got := emails("/api/invitations?" + c.query); !slices.Equal(got, c.want) {
			t.Errorf("GET /api/invitations?%s: %v, want %v", c.query, got, c.want)
		}
	}
	for _, c := range []struct{ query, field string }{
		{"created_since=yesterday", "created_since"},
		{"created_until=2026-13-01", "created_until"},
		{"created_since=2026-12-02&created_until=2026-12-01", "created_until"},
	} {
		r := apiCall(t, d, http.MethodGet, "/api/invitations?"+c.query, api, nil)
		if r.status != http.StatusBadRequest || r.body["type"] != "https://usher.dev/problems/invalid-query" || !hasField(r.body, c.field) {
			t.Errorf("GET /api/invitations?%s: %d %s, want 400 invalid-query on %s", c.query, r.status, r.raw, c.field)
		}
	}
}
