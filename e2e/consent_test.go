package e2e

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/usher-oidc/usher/app"
)

// signedInAgent signs a new person up through the SPA (no invitation) and
// returns their browser and usher user ID.
func signedInAgent(t *testing.T, d *app.Dev, email string) (*agent, string) {
	t.Helper()
	a := newAgent(t, d.SPAURL)
	code, v := a.signIn(d, email, "password-123456", true)
	tr := exchangeCode(t, d, code, v)
	return a, claimString(jwtClaims(t, tr.IDToken), "sub")
}

// invitationStatus reads an invitation's status and timeline event types.
func invitationStatus(t *testing.T, d *app.Dev, api, id string) (string, []string) {
	t.Helper()
	r := apiCall(t, d, http.MethodGet, "/api/invitations/"+id, api, nil)
	var types []string
	events, _ := r.body["events"].([]any)
	for _, e := range events {
		if m, ok := e.(map[string]any); ok {
			types = append(types, m["type"].(string))
		}
	}
	s, _ := r.body["status"].(string)
	return s, types
}

// A link planted in a signed-in person's browser (an attacker made it open
// /invite/<token>) binds nothing by itself: the person sees usher's accept
// page, naming their own account, both at once and at their next ordinary
// sign-in; "Not now" signs them in without it, leaves the invitation pending
// and makes the browser forget it. Their claims never change.
func TestPlantedInvitationNeedsAccept(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	api := funnelToken(t, d, "invitations:write invitations:read")
	victim, sub := signedInAgent(t, d, "victim@example.com")
	if r := apiCall(t, d, http.MethodPut, "/api/users/"+sub+"/grants/claims/crm_id", api, map[string]any{"value": "C-VICTIM"}); r.status != http.StatusOK {
		t.Fatalf("setting the victim's crm_id: %d %s", r.status, r.raw)
	}
	evil := invite(t, d, api, map[string]any{"email": "mallory@example.com", "roles": []string{"attacker-role"},
		"claims": map[string]any{"crm_id": "C-MALLORY", "org_id": "O-EVIL"}, "send_email": false})

	// The planted link: usher shows its page, it does not redeem.
	resp, body := victim.get(evil["url"].(string))
	if !isAcceptPage(resp, body) || !strings.Contains(body, "victim@example.com") || !strings.Contains(body, `id="email-differs"`) {
		t.Fatalf("a signed-in browser opening a link must see the accept page naming its account and the other email:\n%s", clipText(body))
	}
	if st, _ := invitationStatus(t, d, api, evil["id"].(string)); st != "pending" {
		t.Fatalf("opening the link redeemed it: %s", st)
	}

	// The victim's next ordinary sign-in: the invitation comes from the
	// cookie, and again only as a question.
	u, verifier, _ := authorizeURL(d, nil)
	resp, body = victim.get(u)
	if !isAcceptPage(resp, body) {
		t.Fatalf("sign-in with a planted invitation cookie must stop at the accept page, got %d %s\n%s", resp.StatusCode, resp.Header.Get("Location"), clipText(body))
	}
	if !strings.Contains(body, `class="claim-kept"`) || !strings.Contains(body, "C-VICTIM") {
		t.Errorf("the accept page must say the held crm_id is kept:\n%s", clipText(body))
	}
	resp, body = victim.answerAccept(resp, body, "later")
	tr := exchangeCode(t, d, victim.callbackOf(resp, body).Get("code"), verifier)
	c := jwtClaims(t, tr.IDToken)
	if slices.Contains(rolesOf(c), "attacker-role") || c["crm_id"] != "C-VICTIM" || c["org_id"] != nil {
		t.Fatalf("\"Not now\" still bound the invitation: %v", c)
	}
	if st, events := invitationStatus(t, d, api, evil["id"].(string)); st != "pending" || !slices.Contains(events, "deferred") {
		t.Fatalf("after \"Not now\": status %s, events %v", st, events)
	}
	// The browser forgot it: the next sign-in goes straight to the app.
	code, v := victim.signIn(d, "victim@example.com", "password-123456", false)
	if c := jwtClaims(t, exchangeCode(t, d, code, v).IDToken); c["crm_id"] != "C-VICTIM" {
		t.Fatalf("later sign-in: %v", c)
	}
}

