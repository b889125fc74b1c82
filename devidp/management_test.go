package devidp_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/auth0/go-auth0"
	"github.com/auth0/go-auth0/management"

	"github.com/usher-oidc/usher/devidp"
	"github.com/usher-oidc/usher/internal/testkit"
)

const (
	m2mID     = "usher-m2m"
	m2mSecret = "usher-m2m-secret-0123456789abcdef"
)

// startTenant runs a devidp with a management client, answering as
// https://{domain}/ would (issuer with a trailing slash).
func startTenant(t *testing.T, users ...devidp.User) (srv *devidp.Server, domain string) {
	t.Helper()
	return startTenantWith(t, func(c *devidp.Config) { c.Users = users })
}

// startTenantWith is startTenant with its configuration changed by mod.
func startTenantWith(t *testing.T, mod func(*devidp.Config)) (srv *devidp.Server, domain string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	domain = ln.Addr().String()
	cfg := devidp.Config{
		Issuer: "http://" + domain + "/",
		Clients: []devidp.Client{{
			ID: clientID, Secret: clientSecret, RedirectURIs: []string{redirectURI},
		}},
		ManagementClients: []devidp.Client{{ID: m2mID, Secret: m2mSecret}},
	}
	mod(&cfg)
	srv, err = devidp.New(cfg)
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(srv)
	hs.Listener.Close()
	hs.Listener = ln
	hs.Start()
	t.Cleanup(hs.Close)
	return srv, domain
}

func newAPI(t *testing.T, domain string) *management.Management {
	t.Helper()
	api, err := management.New(domain, management.WithInsecure(),
		management.WithClientCredentials(context.Background(), m2mID, m2mSecret))
	if err != nil {
		t.Fatal(err)
	}
	return api
}

// call makes a raw HTTP request and decodes a JSON answer into out (if not nil).
func call(t *testing.T, method, u, token string, body any, out any) *http.Response {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = strings.NewReader(string(b))
	}
	req, err := http.NewRequest(method, u, r)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: %d %s: %v", method, u, resp.StatusCode, raw, err)
		}
	}
	return resp
}

