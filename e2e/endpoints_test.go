package e2e

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/usher-oidc/usher/app"
)

// Introspection (RFC 7662) for a confidential client shows an access token
// active with its roles; revocation (RFC 7009) of the refresh token ends the
// family; CORS answers only the registered client origins.
func TestIntrospectionRevocationCORS(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{Configure: withResourceServer})
	base := strings.TrimSuffix(d.IssuerURL, "/")
	a := newAgent(t, d.SPAURL)
	code, v := a.signIn(d, app.DevUserEmail, app.DevUserPassword, false)
	tr := exchangeCode(t, d, code, v)

	introspect := func(token string) map[string]any {
		req, _ := http.NewRequest(http.MethodPost, base+"/oauth/introspect", strings.NewReader(url.Values{"token": {token}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(rsClientID, rsSecret) // only a resource server sees the SPA's tokens
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		return out
	}
	if got := introspect(tr.AccessToken); got["active"] != true || got["sub"] == nil || got["roles"] == nil {
		t.Fatalf("introspection of a live token: %v", got)
	}

	form := url.Values{"token": {tr.RefreshToken}, "token_type_hint": {"refresh_token"}, "client_id": {app.DevSPAClientID}}
	resp, err := http.PostForm(base+"/oauth/revoke", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("revocation: %d", resp.StatusCode)
	}
	if r := refresh(t, d, tr.RefreshToken); r.Error != "invalid_grant" {
		t.Fatalf("refresh after revocation: %+v", r)
	}
	if got := introspect(tr.AccessToken); got["active"] == true {
		t.Errorf("access token of a revoked family still active: %v", got)
	}

	for origin, allowed := range map[string]bool{d.SPAURL: true, "https://evil.example": false} {
		req, _ := http.NewRequest(http.MethodOptions, base+"/oauth/token", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got := resp.Header.Get("Access-Control-Allow-Origin")
		if allowed && got != origin || !allowed && got != "" {
			t.Errorf("CORS preflight from %s: Access-Control-Allow-Origin %q", origin, got)
		}
	}
}
