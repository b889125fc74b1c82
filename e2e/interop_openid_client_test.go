package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
)

// openid-client (Node, a certified and strictly validating relying party)
// against usher: discovery, an authorization URL with PKCE, state and nonce
// built by the library, the code grant with every check on (state, RFC 9207
// iss, ID token, nonce), userinfo and a refresh. The browser-less agent plays
// the person in between: it follows the invitation link, then the library's
// authorization URL through usher and devidp.
//
// ID token algorithms: a client registered without one gets RS256, which the
// library accepts with nothing configured; a client registered for ES256
// gets ES256, with the library told so (id_token_signed_response_alg in its
// client metadata, then it accepts nothing else).
func TestInteropOpenIDClient(t *testing.T) {
	t.Parallel()
	requireInteropModules(t, "openid-client")
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("node is not installed: %v", err)
	}
	// The client's redirect URI is on a port nobody serves: the agent stops
	// there and hands the URL to the script, as a browser would hand it to a
	// web server.
	rpOrigin := "http://" + freeLoopbackAddr(t)
	redirect := rpOrigin + "/callback"
	d := startDev(t, app.DevOptions{Configure: func(c *config.Config) {
		rp := config.Client{ID: "openid-client", Name: "openid-client", Type: config.ClientPublic,
			RedirectURIs: []string{redirect}, InitiateLoginURI: rpOrigin + "/login", ForwardInvitation: true}
		es := rp
		es.ID, es.Name, es.IDTokenSignedResponseAlg = "openid-client-es256", "openid-client-es256", "ES256"
		c.Clients = append(c.Clients, rp, es)
	}})
	api := funnelToken(t, d, "invitations:write invitations:read")

	tests := []struct {
		name    string
		email   string
		signup  bool
		forward bool   // the script sends the invitation as an /authorize parameter
		client  string // its registration sets no algorithm, or ES256
		tell    string // ID_TOKEN_ALG for the script; "" leaves the library's default
		wantAlg string
	}{
		{"sign-up, invitation parameter", "node-new@example.com", true, true, "openid-client", "", "RS256"},
		{"sign-in, cookie", "node-old@example.com", false, false, "openid-client", "", "RS256"},
		{"sign-in, invitation parameter, ES256 client", "node-es256@example.com", false, true, "openid-client-es256", "ES256", "ES256"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const password = "interop-password-3"
			if !tc.signup {
				newAgent(t, d.SPAURL).signIn(d, tc.email, password, true)
			}
			roles := []string{"customer", "node"}
			inv := invite(t, d, api, map[string]any{"email": tc.email, "roles": roles,
				"claims": map[string]any{"crm_id": "CRM-" + tc.email}, "client_id": tc.client, "send_email": false})

			a := newAgent(t, rpOrigin+"/")
			resp, body := a.get(inv["url"].(string))
			initiate := a.callbackOf(resp, body) // the initiate_login_uri's query
			// forward_invitation: a single-use reference, never the token.
			if initiate.Get("iss") != d.IssuerURL || initiate.Get("login_hint") != tc.email || !strings.HasPrefix(initiate.Get("invitation"), "invref_") {
				t.Fatalf("initiate_login_uri query: %v", initiate)
			}
			args := []string{d.IssuerURL, tc.client, redirect}
			if tc.forward {
				args = append(args, initiate.Get("invitation"))
			}
			rp := startNodeRP(t, tc.tell, args...)
			var start struct {
				AuthorizationURL string `json:"authorizationUrl"`
			}
			rp.read(&start)
			if start.AuthorizationURL == "" {
				t.Fatal("no authorization URL")
			}
			resp, body = a.get(start.AuthorizationURL)
			vals := url.Values{"email": {tc.email}, "password": {password}}
			form := "login"
			if tc.signup {
				form = "signup"
				vals.Set("name", "Interop User")
			}
			resp, body = a.devidpForm(resp, body, form, vals)
			resp, body = a.answerAccept(resp, body, "accept")
			callback := a.callbackOf(resp, body)
			rp.write(resp.Header.Get("Location"))

			var res struct {
				IDClaims    map[string]any `json:"idClaims"`
				IDTokenAlg  string         `json:"idTokenAlg"`
				Userinfo    map[string]any `json:"userinfo"`
				AccessToken string         `json:"accessToken"`
				Refreshed   struct {
					IDClaims    map[string]any `json:"idClaims"`
					IDTokenAlg  string         `json:"idTokenAlg"`
					AccessToken string         `json:"accessToken"`
					Rotated     bool           `json:"rotated"`
				} `json:"refreshed"`
				IssuerMetadata map[string]any `json:"issuerMetadata"`
			}
			rp.read(&res)
			at := jwtClaims(t, res.AccessToken)
			for what, claims := range map[string]map[string]any{"ID token": res.IDClaims, "userinfo": res.Userinfo, "access token": at,
				"refreshed ID token": res.Refreshed.IDClaims, "refreshed access token": jwtClaims(t, res.Refreshed.AccessToken)} {
				if !slices.Equal(rolesOf(claims), roles) || claims["crm_id"] != "CRM-"+tc.email {
					t.Errorf("%s: roles %v crm_id %v", what, rolesOf(claims), claims["crm_id"])
				}
			}
			if res.IDClaims["email"] != tc.email || res.IDClaims["iss"] != d.IssuerURL || res.Refreshed.IDClaims["sub"] != res.IDClaims["sub"] {
				t.Errorf("ID tokens: %v, refreshed %v", res.IDClaims, res.Refreshed.IDClaims)
			}
			if res.IDTokenAlg != tc.wantAlg || res.Refreshed.IDTokenAlg != tc.wantAlg {
				t.Errorf("ID token alg %q, after refresh %q; want %s", res.IDTokenAlg, res.Refreshed.IDTokenAlg, tc.wantAlg)
			}
			if !res.Refreshed.Rotated {
				t.Errorf("the refresh token was not rotated")
			}
			// RFC 9207: openid-client requires iss in the authorization response
			// when discovery advertises it. The op library usher is built on
			// neither sends nor advertises it (one issuer per SPA: no mix-up).
			if res.IssuerMetadata["authorization_response_iss_parameter_supported"] == true && callback.Get("iss") != d.IssuerURL {
				t.Errorf("iss advertised, but the authorization response carries iss=%q", callback.Get("iss"))
			}
			r := apiCall(t, d, "GET", "/api/invitations/"+inv["id"].(string), api, nil)
			if r.body["status"] != "redeemed" {
				t.Errorf("invitation after the flow: %s", r.raw)
			}
		})
	}
}

