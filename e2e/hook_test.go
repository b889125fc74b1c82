package e2e

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
)

// The redemption hook: allow, deny with a reason shown to the person, add
// and override claims, and a timeout under both policies.
func TestRedemptionHook(t *testing.T) {
	t.Parallel()
	const secret = "hook-secret-for-tests"
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		sig := r.Header.Get("Usher-Signature")
		ts, mac, _ := strings.Cut(strings.TrimPrefix(sig, "t="), ",v1=")
		m := hmac.New(sha256.New, []byte(secret))
		m.Write([]byte(ts + "."))
		m.Write(body)
		if !hmac.Equal([]byte(mac), []byte(hex.EncodeToString(m.Sum(nil)))) {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		var req struct {
			Invitation struct {
				Email    string         `json:"email"`
				Metadata map[string]any `json:"metadata"`
			} `json:"invitation"`
			Identity struct {
				Email string `json:"email"`
			} `json:"identity"`
			User struct {
				New bool `json:"new"`
			} `json:"user"`
		}
		json.Unmarshal(body, &req)
		switch req.Invitation.Metadata["case"] {
		case "deny":
			json.NewEncoder(w).Encode(map[string]any{"allow": false, "reason": "this offer is for new customers only"})
		case "claims":
			json.NewEncoder(w).Encode(map[string]any{"allow": true, "claims": map[string]any{"tier": "gold", "crm_id": "OVERRIDDEN", "sub": "forged", "\u017fub": "forged", "SCOPE": "invitations:write", "role\u017f": []string{"usher:admin"}}})
		case "slow":
			// A slow hook server (the world, not usher): it answers after
			// usher's hook timeout.
			time.Sleep(2 * time.Second)
			json.NewEncoder(w).Encode(map[string]any{"allow": true})
		default:
			if !req.User.New || req.Identity.Email != req.Invitation.Email {
				http.Error(w, "unexpected request", http.StatusBadRequest)
				return
			}
			json.NewEncoder(w).Encode(map[string]any{"allow": true})
		}
	}))
	t.Cleanup(hook.Close)

	for _, policy := range []string{"fail_closed", "fail_open"} {
		t.Run(policy, func(t *testing.T) {
			t.Parallel()
			d := startDev(t, app.DevOptions{Configure: func(c *config.Config) {
				c.Invitations.RedemptionHook = config.RedemptionHook{URL: hook.URL, Timeout: config.Duration(300 * time.Millisecond), Policy: policy, Secret: secret}
			}})
			api := funnelToken(t, d, "invitations:write invitations:read")
			var lastToken map[string]any
			run := func(t *testing.T, name string) (status int, body string, claims map[string]any) {
				email := name + "-" + policy + "@example.com"
				inv := invite(t, d, api, map[string]any{"email": email, "roles": []string{"customer"}, "claims": map[string]any{"crm_id": "C-1"},
					"metadata": map[string]any{"case": name}, "send_email": false})
				a := newAgent(t, d.SPAURL)
				resp, body, v := a.signInWithInvitation(d, tokenOf(inv["url"].(string)), "signup",
					url.Values{"email": {email}, "password": {"password-123456"}, "name": {"H"}})
				status = resp.StatusCode
				sub := subOf(t, d, a, resp, body, v)
				lastToken = a.lastIDClaims
				g := apiCall(t, d, http.MethodGet, "/api/users/"+sub+"/grants", api, nil)
				return status, body, g.body
			}
			t.Run("allow", func(t *testing.T) {
				status, _, g := run(t, "allow")
				if status != http.StatusFound || !slices.Contains(rolesOf(g), "customer") {
					t.Fatalf("allowed redemption: status %d grant %v", status, g)
				}
			})
			t.Run("deny", func(t *testing.T) {
				status, body, g := run(t, "deny")
				if status != http.StatusOK || !strings.Contains(body, "new customers only") || len(rolesOf(g)) != 0 {
					t.Fatalf("denied redemption: %d grant %v\n%s", status, g, clipText(body))
				}
			})
			t.Run("claims", func(t *testing.T) {
				_, _, g := run(t, "claims")
				c, _ := g["claims"].(map[string]any)
				if c["tier"] != "gold" || c["crm_id"] != "OVERRIDDEN" {
					t.Fatalf("hook claims not applied: %v", g)
				}
				if lastToken["tier"] != "gold" || lastToken["crm_id"] != "OVERRIDDEN" || lastToken["sub"] == "forged" {
					t.Fatalf("hook claims did not reach the ID token: %v", lastToken)
				}
				// Also names that fold onto one (issue 10 §1): dropped, never stored or served.
				for _, k := range []string{"sub", "\u017fub", "SCOPE", "role\u017f"} {
					if _, forged := c[k]; forged {
						t.Fatalf("the hook set %q, a registered claim: %v", k, c)
					}
					if _, forged := lastToken[k]; forged && k != "sub" {
						t.Fatalf("the ID token serves the hook's %q: %v", k, lastToken)
					}
				}
			})
			t.Run("timeout", func(t *testing.T) {
				status, body, g := run(t, "slow")
				if policy == "fail_open" {
					if status != http.StatusFound || !slices.Contains(rolesOf(g), "customer") {
						t.Fatalf("fail_open timeout: %d %v", status, g)
					}
				} else if status != http.StatusOK || !strings.Contains(body, "could not be checked") || len(rolesOf(g)) != 0 {
					t.Fatalf("fail_closed timeout: %d %v\n%s", status, g, clipText(body))
				}
			})
		})
	}
}
