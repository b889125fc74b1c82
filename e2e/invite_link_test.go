package e2e

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usher-oidc/usher/notify/mail"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/internal/testkit"
)

// TestInvitationLinkForms: an invitation chooses its link's form, resend
// keeps it, and /authorize takes token=inv_… as an alias of invitation=.
func TestInvitationLinkForms(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	token := funnelToken(t, d, "invitations:write invitations:read")
	issuer := strings.TrimSuffix(d.IssuerURL, "/")
	authorizePrefix := issuer + "/authorize?client_id=" + app.DevSPAClientID + "&invitation=inv_"

	tests := []struct {
		name, link, wantPrefix, wantLink string
	}{
		{"default", "", issuer + "/invite/inv_", "invite"},
		{"invite", "invite", issuer + "/invite/inv_", "invite"},
		{"authorize", "authorize", authorizePrefix, "authorize"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			email := "link-" + tt.name + "@example.com"
			body := map[string]any{"email": email, "client_id": app.DevSPAClientID, "send_email": false}
			if tt.link != "" {
				body["link"] = tt.link
			}
			inv := invite(t, d, token, body)
			link, _ := inv["url"].(string)
			if !strings.HasPrefix(link, tt.wantPrefix) || inv["link"] != tt.wantLink {
				t.Fatalf("created: url %q link %v, want prefix %q link %q", link, inv["link"], tt.wantPrefix, tt.wantLink)
			}
			if q := newAgent(t, d.SPAURL).followInvite(link); q.Get("login_hint") != email {
				t.Errorf("link %s: initiate_login_uri query %v", link, q)
			}
			res := apiCall(t, d, http.MethodPost, "/api/invitations/"+inv["id"].(string)+"/resend", token, nil)
			again, _ := res.body["url"].(string)
			if res.status != http.StatusOK || !strings.HasPrefix(again, tt.wantPrefix) || again == link {
				t.Errorf("resend: %d url %q, want a new link with prefix %q", res.status, again, tt.wantPrefix)
			}
		})
	}

	t.Run("mailed in its form", func(t *testing.T) {
		email := "link-mailed@example.com"
		inv := invite(t, d, token, map[string]any{"email": email, "client_id": app.DevSPAClientID, "link": "authorize"})
		link := inv["url"].(string)
		if !strings.HasPrefix(link, authorizePrefix) {
			t.Fatalf("url %q", link)
		}
		// The mailer runs in the background: wait for its message.
		var m mail.Message
		if !testkit.Within(10*time.Second, func() bool {
			msgs := d.Outbox.Messages()
			i := slices.IndexFunc(msgs, func(m mail.Message) bool { return m.To == email })
			if i >= 0 {
				m = msgs[i]
			}
			return i >= 0
		}) {
			t.Fatalf("no mail to %s in the outbox", email)
		}
		if m.Link != link || !strings.Contains(m.Text, link) {
			t.Errorf("mailed link %q (text %q), want %q", m.Link, clipText(m.Text), link)
		}
	})

	t.Run("token alias", func(t *testing.T) {
		email := "link-alias@example.com"
		inv := invite(t, d, token, map[string]any{"email": email, "send_email": false})
		tok := tokenOf(inv["url"].(string))
		alias := issuer + "/authorize?" + url.Values{"client_id": {app.DevSPAClientID}, "token": {tok}}.Encode()
		if q := newAgent(t, d.SPAURL).followInvite(alias); q.Get("login_hint") != email {
			t.Errorf("token= alias: initiate_login_uri query %v", q)
		}
		// Only inv_ values: any other token= is not an invitation link.
		other := issuer + "/authorize?" + url.Values{"client_id": {app.DevSPAClientID}, "token": {"abc"}}.Encode()
		resp, _ := newAgent(t, d.SPAURL).get(other)
		if loc := resp.Header.Get("Location"); strings.HasPrefix(loc, d.SPAURL+"/login") {
			t.Errorf("token=abc was taken as an invitation: %d %s", resp.StatusCode, loc)
		}
	})

	t.Run("unknown form", func(t *testing.T) {
		res := apiCall(t, d, http.MethodPost, "/api/invitations", token, map[string]any{"email": "x@example.com", "link": "magic"})
		if res.status != http.StatusBadRequest || !strings.Contains(res.raw, `"field":"link"`) {
			t.Errorf("link magic: %d %s", res.status, res.raw)
		}
	})
}
