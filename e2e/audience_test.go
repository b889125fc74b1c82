package e2e

import (
	"net/url"
	"slices"
	"testing"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
)

// An app that asks for an API's token (`audience`, as Auth0's SDKs do) gets
// an access token for that API; the ID token stays for the client; an API
// the client is not allowed is refused.
func TestAccessTokenAudience(t *testing.T) {
	t.Parallel()
	const api = "https://api.example.com/"
	d := startDev(t, app.DevOptions{Configure: func(c *config.Config) { c.Clients[0].Audiences = []string{api} }})
	a := newAgent(t, d.SPAURL)
	u, verifier, _ := authorizeURL(d, url.Values{"audience": {api}})
	resp, body := a.get(u)
	resp, body = a.devidpForm(resp, body, "login", url.Values{"email": {app.DevUserEmail}, "password": {app.DevUserPassword}})
	tr := exchangeCode(t, d, a.callbackOf(resp, body).Get("code"), verifier)
	audOf := func(jwt string) []string {
		var out []string
		switch v := jwtClaims(t, jwt)["aud"].(type) {
		case string:
			out = []string{v}
		case []any:
			for _, x := range v {
				out = append(out, x.(string))
			}
		}
		return out
	}
	if got := audOf(tr.AccessToken); !slices.Equal(got, []string{api}) {
		t.Fatalf("access token aud = %v, want [%s]", got, api)
	}
	if got := audOf(tr.IDToken); !slices.Equal(got, []string{app.DevSPAClientID}) {
		t.Fatalf("ID token aud = %v, want [%s]", got, app.DevSPAClientID)
	}
	r := refresh(t, d, tr.RefreshToken)
	if got := audOf(r.AccessToken); !slices.Equal(got, []string{api}) {
		t.Fatalf("refreshed access token aud = %v", got)
	}
	if s := userinfoStatus(t, d, r.AccessToken); s != 200 {
		t.Fatalf("userinfo with an API access token: %d", s)
	}

	u, _, _ = authorizeURL(d, url.Values{"audience": {"https://other.example.com/"}})
	resp, body = newAgent(t, d.SPAURL).get(u)
	if q := a.callbackOf(resp, body); q.Get("error") != "invalid_request" || q.Get("code") != "" {
		t.Fatalf("a foreign audience: %v", q)
	}
}