func managementToken(t *testing.T, domain string, form url.Values) (*http.Response, map[string]any) {
	t.Helper()
	resp, err := http.PostForm("http://"+domain+"/oauth/token", form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return resp, out
}

func goodToken(t *testing.T, domain string) string {
	t.Helper()
	resp, out := managementToken(t, domain, url.Values{
		"grant_type": {"client_credentials"}, "client_id": {m2mID}, "client_secret": {m2mSecret},
		"audience": {"http://" + domain + "/api/v2/"},
	})
	tok, _ := out["access_token"].(string)
	if resp.StatusCode != http.StatusOK || tok == "" || out["token_type"] != "Bearer" || out["expires_in"] == nil {
		t.Fatalf("token: %d %v", resp.StatusCode, out)
	}
	return tok
}

func TestManagementTokenAndAuth(t *testing.T) {
	t.Parallel()
	_, domain := startTenant(t, seeded)
	base := "http://" + domain
	aud := base + "/api/v2/"

	for _, tc := range []struct {
		name   string
		form   url.Values
		status int
	}{
		{"wrong secret", url.Values{"grant_type": {"client_credentials"}, "client_id": {m2mID}, "client_secret": {"nope"}, "audience": {aud}}, http.StatusUnauthorized},
		{"web client is not a management client", url.Values{"grant_type": {"client_credentials"}, "client_id": {clientID}, "client_secret": {clientSecret}, "audience": {aud}}, http.StatusUnauthorized},
		{"another tenant's audience", url.Values{"grant_type": {"client_credentials"}, "client_id": {m2mID}, "client_secret": {m2mSecret}, "audience": {"https://other.example/api/v2/"}}, http.StatusForbidden},
	} {
		resp, out := managementToken(t, domain, tc.form)
		if resp.StatusCode != tc.status || out["error"] != "access_denied" {
			t.Errorf("%s: %d %v, want %d access_denied", tc.name, resp.StatusCode, out, tc.status)
		}
	}

	u := base + "/api/v2/users-by-email?email=" + url.QueryEscape(strings.ToLower(seeded.Email)) // stored lowercased
	for _, tok := range []string{"", "not-a-token"} {
		var body map[string]any
		resp := call(t, http.MethodGet, u, tok, nil, &body)
		if resp.StatusCode != http.StatusUnauthorized || body["statusCode"] != float64(401) || body["error"] != "Unauthorized" {
			t.Errorf("token %q: %d %v, want 401", tok, resp.StatusCode, body)
		}
	}
	var users []map[string]any
	if resp := call(t, http.MethodGet, u, goodToken(t, domain), nil, &users); resp.StatusCode != http.StatusOK || len(users) != 1 {
		t.Fatalf("with token: %d %v", resp.StatusCode, users)
	}

	// A client-credentials request without the Management API audience still
	// goes to the OIDC provider, which does not offer that grant.
	resp, out := managementToken(t, domain, url.Values{"grant_type": {"client_credentials"}, "client_id": {m2mID}, "client_secret": {m2mSecret}})
	if resp.StatusCode == http.StatusOK {
		t.Errorf("client_credentials without audience: %d %v", resp.StatusCode, out)
	}
}

func TestManagementUsersByEmail(t *testing.T) {
	t.Parallel()
	srv, domain := startTenant(t, seeded)
	sub, _ := srv.UserSub(devidp.ConnectionPassword, seeded.Email)
	gsub, err := srv.AddSocialUser(devidp.ConnectionGoogle, "ALICE@example.com", "Alice G", true)
	if err != nil {
		t.Fatal(err)
	}
	api := newAPI(t, domain)
	ctx := context.Background()

	// As Auth0: the database connection stored the email lowercased, the
	// social identity as Google gave it, and the lookup is case-sensitive.
	for email, want := range map[string][]string{
		"alice@example.com": {sub}, "ALICE@example.com": {gsub},
		"ALICE@EXAMPLE.COM": nil, "Alice@Example.com": nil,
	} {
		users, err := api.User.ListByEmail(ctx, email)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, u := range users {
			ids = append(ids, u.GetID())
			if u.GetEmail() != email || len(u.Identities) != 1 || u.CreatedAt == nil {
				t.Errorf("user %+v", u)
			}
		}
		if !slices.Equal(ids, want) {
			t.Errorf("ListByEmail(%q) = %v, want %v", email, ids, want)
		}
	}
	users, err := api.User.ListByEmail(ctx, "nobody@example.com")
	if err != nil || len(users) != 0 {
		t.Errorf("unknown email: %v %v", users, err)
	}

	u, err := api.User.Read(ctx, gsub)
	if err != nil {
		t.Fatal(err)
	}
	id := u.Identities[0]
	if id.GetProvider() != "google-oauth2" || id.GetConnection() != "google-oauth2" || !id.GetIsSocial() ||
		"google-oauth2|"+id.GetUserID() != gsub || !u.GetEmailVerified() || u.GetName() != "Alice G" {
		t.Errorf("google user = %+v, identity %+v", u, id)
	}
	u, err = api.User.Read(ctx, sub)
	if err != nil {
		t.Fatal(err)
	}
	if id := u.Identities[0]; id.GetProvider() != "auth0" || id.GetConnection() != devidp.ConnectionPassword || id.GetIsSocial() {
		t.Errorf("password identity = %+v", id)
	}

	_, err = api.User.Read(ctx, "auth0|000000000000000000000000")
	var merr management.Error
	if !errors.As(err, &merr) || merr.Status() != http.StatusNotFound {
		t.Errorf("unknown user: %v", err)
	}
}

func TestManagementPatchMergesAppMetadata(t *testing.T) {
	t.Parallel()
	srv, domain := startTenant(t, seeded)
	sub, _ := srv.UserSub(devidp.ConnectionPassword, seeded.Email)
	api := newAPI(t, domain)
	ctx := context.Background()

	patch := func(md map[string]any) {
		t.Helper()
		if err := api.User.Update(ctx, sub, &management.User{AppMetadata: &md}); err != nil {
			t.Fatal(err)
		}
	}
	patch(map[string]any{"plan": "full", "nested": map[string]any{"x": 1, "y": 2}, "drop": true})
	patch(map[string]any{"nested": map[string]any{"z": 3}, "drop": nil, "extra": "yes"})
	want := map[string]any{"plan": "full", "nested": map[string]any{"z": float64(3)}, "extra": "yes"}
	if got := srv.AppMetadata(sub); !reflect.DeepEqual(got, want) {
		t.Errorf("after merge: %v, want %v", got, want)
	}
	u, err := api.User.Read(ctx, sub)
	if err != nil {
		t.Fatal(err)
	}
	if got := u.GetAppMetadata(); !reflect.DeepEqual(got, want) {
		t.Errorf("read back: %v, want %v", got, want)
	}

	// The copy handed out is not devidp's state.
	srv.AppMetadata(sub)["plan"] = "changed"
	if srv.AppMetadata(sub)["plan"] != "full" {
		t.Error("AppMetadata returned an alias")
	}

	// An empty object clears the metadata.
	patch(map[string]any{})
	if got := srv.AppMetadata(sub); got != nil {
		t.Errorf("after {}: %v", got)
	}

	// Unknown properties are refused; bad JSON too.
	tok := goodToken(t, domain)
	uu := "http://" + domain + "/api/v2/users/" + url.PathEscape(sub)
	var body map[string]any
	if resp := call(t, http.MethodPatch, uu, tok, map[string]any{"blocked": true}, &body); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("unknown property: %d %v", resp.StatusCode, body)
	}
	if resp := call(t, http.MethodPatch, uu, tok, map[string]any{"app_metadata": "x"}, &body); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("app_metadata not an object: %d %v", resp.StatusCode, body)
	}

	// PatchAppMetadata has the same semantics.
	if err := srv.PatchAppMetadata(sub, map[string]any{"a": 1, "b": 2}); err != nil {
		t.Fatal(err)
	}
	if err := srv.PatchAppMetadata(sub, map[string]any{"a": nil}); err != nil {
		t.Fatal(err)
	}
	if got := srv.AppMetadata(sub); !reflect.DeepEqual(got, map[string]any{"b": float64(2)}) {
		t.Errorf("PatchAppMetadata: %v", got)
	}
}

