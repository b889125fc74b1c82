package e2e

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
	"github.com/usher-oidc/usher/devidp"
)

// Issue 10 §3–4: what a token may be used for, by whom, and when it ends.

const (
	rsClientID = "orders-api"
	rsSecret   = "orders-api-dev-secret"
)

// withResourceServer adds a confidential client allowed to introspect any token.
func withResourceServer(c *config.Config) {
	c.Clients = append(c.Clients, config.Client{
		ID: rsClientID, Type: config.ClientConfidential, Secret: rsSecret,
		GrantTypes: []string{config.GrantClientCredentials}, ResourceServer: true,
	})
}

// introspect calls RFC 7662 introspection as a confidential client.
func introspect(t *testing.T, d *app.Dev, clientID, secret, token string) map[string]any {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, strings.TrimSuffix(d.IssuerURL, "/")+"/oauth/introspect",
		strings.NewReader(url.Values{"token": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(clientID, secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("introspection answer (%d): %v", resp.StatusCode, err)
	}
	return out
}

// revoke calls RFC 7009 revocation as clientID (with a secret when confidential).
func revoke(t *testing.T, d *app.Dev, clientID, secret, token, hint string) int {
	t.Helper()
	form := url.Values{"token": {token}}
	if hint != "" {
		form.Set("token_type_hint", hint)
	}
	if secret == "" {
		form.Set("client_id", clientID)
	}
	req, _ := http.NewRequest(http.MethodPost, strings.TrimSuffix(d.IssuerURL, "/")+"/oauth/revoke", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if secret != "" {
		req.SetBasicAuth(clientID, secret)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestAdminAPIRefusesPersonTokens(t *testing.T) {
	t.Parallel()
	// A client that config validation now refuses: a sign-in grant and an
	// admin scope. The broker must refuse the person's token by itself.
	d := startDev(t, app.DevOptions{AfterValidate: func(c *config.Config) {
		c.Clients[0].Scopes = append(c.Clients[0].Scopes, "invitations:read", "invitations:write")
	}})
	a := newAgent(t, d.SPAURL)
	u, verifier, _ := authorizeURL(d, url.Values{"scope": {"openid profile email invitations:read invitations:write"}})
	resp, body := a.get(u)
	resp, body = a.devidpForm(resp, body, "login", url.Values{"email": {app.DevUserEmail}, "password": {app.DevUserPassword}})
	tr := exchangeCode(t, d, a.callbackOf(resp, body).Get("code"), verifier)
	if tr.AccessToken == "" {
		t.Fatalf("token response: %+v", tr)
	}
	if sc, _ := jwtClaims(t, tr.AccessToken)["scope"].(string); !strings.Contains(sc, "invitations:read") {
		t.Fatalf("the person's token does not carry the scope (scope %q): the test proves nothing", sc)
	}
	cases := []struct {
		name, method, path string
		body               any
	}{
		{"list invitations", http.MethodGet, "/api/invitations", nil},
		{"audit log", http.MethodGet, "/api/audit", nil},
		{"create invitation", http.MethodPost, "/api/invitations", map[string]any{"email": "x@example.com"}},
	}
	for _, tc := range cases {
		res := apiCall(t, d, tc.method, tc.path, tr.AccessToken, tc.body)
		if res.status != http.StatusUnauthorized && res.status != http.StatusForbidden {
			t.Errorf("%s with a person's token: %d %s, want 401 or 403", tc.name, res.status, clipText(res.raw))
		}
		if ct := res.header.Get("Content-Type"); ct != "application/problem+json" {
			t.Errorf("%s: Content-Type %q, want application/problem+json", tc.name, ct)
		}
	}
	if res := apiCall(t, d, http.MethodGet, "/api/invitations", funnelToken(t, d, "invitations:read"), nil); res.status != http.StatusOK {
		t.Errorf("client_credentials token refused: %d %s", res.status, res.raw)
	}
}

func TestIntrospectionOwnTokensOnly(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{Configure: withResourceServer})
	a := newAgent(t, d.SPAURL)
	code, v := a.signIn(d, app.DevUserEmail, app.DevUserPassword, false)
	spa := exchangeCode(t, d, code, v)
	funnel := funnelToken(t, d, "invitations:read")

	cases := []struct {
		name, client, secret, token string
		active                      bool
		clientID                    string // the token's client, whoever asks
	}{
		{"resource server, a person's token", rsClientID, rsSecret, spa.AccessToken, true, app.DevSPAClientID},
		{"resource server, another client's token", rsClientID, rsSecret, funnel, true, app.DevFunnelClientID},
		{"a client, its own token", app.DevFunnelClientID, app.DevFunnelSecret, funnel, true, app.DevFunnelClientID},
		{"a client, another client's token", app.DevFunnelClientID, app.DevFunnelSecret, spa.AccessToken, false, ""},
		{"a client, another client's refresh token", app.DevFunnelClientID, app.DevFunnelSecret, spa.RefreshToken, false, ""},
	}
	for _, tc := range cases {
		got := introspect(t, d, tc.client, tc.secret, tc.token)
		if !tc.active {
			if len(got) != 1 || got["active"] != false {
				t.Errorf("%s: %v, want only {\"active\": false}", tc.name, got)
			}
			continue
		}
		if got["active"] != true || got["client_id"] != tc.clientID {
			t.Errorf("%s: active %v client_id %v, want true and %q", tc.name, got["active"], got["client_id"], tc.clientID)
		}
		for _, k := range []string{"aud", "scope", "exp", "iat", "token_type", "sub", "iss"} {
			if got[k] == nil || got[k] == "" {
				t.Errorf("%s: %q missing in %v", tc.name, k, got)
			}
		}
	}
}

func TestRevocationOwnTokensOnly(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{Configure: withResourceServer})
	a := newAgent(t, d.SPAURL)
	code, v := a.signIn(d, app.DevUserEmail, app.DevUserPassword, false)
	spa := exchangeCode(t, d, code, v)

	// Another client's tokens: 200 (RFC 7009 §2.2), nothing revoked.
	for _, tc := range []struct{ token, hint string }{
		{spa.RefreshToken, "refresh_token"}, {spa.RefreshToken, ""},
		{spa.AccessToken, "access_token"}, {spa.AccessToken, ""},
	} {
		if st := revoke(t, d, app.DevFunnelClientID, app.DevFunnelSecret, tc.token, tc.hint); st != http.StatusOK {
			t.Errorf("revoking another client's token (hint %q): %d, want 200", tc.hint, st)
		}
	}
	if st := userinfoStatus(t, d, spa.AccessToken); st != http.StatusOK {
		t.Errorf("access token revoked by another client: userinfo %d", st)
	}
	if got := introspect(t, d, rsClientID, rsSecret, spa.AccessToken); got["active"] != true {
		t.Errorf("access token revoked by another client: %v", got)
	}
	next := refresh(t, d, spa.RefreshToken)
	if next.RefreshToken == "" {
		t.Fatalf("refresh token revoked by another client: %+v", next)
	}

	// The owner revokes: the access token alone, then the refresh family.
	if st := revoke(t, d, app.DevSPAClientID, "", next.AccessToken, "access_token"); st != http.StatusOK {
		t.Fatalf("owner revoking its access token: %d", st)
	}
	if st := userinfoStatus(t, d, next.AccessToken); st == http.StatusOK {
		t.Error("owner's access-token revocation had no effect")
	}
	if st := revoke(t, d, app.DevSPAClientID, "", next.RefreshToken, "refresh_token"); st != http.StatusOK {
		t.Fatalf("owner revoking its refresh token: %d", st)
	}
	if r := refresh(t, d, next.RefreshToken); r.Error != "invalid_grant" {
		t.Errorf("refresh after the owner revoked: %+v", r)
	}
}

func TestSignOutRevokesSessionRefreshTokens(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	base := strings.TrimSuffix(d.IssuerURL, "/")
	logouts := map[string]string{
		"oidc":      base + "/oidc/logout?" + url.Values{"client_id": {app.DevSPAClientID}, "post_logout_redirect_uri": {d.SPAURL + "/"}}.Encode(),
		"auth0 /v2": base + "/v2/logout?" + url.Values{"client_id": {app.DevSPAClientID}, "returnTo": {d.SPAURL + "/"}}.Encode(),
	}
	for name, logout := range logouts {
		t.Run(name, func(t *testing.T) {
			a, other := newAgent(t, d.SPAURL), newAgent(t, d.SPAURL)
			// Two sign-ins in one browser: the second renews the session ID again.
			var mine []tokenResponse
			for range 2 {
				code, v := a.signIn(d, app.DevUserEmail, app.DevUserPassword, false)
				mine = append(mine, exchangeCode(t, d, code, v))
			}
			code, v := other.signIn(d, app.DevUserEmail, app.DevUserPassword, false)
			theirs := exchangeCode(t, d, code, v)

			resp, _ := a.get(logout)
			if loc := resp.Header.Get("Location"); !strings.HasPrefix(loc, d.SPAURL) {
				t.Fatalf("sign-out did not return to the app: %d %s", resp.StatusCode, loc)
			}
			for i, tr := range mine {
				if r := refresh(t, d, tr.RefreshToken); r.Error != "invalid_grant" {
					t.Errorf("refresh token %d of the signed-out session still works (error %q)", i, r.Error)
				}
				if st := userinfoStatus(t, d, tr.AccessToken); st == http.StatusOK {
					t.Errorf("access token %d of the signed-out session still works", i)
				}
			}
			if r := refresh(t, d, theirs.RefreshToken); r.RefreshToken == "" {
				t.Errorf("another browser's refresh token was revoked: %+v", r)
			}
		})
	}
}

func TestMaxAgeCheckedAgainstUpstreamAuthTime(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	base := strings.TrimSuffix(d.IssuerURL, "/")
	cases := []struct {
		name, maxAge string
		stale        bool
		wantError    string
	}{
		{"fresh sign-in, max_age", "60", false, ""},
		{"stale upstream auth_time, no max_age", "", true, ""},
		{"stale upstream auth_time, generous max_age", "86400", true, ""},
		{"stale upstream auth_time, max_age exceeded", "60", true, "login_required"},
		{"stale upstream auth_time, max_age=0", "0", true, "login_required"},
	}
	for _, tc := range cases {
		var m devidp.Misbehavior
		if tc.stale {
			m.StaleAuthTime = 2 * time.Hour
		}
		d.IDP.Misbehave(m)
		a := newAgent(t, d.SPAURL)
		extra := url.Values{}
		if tc.maxAge != "" {
			extra.Set("max_age", tc.maxAge)
		}
		u, _, state := authorizeURL(d, extra)
		resp, body := a.get(u)
		resp, body = a.devidpForm(resp, body, "login", url.Values{"email": {app.DevUserEmail}, "password": {app.DevUserPassword}})
		q := a.callbackOf(resp, body)
		if q.Get("error") != tc.wantError || q.Get("state") != state {
			t.Errorf("%s: error %q (%s), state ok %v; want error %q", tc.name, q.Get("error"), q.Get("error_description"), q.Get("state") == state, tc.wantError)
		}
		if tc.wantError == "" && q.Get("code") == "" {
			t.Errorf("%s: no code", tc.name)
		}
		if tc.wantError != "" && q.Get("iss") != base && q.Get("iss") != d.IssuerURL {
			t.Errorf("%s: error response without iss: %v", tc.name, q)
		}
	}
	d.IDP.Misbehave(devidp.Misbehavior{})
}
