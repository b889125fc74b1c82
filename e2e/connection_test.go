package e2e

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/devidp"
	"github.com/usher-oidc/usher/internal/testkit"
)

// A user of a second database connection (auth0|… like every database
// user) redeems an invitation: usher names the connection the Management
// API gives, and the invitation.redeemed webhook says where it came from.
func TestConnectionFromManagementAPIWebhook(t *testing.T) {
	t.Parallel()
	d, rc := startDevWithWebhooks(t)
	if _, err := d.IDP.AddUser(devidp.User{Email: "partner@example.com", Password: "password-123456", EmailVerified: true, Connection: "Partners-DB"}); err != nil {
		t.Fatal(err)
	}
	api := funnelToken(t, d, "invitations:write invitations:read")
	inv := invite(t, d, api, map[string]any{"email": "partner@example.com", "roles": []string{"customer"}, "send_email": false})
	a := newAgent(t, d.SPAURL)
	resp, body, v := a.signInWithInvitation(d, tokenOf(inv["url"].(string)), "login",
		url.Values{"email": {"partner@example.com"}, "password": {"password-123456"}})
	subOf(t, d, a, resp, body, v)
	got := apiCall(t, d, http.MethodGet, "/api/invitations/"+inv["id"].(string), api, nil).body
	if got["status"] != "redeemed" || got["redeemed_connection"] != "Partners-DB" {
		t.Fatalf("invitation %v: want redeemed through Partners-DB", got)
	}
	var redeemed map[string]any
	testkit.Within(30*time.Second, func() bool {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		for _, e := range rc.events {
			if e["type"] == "invitation.redeemed" {
				redeemed, _ = e["data"].(map[string]any)
				return true
			}
		}
		return false
	})
	if redeemed == nil {
		t.Fatalf("no invitation.redeemed webhook: %v", rc.types())
	}
	if redeemed["connection"] != "Partners-DB" || redeemed["connection_source"] != "management_api" {
		t.Errorf("invitation.redeemed connection %v (source %v), want Partners-DB from the management_api", redeemed["connection"], redeemed["connection_source"])
	}
}

// The Management API down: the sign-in goes on with the sub prefix's name.
func TestConnectionFallsBackToSubPrefix(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	if _, err := d.IDP.AddUser(devidp.User{Email: "offline@example.com", Password: "password-123456", EmailVerified: true, Connection: "Partners-DB"}); err != nil {
		t.Fatal(err)
	}
	d.IDP.ManagementDown(true)
	api := funnelToken(t, d, "invitations:write invitations:read")
	inv := invite(t, d, api, map[string]any{"email": "offline@example.com", "send_email": false})
	a := newAgent(t, d.SPAURL)
	resp, body, v := a.signInWithInvitation(d, tokenOf(inv["url"].(string)), "login",
		url.Values{"email": {"offline@example.com"}, "password": {"password-123456"}})
	subOf(t, d, a, resp, body, v)
	got := apiCall(t, d, http.MethodGet, "/api/invitations/"+inv["id"].(string), api, nil).body
	if got["status"] != "redeemed" || got["redeemed_connection"] != devidp.ConnectionPassword {
		t.Fatalf("invitation %v: want redeemed through %s (the prefix's name)", got, devidp.ConnectionPassword)
	}
}