// The three answers of the accept page after an invitation sign-in.
func TestAcceptPageAnswers(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	api := funnelToken(t, d, "invitations:write invitations:read")
	cases := []struct {
		action     string
		wantRoles  []string
		wantStatus string
	}{
		{"accept", []string{"customer"}, "redeemed"},
		{"later", []string{}, "pending"},
	}
	for _, tc := range cases {
		t.Run(tc.action, func(t *testing.T) {
			email := "answer-" + tc.action + "@example.com"
			inv := invite(t, d, api, map[string]any{"email": email, "roles": []string{"customer"}, "send_email": false})
			a := newAgent(t, d.SPAURL)
			u, verifier, _ := authorizeURL(d, url.Values{"invitation": {tokenOf(inv["url"].(string))}})
			resp, body := a.get(u)
			resp, body = a.devidpForm(resp, body, "signup", url.Values{"email": {email}, "password": {"password-123456"}, "name": {"A"}})
			if st, _ := invitationStatus(t, d, api, inv["id"].(string)); st != "pending" {
				t.Fatalf("redeemed before the person answered: %s", st)
			}
			resp, body = a.answerAccept(resp, body, tc.action)
			c := jwtClaims(t, exchangeCode(t, d, a.callbackOf(resp, body).Get("code"), verifier).IDToken)
			if got := rolesOf(c); !slices.Equal(got, tc.wantRoles) && !(len(got) == 0 && len(tc.wantRoles) == 0) {
				t.Errorf("roles = %v, want %v", got, tc.wantRoles)
			}
			if st, _ := invitationStatus(t, d, api, inv["id"].(string)); st != tc.wantStatus {
				t.Errorf("status = %s, want %s", st, tc.wantStatus)
			}
		})
	}

	// "Use another account": upstream again with prompt=login and the
	// invited email, although the upstream session would sign in silently.
	t.Run("other", func(t *testing.T) {
		inv := invite(t, d, api, map[string]any{"email": "right@example.com", "roles": []string{"customer"}, "send_email": false})
		a, _ := signedInAgent(t, d, "wrong@example.com")
		u, verifier, _ := authorizeURL(d, url.Values{"invitation": {tokenOf(inv["url"].(string))}})
		resp, body := a.get(u) // devidp's session answers at once: the accept page
		if !strings.Contains(body, "wrong@example.com") {
			t.Fatalf("accept page for the upstream session's account expected:\n%s", clipText(body))
		}
		resp, body = a.answerAccept(resp, body, "other")
		// Nobody has the invited email yet: the upstream offers sign-up, prefilled.
		if !strings.Contains(body, `action="/u/signup"`) || !strings.Contains(body, "right@example.com") {
			t.Fatalf("\"Use another account\" must show the upstream form with the invited email, got %d at %s\n%s", resp.StatusCode, resp.Request.URL, clipText(body))
		}
		if up := upstreamAuthorize(resp); up == nil || up.Query().Get("prompt") != "login" || up.Query().Get("login_hint") != "right@example.com" {
			t.Errorf("upstream authorize request = %v, want prompt=login and the invited login_hint", up)
		}
		resp, body = a.devidpForm(resp, body, "signup", url.Values{"email": {"right@example.com"}, "password": {"password-123456"}, "name": {"R"}})
		if !strings.Contains(body, "right@example.com</strong> (email and password)") {
			t.Fatalf("the accept page should now name the invited account:\n%s", clipText(body))
		}
		resp, body = a.answerAccept(resp, body, "accept")
		c := jwtClaims(t, exchangeCode(t, d, a.callbackOf(resp, body).Get("code"), verifier).IDToken)
		if !slices.Equal(rolesOf(c), []string{"customer"}) || c["email"] != "right@example.com" {
			t.Fatalf("after another account: %v", c)
		}
	})
}

