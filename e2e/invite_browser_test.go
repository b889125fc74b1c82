package e2e

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
)

// The invitation as a person lives it, in a real browser, with the mail
// delivered over real SMTP: sign-up, sign-in of an existing user, and a
// (simulated) Google sign-in each end in the SPA with the invitation's roles
// and CRM claims.
func TestBrowserInvitationFlows(t *testing.T) {
	t.Parallel()
	mb := startMailbox(t)
	host, port, _ := strings.Cut(mb.addr, ":")
	p, _ := strconv.Atoi(port)
	d := startDev(t, app.DevOptions{Configure: func(c *config.Config) {
		c.Mail.SMTP = config.SMTP{Host: host, Port: p, TLS: "none"}
		c.Mail.From = "usher <no-reply@example.com>"
		c.Invitations.AppName = "Customer space"
	}})
	api := funnelToken(t, d, "invitations:write invitations:read")
	// Ada has used the app before, so usher knows her.
	ada := newAgent(t, d.SPAURL)
	code, v := ada.signIn(d, app.DevUserEmail, app.DevUserPassword, false)
	exchangeCode(t, d, code, v)

	tests := []struct {
		name, email string
		// act completes the upstream page(s) after the link was followed.
		act func(t *testing.T, ctx context.Context, email string)
	}{
		{"sign-up", "newbie@example.com", func(t *testing.T, ctx context.Context, email string) {
			// usher knows nobody with this email: devidp opens sign-up, prefilled.
			prefilled := pollJS(t, ctx, "waiting for the sign-up form", 20*time.Second,
				`(document.querySelector('form[action="/u/signup"] input[name=email]') || {}).value || ""`)
			if prefilled != email {
				t.Errorf("sign-up email prefilled with %q", prefilled)
			}
			signUpAtDevIDP(t, ctx, email, "newbie-password-1", "New Bie")
		}},
		{"existing user signs in", app.DevUserEmail, func(t *testing.T, ctx context.Context, email string) {
			prefilled := pollJS(t, ctx, "waiting for the login form", 20*time.Second,
				`(document.querySelector('form[action="/u/login"] input[name=email]') || {}).value || ""`)
			if prefilled != email {
				t.Errorf("login email prefilled with %q", prefilled)
			}
			signInAtDevIDP(t, ctx, email, app.DevUserPassword)
		}},
		{"google", "gina@gmail.example", func(t *testing.T, ctx context.Context, email string) {
			do(t, ctx, "choosing Google",
				chromedp.Click(chromedp.CSS(`form[action="/u/social"]:has(input[value="google-oauth2"]) button`)),
				chromedp.WaitVisible(chromedp.CSS(`form[action="/u/social"][method=post] input[name=email]`)),
				chromedp.SetValue(chromedp.CSS(`form[action="/u/social"][method=post] input[name=email]`), email),
				chromedp.Click(chromedp.CSS(`form[action="/u/social"][method=post] button[type=submit]`)),
			)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			inv := invite(t, d, api, map[string]any{"email": tc.email, "roles": []string{"customer", "beta"},
				"claims": map[string]any{"crm_id": "CRM-" + tc.name}, "inviter": "Funnel"})
			if inv["url"] == nil {
				t.Fatalf("no url: %v", inv)
			}
			msg := mb.waitFor(t, tc.email, 20*time.Second)
			link := msg.inviteLink(t)
			if link != inv["url"] {
				t.Fatalf("mailed link differs from the API's")
			}
			// The mail names the app the accept page names: the invitation
			// goes to the only public client, whose name wins over app_name.
			if !strings.Contains(msg.Subject, "Demo SPA") {
				t.Errorf("subject %q", msg.Subject)
			}
			ctx := newBrowser(t)
			do(t, ctx, "following the invitation link", chromedp.Navigate(link))
			tc.act(t, ctx, tc.email)
			acceptInBrowser(t, ctx, "Demo SPA", tc.email)
			st := waitSignedIn(t, ctx)
			if !slices.Equal(rolesOf(st.IDClaims), []string{"customer", "beta"}) || st.IDClaims["crm_id"] != "CRM-"+tc.name {
				t.Errorf("ID token: roles %v crm_id %v", rolesOf(st.IDClaims), st.IDClaims["crm_id"])
			}
			at, _ := st.ATClaims.(map[string]any)
			if !slices.Equal(rolesOf(at), []string{"customer", "beta"}) || at["crm_id"] != "CRM-"+tc.name {
				t.Errorf("access token: %v", at)
			}
			if !slices.Equal(rolesOf(st.Userinfo), []string{"customer", "beta"}) {
				t.Errorf("userinfo: %v", st.Userinfo)
			}
			// The SPA's URL no longer holds the code; the invitation is spent.
			r := apiCall(t, d, http.MethodGet, "/api/invitations/"+inv["id"].(string), api, nil)
			if r.body["status"] != "redeemed" || r.body["email_status"] != "sent" {
				t.Errorf("invitation after the flow: %s", r.raw)
			}
		})
	}
}
