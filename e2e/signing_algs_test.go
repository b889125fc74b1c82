package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	gooidc "github.com/coreos/go-oidc/v3/oidc"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
)

// discovery fetches usher's OpenID configuration.
func discovery(t *testing.T, d *app.Dev) map[string]any {
	t.Helper()
	resp, err := http.Get(strings.TrimSuffix(d.IssuerURL, "/") + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

// OpenID Connect Discovery: id_token_signing_alg_values_supported MUST
// include RS256; usher also lists the algorithm its access tokens carry.
func TestDiscoveryIDTokenAlgorithms(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	raw, _ := discovery(t, d)["id_token_signing_alg_values_supported"].([]any)
	var algs []string
	for _, a := range raw {
		algs = append(algs, a.(string))
	}
	for _, want := range []string{"RS256", "ES256"} {
		if !slices.Contains(algs, want) {
			t.Errorf("id_token_signing_alg_values_supported = %v, lacks %s", algs, want)
		}
	}
}

// A client registered without id_token_signed_response_alg gets RS256 ID
// tokens (OpenID Connect Registration; auth0-spa-js throws on anything else),
// verifiable by go-oidc's default verifier; access tokens stay ES256 and
// usher's own endpoints accept them and the ID token as id_token_hint.
// A client set to ES256 or EdDSA gets that algorithm instead.
func TestIDTokenAlgorithmPerClient(t *testing.T) {
	t.Parallel()
	tests := []struct{ setting, want string }{
		{"", "RS256"}, // the demo client, as `usher dev` registers it
		{"ES256", "ES256"},
		{"EdDSA", "EdDSA"},
	}
	for _, tc := range tests {
		t.Run("setting "+tc.setting+" gives "+tc.want, func(t *testing.T) {
			t.Parallel()
			d := startDev(t, app.DevOptions{Configure: func(c *config.Config) {
				c.Clients[0].IDTokenSignedResponseAlg = tc.setting
			}})
			checkIDTokenAlg(t, d, tc.want)
		})
	}
}

// checkIDTokenAlg signs in the demo client and checks the algorithms of its
// tokens, after the code exchange and after a refresh.
func checkIDTokenAlg(t *testing.T, d *app.Dev, wantAlg string) {
	t.Helper()
	ctx := context.Background()
	a := newAgent(t, d.SPAURL)
	code, verifier := a.signIn(d, app.DevUserEmail, app.DevUserPassword, false)
	tr := exchangeCode(t, d, code, verifier)
	if tr.IDToken == "" {
		t.Fatalf("token response: %+v", tr)
	}
	keys := gooidc.NewRemoteKeySet(ctx, strings.TrimSuffix(d.IssuerURL, "/")+"/.well-known/jwks.json")
	cfg := &gooidc.Config{ClientID: app.DevSPAClientID} // no algorithms: go-oidc's default, RS256 only
	if wantAlg != "RS256" {
		cfg.SupportedSigningAlgs = []string{wantAlg}
	}
	v := gooidc.NewVerifier(d.IssuerURL, keys, cfg)
	for name, tok := range map[string]tokenResponse{"code exchange": tr, "refresh": refresh(t, d, tr.RefreshToken)} {
		if alg := jwtHeader(t, tok.IDToken)["alg"]; alg != wantAlg {
			t.Errorf("%s: ID token alg %v, want %s", name, alg, wantAlg)
		}
		if _, err := v.Verify(ctx, tok.IDToken); err != nil {
			t.Errorf("%s: go-oidc rejects the ID token: %v", name, err)
		}
		if h := jwtHeader(t, tok.AccessToken); h["alg"] != "ES256" || h["typ"] != "at+jwt" {
			t.Errorf("%s: access token header %v, want ES256 at+jwt", name, h)
		}
		if s := userinfoStatus(t, d, tok.AccessToken); s != http.StatusOK {
			t.Errorf("%s: userinfo answers %d to usher's own access token", name, s)
		}
	}
	// usher's end-session endpoint accepts its own ID token as the hint and
	// redirects to the registered post-logout URI.
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	q := url.Values{"id_token_hint": {tr.IDToken}, "post_logout_redirect_uri": {d.SPAURL + "/"}}
	resp, err := client.Get(strings.TrimSuffix(d.IssuerURL, "/") + "/oidc/logout?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode >= 400 {
		t.Errorf("logout with id_token_hint: %d %s", resp.StatusCode, clipText(string(body)))
	}
}

// RFC 6749 §5.2: a client that authenticated with HTTP Basic and failed gets
// 401 with WWW-Authenticate naming the scheme, and invalid_client.
func TestBasicClientAuthFailureIs401(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	base := strings.TrimSuffix(d.IssuerURL, "/")
	tests := []struct {
		name, path, id, secret string
		form                   url.Values
	}{
		{"token, wrong secret", "/oauth/token", app.DevFunnelClientID, "wrong-secret", url.Values{"grant_type": {"client_credentials"}}},
		{"token, unknown client", "/oauth/token", "nobody", "x", url.Values{"grant_type": {"client_credentials"}}},
		{"introspection, wrong secret", "/oauth/introspect", app.DevFunnelClientID, "wrong-secret", url.Values{"token": {"x"}}},
		{"revocation, wrong secret", "/oauth/revoke", app.DevFunnelClientID, "wrong-secret", url.Values{"token": {"x"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, base+tc.path, strings.NewReader(tc.form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.SetBasicAuth(tc.id, tc.secret)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var e struct {
				Error string `json:"error"`
			}
			json.NewDecoder(resp.Body).Decode(&e)
			if resp.StatusCode != http.StatusUnauthorized || e.Error != "invalid_client" {
				t.Errorf("status %d error %q, want 401 invalid_client", resp.StatusCode, e.Error)
			}
			if got := resp.Header.Get("WWW-Authenticate"); got != `Basic realm="usher"` {
				t.Errorf("WWW-Authenticate = %q", got)
			}
		})
	}
}

// GET / answers a page naming usher and its discovery URL (and, in dev, the
// demo app); other unknown paths stay 404.
func TestIssuerRootPage(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	base := strings.TrimSuffix(d.IssuerURL, "/")
	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{"usher", base + "/.well-known/openid-configuration", d.SPAURL} {
		if !strings.Contains(string(body), want) {
			t.Errorf("root page lacks %q:\n%s", want, clipText(string(body)))
		}
	}
	for _, p := range []string{"/nope", "/index.html"} {
		resp, err := http.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, resp.StatusCode)
		}
	}
}