func TestManagementRoles(t *testing.T) {
	t.Parallel()
	srv, domain := startTenant(t, seeded)
	sub, _ := srv.UserSub(devidp.ConnectionPassword, seeded.Email)
	api := newAPI(t, domain)
	ctx := context.Background()

	editorID, err := srv.CreateRole("editor", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.CreateRole("editor", ""); err == nil {
		t.Error("duplicate role created")
	}
	admin := &management.Role{Name: auth0.String("admin"), Description: auth0.String("d")}
	if err := api.Role.Create(ctx, admin); err != nil || admin.GetID() == "" {
		t.Fatalf("create: %v %+v", err, admin)
	}
	err = api.Role.Create(ctx, &management.Role{Name: auth0.String("admin")})
	var merr management.Error
	if !errors.As(err, &merr) || merr.Status() != http.StatusConflict {
		t.Errorf("duplicate create: %v", err)
	}
	// name_filter is case-insensitive; the caller matches exactly itself.
	list, err := api.Role.List(ctx, management.Parameter("name_filter", "ADMIN"))
	if err != nil || len(list.Roles) != 1 || list.Roles[0].GetID() != admin.GetID() || list.Total != 1 {
		t.Fatalf("list: %v %+v", err, list)
	}

	if err := api.User.AssignRoles(ctx, sub, []*management.Role{{ID: &editorID}, admin}); err != nil {
		t.Fatal(err)
	}
	if got := srv.UserRoles(sub); !slices.Equal(got, []string{"admin", "editor"}) {
		t.Errorf("UserRoles = %v", got)
	}
	ul, err := api.User.Roles(ctx, sub)
	if err != nil || len(ul.Roles) != 2 {
		t.Errorf("User.Roles: %v %+v", err, ul)
	}
	if err := api.User.RemoveRoles(ctx, sub, []*management.Role{admin}); err != nil {
		t.Fatal(err)
	}
	if got := srv.UserRoles(sub); !slices.Equal(got, []string{"editor"}) {
		t.Errorf("after remove: %v", got)
	}
	bogus := "rol_0000000000000000"
	if err := api.User.AssignRoles(ctx, sub, []*management.Role{{ID: &bogus}}); !errors.As(err, &merr) || merr.Status() != http.StatusNotFound {
		t.Errorf("unknown role: %v", err)
	}
}

func TestManagementRateLimitAndDown(t *testing.T) {
	t.Parallel()
	srv, domain := startTenant(t, seeded)
	tok := goodToken(t, domain)
	u := "http://" + domain + "/api/v2/users-by-email?email=" + url.QueryEscape(strings.ToLower(seeded.Email)) // stored lowercased

	srv.ManagementRateLimit(2, 1500*time.Millisecond)
	for range 2 {
		before := time.Now()
		var body map[string]any
		resp := call(t, http.MethodGet, u, tok, nil, &body)
		reset, _ := strconv.ParseInt(resp.Header.Get("X-RateLimit-Reset"), 10, 64)
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "2" ||
			resp.Header.Get("X-RateLimit-Remaining") != "0" || resp.Header.Get("X-RateLimit-Limit") == "" ||
			time.Unix(reset, 0).Before(before.Add(2*time.Second).Truncate(time.Second)) || body["statusCode"] != float64(429) {
			t.Fatalf("limited call: %d %v %v", resp.StatusCode, resp.Header, body)
		}
	}
	if resp := call(t, http.MethodGet, u, tok, nil, nil); resp.StatusCode != http.StatusOK || resp.Header.Get("X-RateLimit-Remaining") == "" {
		t.Fatalf("after the limit: %d", resp.StatusCode)
	}
	calls := srv.ManagementCalls()
	var statuses []int
	for _, c := range calls {
		statuses = append(statuses, c.Status)
	}
	if !slices.Equal(statuses, []int{200, 429, 429, 200}) || calls[1].RetryAfter != 2*time.Second || calls[0].Path != "/oauth/token" {
		t.Errorf("calls = %+v", calls)
	}

	srv.ManagementDown(true)
	if resp := call(t, http.MethodGet, u, tok, nil, nil); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("down: %d", resp.StatusCode)
	}
	if resp, _ := managementToken(t, domain, url.Values{
		"grant_type": {"client_credentials"}, "client_id": {m2mID}, "client_secret": {m2mSecret},
		"audience": {"http://" + domain + "/api/v2/"},
	}); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("token while down: %d", resp.StatusCode)
	}
	srv.ManagementDown(false)
	if resp := call(t, http.MethodGet, u, tok, nil, nil); resp.StatusCode != http.StatusOK {
		t.Errorf("back up: %d", resp.StatusCode)
	}
}

