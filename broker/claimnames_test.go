package broker_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/usher-oidc/usher/broker"
	"github.com/usher-oidc/usher/grants"
)

// forge signs, with usher's own key, the payload of env.token with the
// claims of set replaced and one extra key appended last ("" = none):
// encoding/json lets the last of two folding keys win, so the extra key is
// the one a Go reader would believe.
func forge(t *testing.T, env *fuzzEnv, set map[string]any, extraKey, extraValue string) string {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.Split(env.token, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	for k, v := range set {
		m[k] = v
	}
	js, _ := json.Marshal(m)
	payload := string(js)
	if extraKey != "" {
		v, _ := json.Marshal(extraValue)
		k, _ := json.Marshal(extraKey)
		payload = payload[:len(payload)-1] + "," + string(k) + ":" + string(v) + "}"
	}
	tok, err := broker.SignAccessTokenPayloadForTest(env.b, payload)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// A token usher signed whose payload holds two keys that fold to one name
// (`sub` and `ſub`, `scope` and `SCOPE`) is refused wherever usher reads its
// own tokens: userinfo, introspection, the admin API.
func TestDuplicateFoldingKeysInTokensRefused(t *testing.T) {
	env := newTestBroker(t, fuzzIssuer)
	ctx := context.Background()
	for _, u := range []string{"user-a", "user-b"} {
		if _, _, err := env.store.ResolveIdentity(ctx, grants.Identity{Issuer: "http://127.0.0.1:8/", Subject: u},
			grants.Profile{Email: u + "@example.com"}, u, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	serve := func(r *http.Request) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		env.h.ServeHTTP(rec, r)
		return rec
	}
	userinfo := func(tok string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, "/userinfo", nil)
		r.Header.Set("Authorization", "Bearer "+tok)
		return serve(r)
	}
	introspect := func(tok string) map[string]any {
		r := httptest.NewRequest(http.MethodPost, "/oauth/introspect", strings.NewReader(url.Values{"token": {tok}}.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.SetBasicAuth("funnel", fuzzSecret)
		var out map[string]any
		json.Unmarshal(serve(r).Body.Bytes(), &out)
		return out
	}
	createInvitation := func(tok string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, "/api/invitations", strings.NewReader(`{"email":"x@example.com","send_email":false}`))
		r.Header.Set("Authorization", "Bearer "+tok)
		r.Header.Set("Content-Type", "application/json")
		return serve(r)
	}

	// Controls: the same payloads without the folding twin are accepted.
	plain := forge(t, env, map[string]any{"sub": "user-a"}, "crm_id", "C-1")
	if rec := userinfo(plain); rec.Code != http.StatusOK {
		t.Fatalf("control userinfo: %d %s", rec.Code, rec.Body)
	}
	if out := introspect(plain); out["active"] != true {
		t.Fatalf("control introspection: %v", out)
	}

	for _, dup := range []struct{ key, value string }{{"\u017fub", "user-b"}, {"SUB", "user-b"}, {"Sub", "user-b"}} {
		tok := forge(t, env, map[string]any{"sub": "user-a"}, dup.key, dup.value)
		if rec := userinfo(tok); rec.Code == http.StatusOK {
			t.Errorf("userinfo accepted a token with sub and %q: %s", dup.key, rec.Body)
		}
		if out := introspect(tok); out["active"] != false {
			t.Errorf("introspection: token with sub and %q is active: %v", dup.key, out)
		}
	}
	// The funnel holds invitations:read only in this token; a folding twin
	// of scope must not grant invitations:write.
	readOnly := map[string]any{"scope": "invitations:read"}
	if rec := createInvitation(forge(t, env, readOnly, "", "")); rec.Code != http.StatusForbidden {
		t.Fatalf("control: read-only token creating an invitation: %d %s", rec.Code, rec.Body)
	}
	for _, key := range []string{"SCOPE", "\u017fcope", "scope"} {
		if rec := createInvitation(forge(t, env, readOnly, key, "invitations:write")); rec.Code != http.StatusUnauthorized {
			t.Errorf("admin API: token with scope and %q: %d %s, want 401", key, rec.Code, rec.Body)
		}
	}
}
