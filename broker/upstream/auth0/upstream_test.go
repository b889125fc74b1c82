package auth0_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"testing"

	"github.com/usher-oidc/usher/broker/upstream"
	"github.com/usher-oidc/usher/broker/upstream/auth0"
	"github.com/usher-oidc/usher/devidp"
	"github.com/usher-oidc/usher/internal/testkit"
)

// discovery serves a tenant's discovery document, with endSession as its
// end_session_endpoint ("" for none, as tenants without RP-initiated logout).
func discovery(t *testing.T, endSession func(base string) string) *httptest.Server {
	t.Helper()
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		doc := map[string]any{"issuer": srv.URL + "/", "authorization_endpoint": srv.URL + "/authorize",
			"token_endpoint": srv.URL + "/oauth/token", "jwks_uri": srv.URL + "/.well-known/jwks.json"}
		if ep := endSession(srv.URL); ep != "" {
			doc["end_session_endpoint"] = ep
		}
		_ = json.NewEncoder(w).Encode(doc)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func tenantUpstream(t *testing.T, srv *httptest.Server) *auth0.Upstream {
	t.Helper()
	u := auth0.NewUpstream(auth0.Options{Issuer: srv.URL + "/", ClientID: "usher", ClientSecret: "s", HTTPClient: srv.Client(),
		PassThroughClaims: []string{"https://x/plan", "org_name"}, UserIDClaim: "auth0_user_id"})
	if err := u.Ready(context.Background()); err != nil {
		t.Fatal(err)
	}
	return u
}

func TestOrganizationMatching(t *testing.T) {
	t.Parallel()
	u := auth0.NewUpstream(auth0.Options{Issuer: "https://tenant.example/"})
	claims := map[string]any{"org_id": "org_abc", "org_name": "acme"}
	for _, tc := range []struct {
		org    string
		claims map[string]any
		same   bool
	}{
		{"org_abc", claims, true}, {"ACME", claims, true}, {"org_other", claims, false}, {"other", claims, false},
		{"", claims, false}, {"", nil, true}, {"", map[string]any{"https://x/plan": "pro"}, true}, {"org_abc", nil, false},
		{"acme", map[string]any{"org_id": "org_abc"}, false},
	} {
		if got := u.InOrganization(tc.org, tc.claims); got != tc.same {
			t.Errorf("InOrganization(%q, %v) = %v", tc.org, tc.claims, got)
		}
	}
}

func TestConnectionOf(t *testing.T) {
	t.Parallel()
	for sub, want := range map[string]string{"auth0|1": "Username-Password-Authentication", "google-oauth2|2": "google-oauth2",
		"samlp|corp|3": "corp", "samlp|4": "samlp", "plain": ""} {
		if got := auth0.ConnectionOf(sub); got != want {
			t.Errorf("ConnectionOf(%q) = %q, want %q", sub, got, want)
		}
	}
}

// org_id and org_name are copied (once) besides the pass-through claims;
// the user ID claim carries the sub.
func TestTokenClaims(t *testing.T) {
	t.Parallel()
	tc := auth0.NewUpstream(auth0.Options{Issuer: "https://tenant.example/", PassThroughClaims: []string{"https://x/plan", "org_name"},
		UserIDClaim: "auth0_user_id"}).TokenClaims()
	if !slices.Equal(tc.Copied, []string{"https://x/plan", "org_name", "org_id"}) || tc.Subject != "auth0_user_id" {
		t.Errorf("TokenClaims = %+v", tc)
	}
}

// Auth0's parameters: organization and invitation, screen_hint=signup for
// an invitee without account unless the app chose a screen.
func TestLoginURL(t *testing.T) {
	t.Parallel()
	u := tenantUpstream(t, discovery(t, func(string) string { return "" }))
	query := func(r upstream.LoginRequest) url.Values {
		r.RedirectURL, r.State, r.Nonce, r.CodeVerifier = "https://usher.example/callback", "st", "no", "ve"
		p, err := url.Parse(u.LoginURL(r))
		if err != nil {
			t.Fatal(err)
		}
		return p.Query()
	}
	q := query(upstream.LoginRequest{Organization: "org_1", Invitation: "inv1", Connection: "google-oauth2", LoginHint: "a@example.com"})
	if q.Get("organization") != "org_1" || q.Get("invitation") != "inv1" || q.Get("connection") != "google-oauth2" ||
		q.Get("login_hint") != "a@example.com" || q.Has("screen_hint") {
		t.Errorf("query = %v", q)
	}
	if q := query(upstream.LoginRequest{Signup: true}); q.Get("screen_hint") != "signup" {
		t.Errorf("signup: screen_hint = %q", q.Get("screen_hint"))
	}
	if q := query(upstream.LoginRequest{Signup: true, ScreenHint: "login"}); q.Get("screen_hint") != "login" {
		t.Errorf("the app's screen_hint: %q", q.Get("screen_hint"))
	}
	if q := query(upstream.LoginRequest{}); q.Has("organization") || q.Has("invitation") || q.Has("screen_hint") {
		t.Errorf("empty parameters sent: %v", q)
	}
}

// Without an end_session_endpoint (or with a /v2/logout one) the tenant's
// /v2/logout, state inside returnTo; with RP-initiated logout the OIDC one.
func TestLogoutURL(t *testing.T) {
	t.Parallel()
	r := upstream.LogoutRequest{Done: "https://usher.example/logout/done", State: "a b", SessionID: "sid"}
	for name, ep := range map[string]func(string) string{
		"none": func(string) string { return "" }, "v2": func(base string) string { return base + "/v2/logout" },
	} {
		srv := discovery(t, ep)
		got, err := url.Parse(tenantUpstream(t, srv).LogoutURL(context.Background(), r))
		if err != nil || got.Path != "/v2/logout" || got.Query().Get("client_id") != "usher" ||
			got.Query().Get("returnTo") != r.Done+"?state=a+b" || got.Query().Has("state") || got.Query().Has("logout_hint") {
			t.Errorf("%s: logout URL %v", name, got)
		}
	}
	srv := discovery(t, func(base string) string { return base + "/oidc/logout" })
	got, _ := url.Parse(tenantUpstream(t, srv).LogoutURL(context.Background(), r))
	if q := got.Query(); got.Path != "/oidc/logout" || q.Get("post_logout_redirect_uri") != r.Done || q.Get("state") != "a b" || q.Get("logout_hint") != "sid" {
		t.Errorf("RP-initiated logout URL %v", got)
	}
}

// The Management API adds AccountFinder and GrantMirror; without it the
// upstream has neither. Organizations and LogoutRedirector are always there.
func TestCapabilities(t *testing.T) {
	t.Parallel()
	plain := auth0.New(auth0.Options{Issuer: "https://tenant.example/"})
	if _, ok := plain.(upstream.AccountFinder); ok {
		t.Error("AccountFinder without the Management API")
	}
	if _, ok := plain.(upstream.GrantMirror); ok {
		t.Error("GrantMirror without the Management API")
	}
	tenant, domain := startTenant(t)
	st, _ := testkit.OpenBolt(t)
	managed := auth0.New(auth0.Options{Issuer: tenant.Issuer(), Mirror: newTestMirror(t, st, domain, nil)})
	finder, ok := managed.(upstream.AccountFinder)
	if !ok {
		t.Fatal("no AccountFinder with the Management API")
	}
	if _, ok := managed.(upstream.GrantMirror); !ok {
		t.Error("no GrantMirror with the Management API")
	}
	if _, err := tenant.AddUser(devidp.User{Email: "bob@example.com", Password: "pw"}); err != nil {
		t.Fatal(err)
	}
	if has, err := finder.HasAccount(context.Background(), "bob@example.com"); err != nil || !has {
		t.Errorf("HasAccount(bob) = %v, %v", has, err)
	}
	for _, u := range []upstream.Upstream{plain, managed} {
		if _, ok := u.(upstream.Organizations); !ok {
			t.Errorf("%T: no Organizations", u)
		}
		if _, ok := u.(upstream.LogoutRedirector); !ok {
			t.Errorf("%T: no LogoutRedirector", u)
		}
		if u.TokenClaims().Subject != "" || !slices.Contains(u.TokenClaims().Copied, auth0.ClaimOrgID) {
			t.Errorf("%T: TokenClaims = %+v", u, u.TokenClaims())
		}
	}
}
