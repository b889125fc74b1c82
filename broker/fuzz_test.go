package broker_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/usher-oidc/usher/broker"
	oidcupstream "github.com/usher-oidc/usher/broker/upstream/oidc"
	"github.com/usher-oidc/usher/grants"
	boltstore "github.com/usher-oidc/usher/store/bolt"
)

const (
	fuzzIssuer   = "http://127.0.0.1:9"
	fuzzSPA      = "http://127.0.0.1:7/callback"
	fuzzInitiate = "http://127.0.0.1:7/login"
	fuzzSecret   = "fuzz-client-secret-0123456789"
)

type fuzzEnv struct {
	h     http.Handler
	b     *broker.Broker
	store *boltstore.Store
	token string
}

// newFuzzBroker is a real broker on a bolt file; the upstream is never
// contacted by the handlers fuzzed here.
func newFuzzBroker(t testing.TB) *fuzzEnv { return newTestBroker(t, fuzzIssuer) }

func newTestBroker(t testing.TB, issuer string) *fuzzEnv {
	t.Helper()
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "fuzz.db"), boltstore.Options{SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	sum := sha256.Sum256([]byte(fuzzSecret))
	b, err := broker.New(context.Background(), broker.Options{
		Issuer: issuer,
		Clients: []broker.Client{
			{ID: "spa", Public: true, RedirectURIs: []string{fuzzSPA}, InitiateLoginURI: fuzzInitiate, GrantTypes: []string{"authorization_code", "refresh_token"}},
			{ID: "funnel", SecretSHA256: hex.EncodeToString(sum[:]), GrantTypes: []string{"client_credentials"}, Scopes: []string{"invitations:write", "invitations:read"}},
		},
		Upstream:      oidcupstream.New(oidcupstream.Options{Issuer: "http://127.0.0.1:8/", ClientID: "x", ClientSecret: "y"}),
		Sessions:      st,
		Grants:        st,
		SessionSecret: bytes.Repeat([]byte{7}, 32),
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		RateLimits:    broker.RateLimits{InvitePerMinute: 1 << 30, FailedRedemptionsPerHour: 1 << 30, APIPerMinute: 1 << 30},
	})
	if err != nil {
		t.Fatal(err)
	}
	env := &fuzzEnv{h: b.Handler(), b: b, store: st}
	req := httptest.NewRequest(http.MethodPost, "/oauth/token", strings.NewReader("grant_type=client_credentials"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("funnel", fuzzSecret)
	rec := httptest.NewRecorder()
	env.h.ServeHTTP(rec, req)
	var tr struct {
		AccessToken string `json:"access_token"`
	}
	json.Unmarshal(rec.Body.Bytes(), &tr)
	if tr.AccessToken == "" {
		t.Fatalf("client_credentials: %d %s", rec.Code, rec.Body)
	}
	env.token = tr.AccessToken
	return env
}

// FuzzAuthorize: whatever the query, /authorize never fails with 500 and
// never redirects anywhere but usher's own login step or the client's
// registered redirect URI (no open redirect).
func FuzzAuthorize(f *testing.F) {
	valid := url.Values{"client_id": {"spa"}, "redirect_uri": {fuzzSPA}, "response_type": {"code"}, "scope": {"openid"},
		"code_challenge": {"E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"}, "code_challenge_method": {"S256"}, "state": {"s"}}
	f.Add(valid.Encode())
	for _, edit := range []func(url.Values){
		func(v url.Values) { v.Set("redirect_uri", "https://evil.example/") },
		func(v url.Values) { v.Set("code_challenge_method", "plain") },
		func(v url.Values) { v.Set("response_type", "token") },
		func(v url.Values) { v.Set("prompt", "none login") },
		func(v url.Values) { v.Set("invitation", "inv_"+strings.Repeat("A", 43)) },
		func(v url.Values) { v.Del("redirect_uri"); v.Set("invitation", "x") },
		func(v url.Values) { v.Set("max_age", "-1"); v.Set("ui_locales", "\x00") },
		func(v url.Values) { v.Set("request", "eyJhbGciOiJub25lIn0.e30.") },
		func(v url.Values) { v.Set("response_mode", "fragment") },
	} {
		v := url.Values{}
		for k, x := range valid {
			v[k] = x
		}
		edit(v)
		f.Add(v.Encode())
	}
	f.Add("%zz&&==;")
	env := newFuzzBroker(f)
	f.Fuzz(func(t *testing.T, rawQuery string) {
		req := httptest.NewRequest(http.MethodGet, "/authorize", nil)
		req.URL.RawQuery = rawQuery
		rec := httptest.NewRecorder()
		env.h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("status %d for %q: %s", rec.Code, rawQuery, rec.Body)
		}
		loc := rec.Header().Get("Location")
		if loc == "" {
			return
		}
		switch {
		case strings.HasPrefix(loc, fuzzIssuer+"/login?id="):
		case strings.HasPrefix(loc, fuzzSPA+"?"), strings.HasPrefix(loc, fuzzSPA+"#"):
		case strings.HasPrefix(loc, fuzzInitiate+"?"): // invitation entry point
		default:
			t.Fatalf("redirect to %q for %q", loc, rawQuery)
		}
	})
}

// FuzzInviteLink: the invitation link handler answers a page or the
// client's initiate_login_uri, never 500, never elsewhere.
func FuzzInviteLink(f *testing.F) {
	env := newFuzzBroker(f)
	body := `{"email":"a@example.com","roles":["r"],"send_email":false}`
	req := httptest.NewRequest(http.MethodPost, "/api/invitations", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+env.token)
	rec := httptest.NewRecorder()
	env.h.ServeHTTP(rec, req)
	var inv struct {
		URL string `json:"url"`
	}
	json.Unmarshal(rec.Body.Bytes(), &inv)
	good := inv.URL[strings.LastIndex(inv.URL, "/")+1:]
	f.Add(good)
	f.Add(good[:20])
	f.Add(strings.ToUpper(good))
	f.Add("inv_" + strings.Repeat("-", 43))
	f.Add("../../etc/passwd")
	f.Add("")
	f.Fuzz(func(t *testing.T, token string) {
		req := httptest.NewRequest(http.MethodGet, "/invite/x", nil)
		req.URL.Path = "/invite/" + token
		req.URL.RawPath = ""
		rec := httptest.NewRecorder()
		env.h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("status %d for %q", rec.Code, token)
		}
		// ServeMux answers unclean paths with a redirect to the cleaned path
		// on the same origin; anything absolute must be the app's login URI.
		if loc := rec.Header().Get("Location"); loc != "" && !strings.HasPrefix(loc, fuzzInitiate+"?") && !sameOriginPath(loc) {
			t.Fatalf("redirect to %q for %q", loc, token)
		}
		if _, ok := grants.ParseToken(token); ok && len(token) != 47 {
			t.Fatalf("ParseToken accepted %q", token)
		}
	})
}

