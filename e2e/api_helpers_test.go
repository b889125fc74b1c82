package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/usher-oidc/usher/internal/testkit"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
)

// funnelToken gets a client_credentials token for the dev funnel client.
func funnelToken(t testing.TB, d *app.Dev, scope string) string {
	t.Helper()
	return clientToken(t, d, app.DevFunnelClientID, app.DevFunnelSecret, scope)
}

// clientToken is a client_credentials access token of a confidential client.
func clientToken(t testing.TB, d *app.Dev, id, secret, scope string) string {
	t.Helper()
	return clientTokenAt(t, d.IssuerURL, id, secret, scope)
}

// clientTokenAt is clientToken against the usher at issuer ("" scope: the
// client's default scopes).
func clientTokenAt(t testing.TB, issuer, id, secret, scope string) string {
	t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}}
	if scope != "" {
		form.Set("scope", scope)
	}
	req, _ := http.NewRequest(http.MethodPost, strings.TrimSuffix(issuer, "/")+"/oauth/token",
		strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(id, secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tr tokenResponse
	json.NewDecoder(resp.Body).Decode(&tr)
	if tr.AccessToken == "" {
		t.Fatalf("client_credentials (%s): %d %+v", id, resp.StatusCode, tr)
	}
	return tr.AccessToken
}

type apiResult struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func apiCall(t *testing.T, d *app.Dev, method, path, token string, body any, headers ...string) apiResult {
	t.Helper()
	var rd io.Reader
	var sent []byte
	switch b := body.(type) {
	case nil:
	case string:
		sent = []byte(b)
		rd = strings.NewReader(b)
	default:
		sent, _ = json.Marshal(b)
		rd = bytes.NewReader(sent)
	}
	req, _ := http.NewRequest(method, strings.TrimSuffix(d.IssuerURL, "/")+path, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	checkContract(t, req, sent, resp, raw)
	res := apiResult{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	_ = json.Unmarshal(raw, &res.body)
	return res
}

// invite creates an invitation through the API and returns the response body.
func invite(t *testing.T, d *app.Dev, token string, body map[string]any) map[string]any {
	t.Helper()
	res := apiCall(t, d, http.MethodPost, "/api/invitations", token, body)
	if res.status != http.StatusCreated {
		t.Fatalf("create invitation: %d %s", res.status, res.raw)
	}
	return res.body
}

// jwtClaims decodes a JWT's payload without verifying it (the tests verify
// tokens elsewhere; here they read what usher put in).
func jwtClaims(t testing.TB, jwt string) map[string]any {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", jwt)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func rolesOf(m map[string]any) []string {
	var out []string
	rs, _ := m["roles"].([]any)
	for _, r := range rs {
		s, _ := r.(string)
		out = append(out, s)
	}
	return out
}

func jwtHeader(t *testing.T, jwt string) map[string]any {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.Split(jwt, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal(raw, &m)
	return m
}

func urlValues(kv ...string) url.Values {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	return v
}

// Provisioning client of the tests that bootstrap admins: the only one
// allowed to put privileged roles (usher:admin) on invitations.
const (
	provisionerID     = "provisioner"
	provisionerSecret = "provisioner-secret-0123456789abcdef"
)

// withProvisioner adds the provisioning client (scope invitations:admin)
// to a dev config; usher dev's own funnel client does not hold that scope.
func withProvisioner(c *config.Config) {
	c.Clients = append(c.Clients, config.Client{ID: provisionerID, Type: config.ClientConfidential, Secret: provisionerSecret,
		GrantTypes: []string{"client_credentials"}, Scopes: []string{"invitations:write", "invitations:read", "invitations:admin"}})
}

// provisionerToken is an admin API token of the provisioning client.
func provisionerToken(t testing.TB, d *app.Dev) string {
	t.Helper()
	return clientToken(t, d, provisionerID, provisionerSecret, "invitations:write invitations:read invitations:admin")
}

// auditWhen reads GET path (an /api/audit query) until ok holds: the audit
// log is written by the outbox runner, moments after the change it records.
func auditWhen(t *testing.T, d *app.Dev, path, token string, ok func(apiResult) bool) apiResult {
	t.Helper()
	var last apiResult
	testkit.Eventually(t, "audit "+path, func() bool {
		last = apiCall(t, d, http.MethodGet, path, token, nil)
		return last.status == http.StatusOK && ok(last)
	})
	return last
}

// signOutEverywhere signs user out everywhere through the admin API.
func signOutEverywhere(t *testing.T, d *app.Dev, api, user string) {
	t.Helper()
	if res := apiCall(t, d, http.MethodPost, "/api/users/"+url.PathEscape(user)+"/sign-out", api, nil); res.status != http.StatusNoContent {
		t.Fatalf("sign out everywhere: %d %s", res.status, res.raw)
	}
}
