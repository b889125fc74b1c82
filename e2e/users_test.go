package e2e

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
	"github.com/usher-oidc/usher/devidp"
	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/internal/testkit"
)

// Sign out everywhere: a person signed in from two browsers loses both
// refresh tokens and usher's silent sign-in; a new sign-in works.
func TestSignOutEverywhere(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{Configure: withResourceServer})
	api := funnelToken(t, d, "invitations:write invitations:read")
	const email, password = "everywhere@example.com", "password-123456"
	a1, a2 := newAgent(t, d.SPAURL), newAgent(t, d.SPAURL)
	tr1 := signInAs(t, d, a1, email, password, true)
	tr2 := signInAs(t, d, a2, email, password, false)
	sub, _ := jwtClaims(t, tr1.IDToken)["sub"].(string)
	if tr1.RefreshToken == "" || tr2.RefreshToken == "" || sub == "" || jwtClaims(t, tr2.IDToken)["sub"] != sub {
		t.Fatalf("two sign-ins of one user: %+v %+v", tr1, tr2)
	}
	// usher's own session answers a silent request (auth0-spa-js's hidden
	// iframe: prompt=none, response_mode=web_message) without the upstream.
	silent := func(a *agent) string {
		u, _, _ := authorizeURL(d, url.Values{"prompt": {"none"}, "response_mode": {"web_message"}})
		_, body := a.get(u)
		return body
	}
	if body := silent(a1); !strings.Contains(body, `"code":"`) {
		t.Fatalf("silent sign-in before: %s", clipText(body))
	}

	signOutEverywhere(t, d, api, sub)
	for i, tr := range []tokenResponse{tr1, tr2} {
		if r := refresh(t, d, tr.RefreshToken); r.Error != "invalid_grant" {
			t.Errorf("refresh %d after sign-out: %d %+v", i+1, r.status, r)
		}
		if st := userinfoStatus(t, d, tr.AccessToken); st == http.StatusOK {
			t.Errorf("userinfo %d after sign-out answered 200", i+1)
		}
		if got := introspect(t, d, rsClientID, rsSecret, tr.AccessToken); got["active"] != false {
			t.Errorf("introspection %d after sign-out: %v", i+1, got)
		}
	}
	for i, a := range []*agent{a1, a2} {
		if body := silent(a); !strings.Contains(body, `"error":"login_required"`) {
			t.Errorf("silent sign-in %d after sign-out: %s", i+1, clipText(body))
		}
	}
	// A new sign-in works, and so does its refresh token.
	tr3 := signInAs(t, d, newAgent(t, d.SPAURL), email, password, false)
	r := refresh(t, d, tr3.RefreshToken)
	if r.AccessToken == "" {
		t.Fatalf("refresh of a sign-in after the sign-out: %d %+v", r.status, r)
	}
	if userinfoStatus(t, d, r.AccessToken) != http.StatusOK {
		t.Errorf("userinfo with a token issued after the sign-out refused")
	}
	auditWhen(t, d, "/api/audit?action="+grants.EventUserSignedOutEverywhere+"&target="+url.QueryEscape(sub), api, func(r apiResult) bool {
		recs, _ := r.body["records"].([]any)
		return len(recs) == 1
	})
	if res := apiCall(t, d, http.MethodPost, "/api/users/nobody/sign-out", api, nil); res.status != http.StatusNotFound {
		t.Errorf("sign out an unknown user: %d", res.status)
	}
}

