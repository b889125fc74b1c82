package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/grants"
)

// Issue 10 §1: claim names that fold onto registered claims. Go's
// encoding/json matches keys case-insensitively with Unicode folding, so a
// Go relying party reads "ſub" (U+017F) as "sub".
func TestClaimNamesFoldingOntoRegisteredClaims(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	api := funnelToken(t, d, "invitations:write invitations:read")

	t.Run("invitation refused", func(t *testing.T) {
		r := apiCall(t, d, http.MethodPost, "/api/invitations", api, map[string]any{
			"email": "attacker@example.com", "send_email": false,
			"claims": map[string]any{"\u017fub": "someone-else", "\u017fcope": "invitations:write", "role\u017f": []string{"usher:admin"},
				"nic\u212aname": "k", "\uff53\uff55\uff42": "fullwidth", "SUB": "upper", "crm_id": "C-1"},
		})
		if r.status != http.StatusBadRequest || r.header.Get("Content-Type") != "application/problem+json" {
			t.Fatalf("%d %s %s, want 400 problem+json", r.status, r.header.Get("Content-Type"), r.raw)
		}
		named := map[string]string{}
		for _, e := range r.body["errors"].([]any) {
			named[e.(map[string]any)["field"].(string)] = e.(map[string]any)["message"].(string)
		}
		for _, f := range []string{"claims.\u017fub", "claims.\u017fcope", "claims.role\u017f", "claims.nic\u212aname", "claims.\uff53\uff55\uff42", "claims.SUB"} {
			if named[f] == "" {
				t.Errorf("problem does not name %q: %s", f, r.raw)
			}
		}
		if msg := named["claims.\u017fub"]; !strings.Contains(msg, "folds onto") || !strings.Contains(msg, `"sub"`) {
			t.Errorf("claims.ſub message %q does not say it folds onto \"sub\"", msg)
		}
		if _, ok := named["claims.crm_id"]; ok {
			t.Errorf("crm_id refused: %s", r.raw)
		}
	})

	t.Run("stored grant not served", func(t *testing.T) {
		// An invitation stored before the rule existed (written directly).
		victim := "usr-victim"
		token, hash := grants.NewToken()
		now := time.Now()
		if _, err := d.App.Store.CreateInvitation(context.Background(), &grants.Invitation{
			ID: "inv-legacy-fold", TokenHash: hash, Email: "legacy@example.com", EmailMatch: grants.MatchAny,
			Claims: map[string]any{"\u017fub": victim, "\u017fcope": "invitations:write", "role\u017f": []any{"usher:admin"}, "crm_id": "C-9"},
			Status: grants.StatusPending, CreatedAt: now, ExpiresAt: now.Add(time.Hour),
		}); err != nil {
			t.Fatal(err)
		}
		a := newAgent(t, d.SPAURL)
		resp, body, v := a.signInWithInvitation(d, token, "signup",
			url.Values{"email": {"legacy@example.com"}, "password": {"password-123456"}, "name": {"L"}})
		tr := exchangeCode(t, d, a.callbackOf(resp, body).Get("code"), v)
		var user string
		for name, jwt := range map[string]string{"ID token": tr.IDToken, "access token": tr.AccessToken} {
			c := jwtClaims(t, jwt)
			for _, k := range []string{"\u017fub", "\u017fcope", "role\u017f"} {
				if _, ok := c[k]; ok {
					t.Errorf("%s serves %q: %v", name, k, c)
				}
			}
			if c["crm_id"] != "C-9" {
				t.Errorf("%s lost the safe claim crm_id: %v", name, c)
			}
			user, _ = c["sub"].(string)
		}
		// What a Go relying party believes, verified with go-oidc.
		ctx := gooidc.ClientContext(context.Background(), http.DefaultClient)
		provider, err := gooidc.NewProvider(ctx, d.IssuerURL)
		if err != nil {
			t.Fatal(err)
		}
		idt, err := provider.Verifier(&gooidc.Config{ClientID: app.DevSPAClientID}).Verify(ctx, tr.IDToken)
		if err != nil {
			t.Fatal(err)
		}
		if idt.Subject == victim || idt.Subject != user {
			t.Errorf("go-oidc IDToken.Subject = %q (token sub %q), the forged one is %q", idt.Subject, user, victim)
		}
		ui := userinfoJSON(t, d, tr.AccessToken)
		var typed struct {
			Sub string `json:"sub"`
		}
		json.Unmarshal(ui, &typed)
		if typed.Sub != user || strings.Contains(string(ui), "\u017fub") {
			t.Errorf("userinfo as a Go client reads it: sub %q, body %s", typed.Sub, ui)
		}
		// Not lost: the grant still holds it, and the operator can find it.
		g := apiCall(t, d, http.MethodGet, "/api/users/"+user+"/grants", api, nil)
		if claims, _ := g.body["claims"].(map[string]any); claims["\u017fub"] != victim {
			t.Errorf("stored claim was dropped from the grant: %s", g.raw)
		}
		if !strings.Contains(g.raw, `"unsafe_claims":["role\u017f","\u017fcope","\u017fub"]`) && !strings.Contains(g.raw, `"unsafe_claims":["roleſ","ſcope","ſub"]`) {
			t.Errorf("grant does not list its unsafe claims: %s", g.raw)
		}
		l := apiCall(t, d, http.MethodGet, "/api/invitations?unsafe_claims=true", api, nil)
		list, _ := l.body["invitations"].([]any)
		if l.status != http.StatusOK || len(list) != 1 || list[0].(map[string]any)["id"] != "inv-legacy-fold" {
			t.Errorf("GET /api/invitations?unsafe_claims=true: %d %s", l.status, l.raw)
		}
	})
}

// userinfoJSON calls /userinfo and returns the raw body (it must answer 200).
func userinfoJSON(t *testing.T, d *app.Dev, at string) []byte {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, strings.TrimSuffix(d.IssuerURL, "/")+"/userinfo", nil)
	req.Header.Set("Authorization", "Bearer "+at)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var raw json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("userinfo: %d %v", resp.StatusCode, err)
	}
	return raw
}
