package e2e

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/usher-oidc/usher/app"
)

// followInvite opens an invitation link and returns the SPA's
// initiate_login_uri query (iss, login_hint, invitation).
func (a *agent) followInvite(link string) url.Values {
	a.t.Helper()
	resp, body := a.get(link)
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, a.stopAt+"/login") {
		a.t.Fatalf("invitation link: %d %s\n%s", resp.StatusCode, loc, clipText(body))
	}
	u, _ := url.Parse(loc)
	return u.Query()
}

// The whole invitation without a browser: API create → link → the SPA's
// initiate_login_uri → authorize (with the parameter, and with the cookie
// only) → devidp sign-up → tokens carry roles and CRM claims.
func TestInvitationRedeemedOnSignUp(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	token := funnelToken(t, d, "invitations:write invitations:read")
	for _, viaParam := range []bool{true, false} {
		name := "cookie"
		if viaParam {
			name = "parameter"
		}
		t.Run(name, func(t *testing.T) {
			email := "new-" + name + "@example.com"
			inv := invite(t, d, token, map[string]any{
				"email": email, "roles": []string{"customer"}, "claims": map[string]any{"crm_id": "C-42"},
				"metadata": map[string]any{"campaign": "spring"}, "send_email": false,
			})
			if inv["status"] != "pending" || !strings.HasPrefix(inv["url"].(string), strings.TrimSuffix(d.IssuerURL, "/")+"/invite/inv_") {
				t.Fatalf("created invitation: %v", inv)
			}
			a := newAgent(t, d.SPAURL)
			q := a.followInvite(inv["url"].(string))
			// No token in the app's URL: it would land in its history and logs.
			if q.Get("iss") != d.IssuerURL || q.Get("login_hint") != email || q.Has("invitation") {
				t.Fatalf("initiate_login_uri query: %v", q)
			}
			extra := url.Values{"login_hint": {email}}
			if viaParam {
				extra.Set("invitation", tokenOf(inv["url"].(string)))
			}
			u, verifier, _ := authorizeURL(d, extra)
			resp, body := a.get(u)
			// usher knows no user with this email: devidp opens sign-up.
			resp, body = a.devidpForm(resp, body, "signup", url.Values{"email": {email}, "password": {"pw-" + name + "-123456"}, "name": {"Invitee"}})
			// Nothing is bound before the person accepts.
			if got := apiCall(t, d, http.MethodGet, "/api/invitations/"+inv["id"].(string), token, nil); got.body["status"] != "pending" {
				t.Fatalf("invitation before accept: %s", got.raw)
			}
			resp, body = a.answerAccept(resp, body, "accept")
			cb := a.callbackOf(resp, body)
			if cb.Get("code") == "" {
				t.Fatalf("no code: %v", cb)
			}
			tr := exchangeCode(t, d, cb.Get("code"), verifier)
			for _, jwt := range []string{tr.IDToken, tr.AccessToken} {
				c := jwtClaims(t, jwt)
				if !slices.Equal(rolesOf(c), []string{"customer"}) || c["crm_id"] != "C-42" {
					t.Errorf("token claims: roles %v crm_id %v", rolesOf(c), c["crm_id"])
				}
				if _, leaked := c["campaign"]; leaked {
					t.Errorf("metadata leaked into a token")
				}
			}
			got := apiCall(t, d, http.MethodGet, "/api/invitations/"+inv["id"].(string), token, nil)
			if got.body["status"] != "redeemed" || got.body["url"] != nil {
				t.Errorf("invitation after redemption: %s", got.raw)
			}
			// The next sign-in (no invitation) still carries the grant.
			code, v2 := a.signIn(d, email, "pw-"+name+"-123456", false)
			tr2 := exchangeCode(t, d, code, v2)
			if c := jwtClaims(t, tr2.IDToken); !slices.Equal(rolesOf(c), []string{"customer"}) || c["crm_id"] != "C-42" {
				t.Errorf("later sign-in lost the grant: %v", c)
			}
		})
	}
}