// FuzzCreateInvitation: any JSON body answers 2xx or a 4xx problem, never
// 500, and a refused body stores nothing.
func FuzzCreateInvitation(f *testing.F) {
	for _, seed := range []string{
		`{"email":"a@example.com","roles":["customer"],"claims":{"crm_id":"C-1"},"send_email":false}`,
		`{"email":"a@example.com","claims":{"sub":"x"}}`,
		`{"email":"not an email"}`,
		`{"email":"a@example.com","expires_in":-1}`,
		`{"email":"a@example.com","expires_in":99999999999999999999}`,
		`{"email":"a@example.com","claims":[1,2]}`,
		`{"email":"a@example.com","roles":"admin"}`,
		`{"email":"a@example.com","external_id":"x","metadata":{"a":{"b":{"c":null}}}}`,
		`null`, `[]`, `{`, ``, `{"email":"\u0000@x.y"}`,
	} {
		f.Add([]byte(seed))
	}
	env := newFuzzBroker(f)
	count := func(t *testing.T) int {
		list, _, err := env.store.ListInvitations(context.Background(), grants.InvitationFilter{Limit: 1000}, timeNow())
		if err != nil {
			t.Fatal(err)
		}
		return len(list)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		before := count(t)
		req := httptest.NewRequest(http.MethodPost, "/api/invitations", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+env.token)
		rec := httptest.NewRecorder()
		env.h.ServeHTTP(rec, req)
		switch {
		case rec.Code == http.StatusCreated:
			if count(t) != before+1 {
				t.Fatalf("201 but %d → %d invitations", before, count(t))
			}
		case rec.Code == http.StatusOK: // existing external_id
		case rec.Code >= 400 && rec.Code < 500:
			if rec.Header().Get("Content-Type") != "application/problem+json" {
				t.Fatalf("%d without a problem body", rec.Code)
			}
			if count(t) != before {
				t.Fatalf("refused body %q stored an invitation", body)
			}
		default:
			t.Fatalf("status %d for %q: %s", rec.Code, body, rec.Body)
		}
	})
}
