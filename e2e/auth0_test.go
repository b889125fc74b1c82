package e2e

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/devidp"
	"github.com/usher-oidc/usher/internal/testkit"
)

// usher dev runs the Auth0 preset against devidp, which answers as a tenant
// at https://{domain}/ would: the issuer is derived from the domain, Auth0's
// parameters reach the tenant, and sign-out goes through the tenant's logout.
func TestAuth0Preset(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	if got := d.Config.Upstream.EffectiveIssuer(); got != d.IDPURL || !strings.HasSuffix(got, "/") {
		t.Fatalf("derived issuer %q, want devidp's %q (with the trailing slash)", got, d.IDPURL)
	}
	client := &http.Client{CheckRedirect: func(req *http.Request, _ []*http.Request) error {
		if strings.HasPrefix(req.URL.String(), d.IDPURL) {
			return http.ErrUseLastResponse
		}
		return nil
	}}
	u, _, _ := authorizeURL(d, url.Values{"connection": {"google-oauth2"}, "screen_hint": {"signup"},
		"login_hint": {"x@example.com"}, "prompt": {"login"}, "ui_locales": {"fr"}, "max_age": {"60"}})
	jar := newAgent(t, d.SPAURL).client.Jar
	client.Jar = jar
	resp, err := client.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	up, _ := url.Parse(resp.Header.Get("Location"))
	if !strings.HasPrefix(up.String(), d.IDPURL+"authorize?") {
		t.Fatalf("upstream authorize URL %q", up)
	}
	q := up.Query()
	for k, want := range map[string]string{"connection": "google-oauth2", "screen_hint": "signup", "login_hint": "x@example.com",
		"prompt": "login", "ui_locales": "fr", "max_age": "0", // prompt=login means max_age=0 (OIDC Core §3.1.2.1)
		"code_challenge_method": "S256", "response_type": "code", "client_id": "usher"} {
		if q.Get(k) != want {
			t.Errorf("upstream %s = %q, want %q", k, q.Get(k), want)
		}
	}
	for _, k := range []string{"state", "nonce", "code_challenge"} {
		if len(q.Get(k)) < 20 {
			t.Errorf("upstream %s too short: %q", k, q.Get(k))
		}
	}
	// Logout: usher → the tenant's logout → usher → the app.
	a := newAgent(t, d.SPAURL)
	code, v := a.signIn(d, app.DevUserEmail, app.DevUserPassword, false)
	tr := exchangeCode(t, d, code, v)
	lo := strings.TrimSuffix(d.IssuerURL, "/") + "/oidc/logout?" + url.Values{"id_token_hint": {tr.IDToken},
		"post_logout_redirect_uri": {d.SPAURL + "/"}, "client_id": {"demo"}}.Encode()
	a.client.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if strings.HasPrefix(req.URL.String(), d.SPAURL) {
			return http.ErrUseLastResponse
		}
		return nil
	}
	resp, _ = a.get(lo)
	if resp.Header.Get("Location") != d.SPAURL+"/" {
		t.Fatalf("logout ended at %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	visitedTenant := false
	for r := resp; r != nil; r = r.Request.Response {
		if strings.HasPrefix(r.Request.URL.String(), d.IDPURL+"oidc/logout") {
			visitedTenant = true
		}
		if r.Request.Response == nil {
			break
		}
	}
	if !visitedTenant {
		t.Error("sign-out did not pass through the tenant's logout endpoint")
	}
}

// The Management API decides sign-up vs login for an invitee usher has
// never seen: an existing Auth0 account gets the login screen, a new email
// the sign-up screen (in a real browser).
func TestBrowserInviteeScreenFromAuth0(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	api := funnelToken(t, d, "invitations:write invitations:read")
	for _, tc := range []struct{ email, form string }{
		{app.DevUserEmail, "/u/login"}, // in Auth0 (devidp), never signed in to usher
		{"brand-new@example.com", "/u/signup"},
	} {
		t.Run(tc.form, func(t *testing.T) {
			inv := invite(t, d, api, map[string]any{"email": tc.email, "send_email": false})
			ctx := newBrowser(t)
			do(t, ctx, "following the link", chromedp.Navigate(inv["url"].(string)))
			got := pollJS(t, ctx, "waiting for the devidp form", 20*time.Second,
				`(document.querySelector('form[method=post][action^="/u/"] input[name=email]') || {}).value === `+jsString(tc.email)+
					` ? document.querySelector('form[method=post][action^="/u/"]').getAttribute("action") : ""`)
			if got != tc.form {
				t.Fatalf("invitee %s got %s, want %s", tc.email, got, tc.form)
			}
		})
	}
}

// With the Management API down, invitees still sign in and get their grant
// at once; the mirror delivers to Auth0 when it is back.
func TestAuth0MirrorNeverBlocksLogin(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	api := funnelToken(t, d, "invitations:write invitations:read")
	d.IDP.ManagementDown(true)
	inv := invite(t, d, api, map[string]any{"email": "mirror@example.com", "roles": []string{"customer"},
		"claims": map[string]any{"crm_id": "C-77"}, "send_email": false})
	a := newAgent(t, d.SPAURL)
	resp, body, v := a.signInWithInvitation(d, tokenOf(inv["url"].(string)), "signup",
		url.Values{"email": {"mirror@example.com"}, "password": {"password-123456"}, "name": {"M"}})
	q := a.callbackOf(resp, body)
	tr := exchangeCode(t, d, q.Get("code"), v)
	if !slices.Contains(rolesOf(jwtClaims(t, tr.IDToken)), "customer") {
		t.Fatalf("login with the Management API down lost the grant")
	}
	get := func() map[string]any {
		return apiCall(t, d, http.MethodGet, "/api/invitations/"+inv["id"].(string), api, nil).body
	}
	// The redemption reaches the mirror through the outbox, just after the
	// sign-in: wait for it to be queued.
	st := ""
	for end := time.Now().Add(10 * time.Second); st == "" && time.Now().Before(end); {
		st, _ = get()["mirror_status"].(string)
		if st == "" {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if st != "pending" && !strings.HasPrefix(st, "pending") {
		t.Fatalf("mirror_status while Auth0 is down: %q", st)
	}
	d.IDP.ManagementDown(false)
	sub, ok := d.IDP.UserSub(devidp.ConnectionPassword, "mirror@example.com")
	if !ok {
		t.Fatal("devidp does not know the new user")
	}
	synced := testkit.Within(60*time.Second, func() bool { return get()["mirror_status"] == "synced" })
	if st := get()["mirror_status"]; !synced || st != "synced" {
		t.Fatalf("mirror_status after Auth0 came back: %v", st)
	}
	md, _ := d.IDP.AppMetadata(sub)["usher"].(map[string]any)
	if md == nil || !slices.Contains(d.IDP.UserRoles(sub), "customer") {
		t.Fatalf("Auth0 app_metadata %v, roles %v", d.IDP.AppMetadata(sub), d.IDP.UserRoles(sub))
	}
	// claims are a list of {name, value} (Auth0 refuses "." in field names).
	if claims, _ := md["claims"].([]any); !slices.ContainsFunc(claims, func(c any) bool {
		e, _ := c.(map[string]any)
		return e["name"] == "crm_id" && e["value"] == "C-77"
	}) {
		t.Fatalf("app_metadata.usher = %v", md)
	}
}
