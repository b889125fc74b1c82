package e2e

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
)

// admin.emails bootstraps the first admin: signing in with that (verified)
// email opens /admin; anyone else is refused.
func TestAdminBootstrapFromConfig(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{Configure: func(c *config.Config) { c.Admin.Emails = []string{strings.ToUpper(app.DevUserEmail)} }})
	base := strings.TrimSuffix(d.IssuerURL, "/")
	for _, tc := range []struct {
		email, password, form string
		status                int
	}{
		{app.DevUserEmail, app.DevUserPassword, "login", http.StatusOK},
		{"someone@example.com", "password-123456", "signup", http.StatusForbidden},
	} {
		a := newAgent(t, "http://never.invalid")
		resp, body := a.get(base + "/admin/login")
		if tc.form == "signup" {
			u := *resp.Request.URL
			u.Path = "/u/signup"
			resp, body = a.get(u.String())
		}
		resp, body = a.devidpForm(resp, body, tc.form, url.Values{"email": {tc.email}, "password": {tc.password}, "name": {"N"}})
		if resp.StatusCode != tc.status || resp.Request.URL.Path != "/admin" {
			t.Fatalf("%s on /admin: %d at %s\n%s", tc.email, resp.StatusCode, resp.Request.URL, clipText(body))
		}
	}
}
