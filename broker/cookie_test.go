package broker_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// Over https the browser-bound cookies use the __Host- prefix (bound to this
// host, path /, Secure), are HttpOnly and SameSite=Lax; over plain http
// (loopback dev only) the prefix is impossible and not used.
func TestCookieAttributes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		issuer, name string
		secure       bool
	}{
		{"https://login.example.com", "__Host-usher_invitation", true},
		{"http://127.0.0.1:9", "usher_invitation", false},
	} {
		env := newTestBroker(t, tc.issuer)
		req := httptest.NewRequest(http.MethodPost, "/api/invitations", strings.NewReader(`{"email":"c@example.com","send_email":false}`))
		req.Header.Set("Authorization", "Bearer "+env.token)
		rec := httptest.NewRecorder()
		env.h.ServeHTTP(rec, req)
		var inv struct {
			URL string `json:"url"`
		}
		json.Unmarshal(rec.Body.Bytes(), &inv)
		if inv.URL == "" {
			t.Fatalf("%s: create: %d %s", tc.issuer, rec.Code, rec.Body)
		}
		rec = httptest.NewRecorder()
		env.h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/invite/"+inv.URL[strings.LastIndex(inv.URL, "/")+1:], nil))
		cookies := (&http.Response{Header: rec.Header()}).Cookies()
		if len(cookies) != 1 {
			t.Fatalf("%s: cookies %v", tc.issuer, rec.Header().Values("Set-Cookie"))
		}
		c := cookies[0]
		if c.Name != tc.name || c.Secure != tc.secure || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" || c.Domain != "" {
			t.Errorf("%s: cookie %+v", tc.issuer, c)
		}
	}
}