// A later invitation never overwrites a claim the user already holds: the
// held value stays, the page says so before Accept, and the conflict is on
// the invitation's timeline and in the audit log. Changing it is the
// operator's PUT on the user's grant.
func TestInvitationKeepsHeldClaims(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	api := funnelToken(t, d, "invitations:write invitations:read")
	a, sub := signedInAgent(t, d, "holder@example.com")
	apiCall(t, d, http.MethodPut, "/api/users/"+sub+"/grants/claims/crm_id", api, map[string]any{"value": "C-1"})
	inv := invite(t, d, api, map[string]any{"email": "holder@example.com", "roles": []string{"customer"},
		"claims": map[string]any{"crm_id": "C-2", "plan": "pro"}, "send_email": false})
	resp, body := a.get(inv["url"].(string)) // signed in: the page comes at once
	if !strings.Contains(body, "<code>crm_id</code> stays C-1 (the invitation says C-2)") || !strings.Contains(body, `<li class="claim-added"><code>plan</code>: pro</li>`) {
		t.Fatalf("accept page must show the kept and the added claim:\n%s", clipText(body))
	}
	resp, _ = a.answerAccept(resp, body, "accept")
	if loc := resp.Header.Get("Location"); !strings.HasPrefix(loc, d.SPAURL+"/login") {
		t.Fatalf("after accepting from the link: %d %s, want the app's sign-in", resp.StatusCode, loc)
	}
	g := apiCall(t, d, http.MethodGet, "/api/users/"+sub+"/grants", api, nil)
	claims, _ := g.body["claims"].(map[string]any)
	if claims["crm_id"] != "C-1" || claims["plan"] != "pro" {
		t.Fatalf("grant after accept: %s", g.raw)
	}
	if st, events := invitationStatus(t, d, api, inv["id"].(string)); st != "redeemed" || !slices.Contains(events, "claims_kept") {
		t.Fatalf("invitation: %s %v", st, events)
	}
	audit := auditWhen(t, d, "/api/audit?action=invitation.redeemed&target="+inv["id"].(string), api, func(a apiResult) bool {
		return len(a.body["records"].([]any)) > 0
	})
	if !strings.Contains(audit.raw, `"claims_kept":"crm_id"`) {
		t.Fatalf("audit: %s", audit.raw)
	}
	// The operator changes it deliberately.
	if r := apiCall(t, d, http.MethodPut, "/api/users/"+sub+"/grants/claims/crm_id", api, map[string]any{"value": "C-2"}); r.status != http.StatusOK || !strings.Contains(r.raw, `"crm_id":"C-2"`) {
		t.Fatalf("PUT claim: %d %s", r.status, r.raw)
	}
	for _, bad := range []string{"ſub", "SCOPE"} {
		if r := apiCall(t, d, http.MethodPut, "/api/users/"+sub+"/grants/claims/"+url.PathEscape(bad), api, map[string]any{"value": "x"}); r.status != http.StatusBadRequest {
			t.Errorf("PUT claim %q: %d %s", bad, r.status, r.raw)
		}
	}
}

// prompt=none cannot show the accept page: an explicit invitation is
// answered interaction_required, a cookie-only one is ignored (the
// invitation stays pending).
func TestPromptNoneNeverRedeems(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	api := funnelToken(t, d, "invitations:write invitations:read")
	a, _ := signedInAgent(t, d, "silent@example.com")
	inv := invite(t, d, api, map[string]any{"email": "silent@example.com", "roles": []string{"customer"}, "send_email": false})
	tok := tokenOf(inv["url"].(string))

	u, _, _ := authorizeURL(d, url.Values{"prompt": {"none"}, "invitation": {tok}})
	resp, body := a.get(u)
	if q := a.callbackOf(resp, body); q.Get("error") != "interaction_required" {
		t.Fatalf("prompt=none with invitation=: %v", q)
	}
	// The cookie path: the link is opened (the page shows; nobody answers),
	// then the SPA renews silently.
	resp, body = a.get(inv["url"].(string))
	if !isAcceptPage(resp, body) {
		t.Fatalf("link in a signed-in browser: %d\n%s", resp.StatusCode, clipText(body))
	}
	u, verifier, _ := authorizeURL(d, url.Values{"prompt": {"none"}})
	resp, body = a.get(u)
	q := a.callbackOf(resp, body)
	if q.Get("code") == "" {
		t.Fatalf("prompt=none with a session should answer with a code: %v", q)
	}
	if c := jwtClaims(t, exchangeCode(t, d, q.Get("code"), verifier).IDToken); len(rolesOf(c)) != 0 {
		t.Fatalf("prompt=none redeemed: %v", c)
	}
	if st, _ := invitationStatus(t, d, api, inv["id"].(string)); st != "pending" {
		t.Fatalf("prompt=none redeemed the invitation: %s", st)
	}
}

// Privileged roles need the scope invitations:admin.
func TestPrivilegedRolesNeedAdminScope(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{Configure: withProvisioner})
	body := map[string]any{"email": "boss@example.com", "roles": []string{"usher:admin"}, "send_email": false}
	r := apiCall(t, d, http.MethodPost, "/api/invitations", funnelToken(t, d, "invitations:write"), body)
	if r.status != http.StatusBadRequest || !strings.Contains(r.raw, `"field":"roles[0]"`) || !strings.Contains(r.raw, "invitations:admin") {
		t.Fatalf("funnel inviting to usher:admin: %d %s", r.status, r.raw)
	}
	if r := apiCall(t, d, http.MethodPost, "/api/invitations", provisionerToken(t, d), body); r.status != http.StatusCreated {
		t.Fatalf("provisioner inviting to usher:admin: %d %s", r.status, r.raw)
	}
}

// upstreamAuthorize finds, in the redirect chain that led to resp, the
// request to the upstream's /authorize.
func upstreamAuthorize(resp *http.Response) *url.URL {
	for req := resp.Request; req != nil; {
		// usher dev's client at devidp is "usher".
		if strings.HasSuffix(req.URL.Path, "/authorize") && req.URL.Query().Get("client_id") == "usher" {
			return req.URL
		}
		if req.Response == nil {
			break
		}
		req = req.Response.Request
	}
	return nil
}