func TestNewRejectsBadManagementClients(t *testing.T) {
	t.Parallel()
	for _, mc := range [][]devidp.Client{
		{{ID: "", Secret: "s"}},
		{{ID: "a", Secret: ""}},
		{{ID: "a", Secret: "s"}, {ID: "a", Secret: "t"}},
	} {
		if _, err := devidp.New(devidp.Config{Issuer: "http://127.0.0.1:1/", ManagementClients: mc}); err == nil {
			t.Errorf("ManagementClients %+v accepted", mc)
		}
	}
}

// ManagementBudget: a burst, each answer saying what is left, then 429 with
// Retry-After until the bucket has a call again; lifting it lifts the 429s.
func TestManagementBudget(t *testing.T) {
	t.Parallel()
	srv, domain := startTenant(t, seeded)
	tok := goodToken(t, domain)
	u := "http://" + domain + "/api/v2/users-by-email?email=" + url.QueryEscape(strings.ToLower(seeded.Email))

	srv.ManagementBudget(2, 3)
	for i := range 3 {
		before := time.Now()
		resp := call(t, http.MethodGet, u, tok, nil, nil)
		reset, _ := strconv.ParseInt(resp.Header.Get("X-RateLimit-Reset"), 10, 64)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-RateLimit-Limit") != "3" ||
			resp.Header.Get("X-RateLimit-Remaining") != strconv.Itoa(2-i) || reset < before.Unix() {
			t.Fatalf("call %d of the burst: %d %v", i+1, resp.StatusCode, resp.Header)
		}
	}
	var body map[string]any
	resp := call(t, http.MethodGet, u, tok, nil, &body)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" ||
		resp.Header.Get("X-RateLimit-Remaining") != "0" || body["statusCode"] != float64(429) {
		t.Fatalf("past the burst: %d %v %v", resp.StatusCode, resp.Header, body)
	}
	testkit.Eventually(t, "a call allowed again", func() bool {
		return call(t, http.MethodGet, u, tok, nil, nil).StatusCode == http.StatusOK
	})
	srv.ManagementBudget(0, 0)
	for range 5 {
		if resp := call(t, http.MethodGet, u, tok, nil, nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("budget lifted: %d", resp.StatusCode)
		}
	}
}