// Erase: the user, their identities and grant leave usher, the redeemed
// invitation keeps a pseudonym, the audit log says user.erased, Auth0 loses
// usher's roles and app_metadata (the account stays), and the same Auth0
// account signing in again is a new user without grants.
func TestEraseUser(t *testing.T) {
	t.Parallel()
	d, rc := startDevWithWebhooks(t, "user.erased")
	api := funnelToken(t, d, "invitations:write invitations:read")
	const email = "erase-me@example.com"
	inv := invite(t, d, api, map[string]any{"email": email, "roles": []string{"customer"},
		"claims": map[string]any{"crm_id": "C-9"}, "send_email": false})
	a := newAgent(t, d.SPAURL)
	resp, body, v := a.signInWithInvitation(d, tokenOf(inv["url"].(string)), "signup",
		url.Values{"email": {email}, "password": {"password-123456"}, "name": {"E"}})
	tr := exchangeCode(t, d, a.callbackOf(resp, body).Get("code"), v)
	sub, _ := jwtClaims(t, tr.IDToken)["sub"].(string)
	up, ok := d.IDP.UserSub(devidp.ConnectionPassword, email)
	if !ok {
		t.Fatal("devidp does not know the user")
	}
	invPath := "/api/invitations/" + inv["id"].(string)
	testkit.Eventually(t, "the redemption mirrored to Auth0", func() bool {
		return apiCall(t, d, http.MethodGet, invPath, api, nil).body["mirror_status"] == "synced"
	})
	if !slices.Contains(d.IDP.UserRoles(up), "customer") || d.IDP.AppMetadata(up)["usher"] == nil {
		t.Fatalf("before erase, Auth0 roles %v, app_metadata %v", d.IDP.UserRoles(up), d.IDP.AppMetadata(up))
	}

	if res := apiCall(t, d, http.MethodDelete, "/api/users/"+url.PathEscape(sub), api, nil); res.status != http.StatusNoContent {
		t.Fatalf("erase: %d %s", res.status, res.raw)
	}
	if res := apiCall(t, d, http.MethodDelete, "/api/users/"+url.PathEscape(sub), api, nil); res.status != http.StatusNotFound {
		t.Errorf("erase again: %d %s", res.status, res.raw)
	}
	if res := apiCall(t, d, http.MethodGet, "/api/users?email="+url.QueryEscape(email), api, nil); len(res.body["users"].([]any)) != 0 {
		t.Errorf("the erased user is still found by email: %s", res.raw)
	}
	if res := apiCall(t, d, http.MethodGet, "/api/users?q=erase", api, nil); len(res.body["users"].([]any)) != 0 {
		t.Errorf("the erased user is still listed: %s", res.raw)
	}
	if r := refresh(t, d, tr.RefreshToken); r.Error != "invalid_grant" {
		t.Errorf("refresh after erase: %+v", r)
	}
	got := apiCall(t, d, http.MethodGet, invPath, api, nil).body
	if got["email"] != grants.ErasedEmail(sub) || got["status"] != "redeemed" {
		t.Errorf("redeemed invitation after erase: email %v status %v", got["email"], got["status"])
	}
	auditWhen(t, d, "/api/audit?action="+grants.EventUserErased+"&target="+url.QueryEscape(sub), api, func(r apiResult) bool {
		recs, _ := r.body["records"].([]any)
		return len(recs) == 1
	})
	testkit.Eventually(t, "the user.erased webhook", func() bool { return slices.Equal(rc.types(), []string{"user.erased"}) })
	rc.mu.Lock()
	if data, _ := rc.events[0]["data"].(map[string]any); data["user_id"] != sub || len(data) != 1 {
		t.Errorf("user.erased data: %v", rc.events[0]["data"])
	}
	rc.mu.Unlock()
	testkit.Eventually(t, "Auth0 loses usher's roles and app_metadata", func() bool {
		return !slices.Contains(d.IDP.UserRoles(up), "customer") && d.IDP.AppMetadata(up)["usher"] == nil
	})
	if _, ok := d.IDP.UserSub(devidp.ConnectionPassword, email); !ok {
		t.Error("the Auth0 account was deleted")
	}

	// The same Auth0 account signs in again: a fresh usher user, no grants.
	tr2 := signInAs(t, d, newAgent(t, d.SPAURL), email, "password-123456", false)
	c := jwtClaims(t, tr2.IDToken)
	if c["sub"] == sub || len(rolesOf(c)) != 0 {
		t.Errorf("sign-in after erase: sub %v (erased %s), roles %v", c["sub"], sub, rolesOf(c))
	}
}