// nodeRP is e2e/interop/openid-client.mjs running, spoken to one JSON line
// at a time.
type nodeRP struct {
	t      *testing.T
	stdin  io.WriteCloser
	stdout *bufio.Reader
	stderr *strings.Builder
}

// startNodeRP runs the script with args; idTokenAlg, when set, becomes
// ID_TOKEN_ALG (the library then accepts only that ID token algorithm).
func startNodeRP(t *testing.T, idTokenAlg string, args ...string) *nodeRP {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	cmd := exec.CommandContext(ctx, "node", append([]string{filepath.Join(interopDir, "openid-client.mjs")}, args...)...)
	if idTokenAlg != "" {
		cmd.Env = append(os.Environ(), "ID_TOKEN_ALG="+idTokenAlg)
	}
	rp := &nodeRP{t: t, stderr: &strings.Builder{}}
	cmd.Stderr = rp.stderr
	var err error
	if rp.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	rp.stdout = bufio.NewReader(out)
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting node: %v", err)
	}
	t.Cleanup(func() {
		rp.stdin.Close()
		cmd.Wait()
		cancel()
	})
	return rp
}

// read decodes the script's next line into v, failing on {"error": …}.
func (rp *nodeRP) read(v any) {
	rp.t.Helper()
	line, err := rp.stdout.ReadBytes('\n')
	if err != nil {
		rp.t.Fatalf("reading from openid-client: %v\nstderr: %s", err, rp.stderr)
	}
	var e struct {
		Error string `json:"error"`
		Code  string `json:"code"`
		Cause string `json:"cause"`
	}
	if json.Unmarshal(line, &e) == nil && e.Error != "" {
		rp.t.Fatalf("openid-client: %s (code %s, cause %s)\nstderr: %s", e.Error, e.Code, e.Cause, rp.stderr)
	}
	if err := json.Unmarshal(line, v); err != nil {
		rp.t.Fatalf("decoding %q: %v", line, err)
	}
}

func (rp *nodeRP) write(line string) {
	rp.t.Helper()
	if _, err := fmt.Fprintln(rp.stdin, line); err != nil {
		rp.t.Fatalf("writing to openid-client: %v\nstderr: %s", err, rp.stderr)
	}
}