// signInAs signs a in and exchanges the code.
func signInAs(t *testing.T, d *app.Dev, a *agent, email, password string, signup bool) tokenResponse {
	t.Helper()
	code, verifier := a.signIn(d, email, password, signup)
	return exchangeCode(t, d, code, verifier)
}

// An admin page session ends too: signed out everywhere, the next admin
// request goes back to the admin sign-in.
func TestSignOutEverywhereEndsAdminSession(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	base := strings.TrimSuffix(d.IssuerURL, "/")
	a := newAgent(t, base+"/admin/login")
	a.stopAt = "http://never.invalid" // follow the admin sign-in through
	resp, body := a.get(base + "/admin/login")
	resp, body = a.devidpForm(resp, body, "login", url.Values{"email": {app.DevAdminEmail}, "password": {app.DevAdminPassword}})
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/admin" {
		t.Fatalf("admin sign-in: %d at %s\n%s", resp.StatusCode, resp.Request.URL, clipText(body))
	}
	api := funnelToken(t, d, "invitations:write invitations:read")
	users, _ := apiCall(t, d, http.MethodGet, "/api/users?email="+url.QueryEscape(app.DevAdminEmail), api, nil).body["users"].([]any)
	if len(users) != 1 {
		t.Fatalf("users with %s: %v", app.DevAdminEmail, users)
	}
	id := users[0].(map[string]any)["id"].(string)
	signOutEverywhere(t, d, api, id)
	a.stopAt = base + "/admin/login"
	if resp, _ := a.get(base + "/admin"); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != base+"/admin/login" {
		t.Fatalf("GET /admin after sign-out: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// The same on a Redis Cluster: the user list index, sign out everywhere and
// erase (its grant script and the keys in other slots).
func TestUsersOnRedisCluster(t *testing.T) {
	t.Parallel()
	addrs := startRedisCluster(t)
	d := startDev(t, app.DevOptions{Configure: func(c *config.Config) {
		c.Store.Driver = "redis"
		c.Store.Redis.Addrs = addrs
	}})
	api := funnelToken(t, d, "invitations:write invitations:read")
	const email, password = "Cluster.User@example.com", "password-123456"
	tr := signInAs(t, d, newAgent(t, d.SPAURL), email, password, true)
	sub, _ := jwtClaims(t, tr.IDToken)["sub"].(string)
	listed := func(q string) []any {
		users, _ := apiCall(t, d, http.MethodGet, "/api/users?q="+url.QueryEscape(q), api, nil).body["users"].([]any)
		return users
	}
	if users := listed("cluster.u"); len(users) != 1 || users[0].(map[string]any)["id"] != sub {
		t.Fatalf("list q=cluster.u: %v", users)
	}
	signOutEverywhere(t, d, api, sub)
	if r := refresh(t, d, tr.RefreshToken); r.Error != "invalid_grant" {
		t.Errorf("refresh after sign-out: %+v", r)
	}
	if res := apiCall(t, d, http.MethodDelete, "/api/users/"+url.PathEscape(sub), api, nil); res.status != http.StatusNoContent {
		t.Fatalf("erase: %d %s", res.status, res.raw)
	}
	if users := listed("cluster"); len(users) != 0 {
		t.Errorf("listed after erase: %v", users)
	}
	tr2 := signInAs(t, d, newAgent(t, d.SPAURL), email, password, false)
	if c := jwtClaims(t, tr2.IDToken); c["sub"] == sub {
		t.Errorf("sign-in after erase reused the erased user %s", sub)
	}
	if users := listed("cluster"); len(users) != 1 {
		t.Errorf("the new user is not listed: %v", users)
	}
}
