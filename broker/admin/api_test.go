package admin

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/securecookie"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/internal/testkit"
)

// testAPI is the admin API over a real bolt store. The token "write" has
// both scopes, "read" only invitations:read, "person" is not an API token,
// "down" cannot be checked; anything else is invalid.
func testAPI(t *testing.T) (*API, grants.Store) {
	t.Helper()
	store, _ := testkit.OpenBolt(t)
	now := time.Now().UTC().Truncate(time.Second) // the store expires idempotency keys by its own clock
	clock := func() time.Time { return now }
	h := &API{
		Invitations: grants.NewService(grants.ServiceOptions{Store: store, Now: clock}),
		Store:       store,
		Authenticate: func(_ context.Context, token string) (Caller, error) {
			switch token {
			case "write":
				return Caller{ClientID: "funnel", Subject: "funnel", Scopes: []string{scopeRead, scopeWrite}}, nil
			case "read":
				return Caller{ClientID: "reporter", Subject: "reporter", Scopes: []string{scopeRead}}, nil
			case "person":
				return Caller{}, ErrNotAPIToken
			case "down":
				return Caller{}, errors.New("store unreachable")
			}
			return Caller{}, ErrInvalidToken
		},
		Link:   func(_ *grants.Invitation, token string) string { return "https://usher.example.com/invite/" + token },
		Sealer: securecookie.New(securecookie.GenerateRandomKey(32), securecookie.GenerateRandomKey(32)),
		Logger: testkit.Logger(t),
		Now:    clock,
	}
	return h, store
}

type answer struct {
	status int
	header http.Header
	body   map[string]any
}

func call(t *testing.T, h http.Handler, method, path, token, body string, headers ...string) answer {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	a := answer{status: rec.Code, header: rec.Header()}
	if err := json.Unmarshal(rec.Body.Bytes(), &a.body); err != nil && rec.Body.Len() > 0 {
		t.Fatalf("%s %s: body is not JSON: %v\n%s", method, path, err, rec.Body)
	}
	return a
}

func mounted(h *API) *http.ServeMux {
	mux := http.NewServeMux()
	h.Mount(mux)
	return mux
}

func wantProblem(t *testing.T, a answer, status int, slug string) {
	t.Helper()
	if a.status != status || a.header.Get("Content-Type") != "application/problem+json" ||
		a.body["type"] != ProblemTypeBase+slug || a.body["status"] != float64(status) {
		t.Fatalf("got %d %s %v, want a %d %s problem", a.status, a.header.Get("Content-Type"), a.body, status, slug)
	}
}

func TestAPIAuthentication(t *testing.T) {
	h, _ := testAPI(t)
	mux := mounted(h)
	a := call(t, mux, "GET", "/api/invitations", "", "")
	wantProblem(t, a, http.StatusUnauthorized, "unauthorized")
	if a.header.Get("WWW-Authenticate") != `Bearer realm="usher"` {
		t.Errorf("WWW-Authenticate = %q", a.header.Get("WWW-Authenticate"))
	}
	wantProblem(t, call(t, mux, "GET", "/api/invitations", "nonsense", ""), http.StatusUnauthorized, "invalid-token")
	a = call(t, mux, "GET", "/api/invitations", "person", "")
	wantProblem(t, a, http.StatusUnauthorized, "invalid-token")
	if a.body["title"] != "Not an admin API token" {
		t.Errorf("title = %v", a.body["title"])
	}
	a = call(t, mux, "GET", "/api/invitations", "down", "")
	wantProblem(t, a, http.StatusServiceUnavailable, "unavailable")
	if a.header.Get("Retry-After") != "5" {
		t.Errorf("Retry-After = %q", a.header.Get("Retry-After"))
	}
	a = call(t, mux, "POST", "/api/invitations", "read", `{"email":"a@example.com"}`)
	wantProblem(t, a, http.StatusForbidden, "insufficient-scope")
	if !strings.Contains(a.header.Get("WWW-Authenticate"), `scope="invitations:write"`) {
		t.Errorf("WWW-Authenticate = %q", a.header.Get("WWW-Authenticate"))
	}
	wantProblem(t, call(t, mux, "GET", "/api/nothing-here", "write", ""), http.StatusNotFound, "not-found")
}

func TestAPIRateLimitAnswersItself(t *testing.T) {
	h, _ := testAPI(t)
	var keys []string
	h.RateLimit = func(w http.ResponseWriter, _ *http.Request, key string) bool {
		keys = append(keys, key)
		WriteProblem(w, http.StatusTooManyRequests, "rate-limited", "Too many requests", "")
		return false
	}
	wantProblem(t, call(t, mounted(h), "GET", "/api/invitations", "read", ""), http.StatusTooManyRequests, "rate-limited")
	if len(keys) != 1 || keys[0] != "client:reporter" {
		t.Errorf("limited keys = %q", keys)
	}
}

// A limit Authenticate took (with its revocation check) decides the
// request: refused, 429 with Retry-After through TooMany (or the problem
// itself without one); allowed, on to the handler; RateLimit is never asked
// to take a second one.
func TestAPILimitTakenByAuthenticate(t *testing.T) {
	for _, tc := range []struct {
		name       string
		limit      *LimitOutcome
		tooMany    bool
		wantStatus int
		wantAfter  string
	}{
		{"refused, TooMany answers", &LimitOutcome{Allowed: false, RetryAfter: 1500 * time.Millisecond}, true, http.StatusTooManyRequests, "2"},
		{"refused, no TooMany", &LimitOutcome{Allowed: false, RetryAfter: 0}, false, http.StatusTooManyRequests, "1"},
		{"allowed", &LimitOutcome{Allowed: true}, true, http.StatusOK, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := testAPI(t)
			authenticate := h.Authenticate
			h.Authenticate = func(ctx context.Context, token string) (Caller, error) {
				c, err := authenticate(ctx, token)
				c.Limit = tc.limit
				return c, err
			}
			h.RateLimit = func(http.ResponseWriter, *http.Request, string) bool {
				t.Error("RateLimit took a second request")
				return true
			}
			var answered []time.Duration
			if tc.tooMany {
				h.TooMany = func(w http.ResponseWriter, _ *http.Request, d time.Duration) {
					answered = append(answered, d)
					WriteTooMany(w, d)
				}
			}
			a := call(t, mounted(h), "GET", "/api/invitations", "read", "")
			if a.status != tc.wantStatus || a.header.Get("Retry-After") != tc.wantAfter {
				t.Fatalf("status %d Retry-After %q, want %d %q", a.status, a.header.Get("Retry-After"), tc.wantStatus, tc.wantAfter)
			}
			if tc.wantStatus == http.StatusTooManyRequests {
				wantProblem(t, a, http.StatusTooManyRequests, "rate-limited")
				if tc.tooMany && len(answered) != 1 {
					t.Errorf("TooMany called %d times", len(answered))
				}
			}
		})
	}
}

func TestAPICreateGetRevoke(t *testing.T) {
	h, store := testAPI(t)
	mux := mounted(h)
	a := call(t, mux, "POST", "/api/invitations", "write", `{"email":"new@example.com","roles":["editor"],"send_email":false}`)
	if a.status != http.StatusCreated {
		t.Fatalf("create: %d %v", a.status, a.body)
	}
	id, _ := a.body["id"].(string)
	if url, _ := a.body["url"].(string); !strings.HasPrefix(url, "https://usher.example.com/invite/inv_") {
		t.Errorf("url = %q", url)
	}
	if a.body["status"] != "pending" || a.body["link"] != "invite" || a.body["inviter"] != nil {
		t.Errorf("created: %v", a.body)
	}
	if inv := testkit.Invitation(t, store, id); inv.Email != "new@example.com" || len(inv.Outbox) == 0 {
		t.Errorf("stored: %+v", inv)
	}

	a = call(t, mux, "GET", "/api/invitations/"+id, "read", "")
	if a.status != http.StatusOK || a.body["url"] != nil || a.body["id"] != id {
		t.Fatalf("get: %d %v", a.status, a.body)
	}
	a = call(t, mux, "DELETE", "/api/invitations/"+id, "write", "")
	if a.status != http.StatusOK || a.body["status"] != "revoked" {
		t.Fatalf("revoke: %d %v", a.status, a.body)
	}
	if a := call(t, mux, "DELETE", "/api/invitations/"+id, "write", ""); a.status != http.StatusOK || a.body["status"] != "revoked" {
		t.Errorf("revoke again: %d %v", a.status, a.body) // idempotent
	}
	wantProblem(t, call(t, mux, "POST", "/api/invitations/"+id+"/resend", "write", ""), http.StatusConflict, "revoked")
	wantProblem(t, call(t, mux, "GET", "/api/invitations/inv-nope", "read", ""), http.StatusNotFound, "not-found")
}

func TestAPICreateRefusals(t *testing.T) {
	h, _ := testAPI(t)
	mux := mounted(h)
	a := call(t, mux, "POST", "/api/invitations", "write", `{"email":"a@example.com","colour":"red"}`)
	wantProblem(t, a, http.StatusBadRequest, "invalid-json")
	if a.body["detail"] != `Unknown field "colour"; see the API reference for the accepted fields.` {
		t.Errorf("detail = %v", a.body["detail"])
	}
	a = call(t, mux, "POST", "/api/invitations", "write", `{"email":"not-an-email"}`)
	wantProblem(t, a, http.StatusBadRequest, "invalid-invitation")
	if errs, _ := a.body["errors"].([]any); len(errs) == 0 {
		t.Errorf("no field errors: %v", a.body)
	}
}

func TestAPIIdempotencyKeyReplays(t *testing.T) {
	h, _ := testAPI(t)
	mux := mounted(h)
	body := `{"email":"idem@example.com","send_email":false}`
	first := call(t, mux, "POST", "/api/invitations", "write", body, "Idempotency-Key", "k1")
	again := call(t, mux, "POST", "/api/invitations", "write", body, "Idempotency-Key", "k1")
	if first.status != http.StatusCreated || again.status != http.StatusCreated || again.header.Get("Idempotent-Replayed") != "true" ||
		again.body["id"] != first.body["id"] || again.body["url"] != first.body["url"] {
		t.Fatalf("first %d %v, replay %d %v", first.status, first.body, again.status, again.body)
	}
	wantProblem(t, call(t, mux, "POST", "/api/invitations", "write", `{"email":"other@example.com"}`, "Idempotency-Key", "k1"),
		http.StatusConflict, "idempotency-mismatch")
	// Another client's key of the same name is its own.
	h.Authenticate = func(context.Context, string) (Caller, error) {
		return Caller{ClientID: "other", Subject: "other", Scopes: []string{scopeWrite}}, nil
	}
	if a := call(t, mux, "POST", "/api/invitations", "write", body, "Idempotency-Key", "k1"); a.status != http.StatusOK && a.status != http.StatusCreated ||
		a.header.Get("Idempotent-Replayed") != "" {
		t.Errorf("other client: %d %v %v", a.status, a.header, a.body)
	}
}

func TestAPIListAndCursor(t *testing.T) {
	h, _ := testAPI(t)
	mux := mounted(h)
	for _, e := range []string{"l1@example.com", "l2@example.com", "l3@example.com"} {
		if a := call(t, mux, "POST", "/api/invitations", "write", `{"email":"`+e+`","send_email":false}`); a.status != http.StatusCreated {
			t.Fatalf("create %s: %d %v", e, a.status, a.body)
		}
	}
	a := call(t, mux, "GET", "/api/invitations?limit=2", "read", "")
	list, _ := a.body["invitations"].([]any)
	next, _ := a.body["next_cursor"].(string)
	if a.status != http.StatusOK || len(list) != 2 || next == "" {
		t.Fatalf("page 1: %d %v", a.status, a.body)
	}
	a = call(t, mux, "GET", "/api/invitations?limit=2&cursor="+next, "read", "")
	if list, _ := a.body["invitations"].([]any); a.status != http.StatusOK || len(list) != 1 || a.body["next_cursor"] != nil {
		t.Fatalf("page 2: %d %v", a.status, a.body)
	}
	wantProblem(t, call(t, mux, "GET", "/api/invitations?cursor=garbage", "read", ""), http.StatusBadRequest, "invalid-query")
	wantProblem(t, call(t, mux, "GET", "/api/invitations?limit=0", "read", ""), http.StatusBadRequest, "invalid-query")
	wantProblem(t, call(t, mux, "GET", "/api/invitations?status=lost", "read", ""), http.StatusBadRequest, "invalid-query")
	wantProblem(t, call(t, mux, "GET", "/api/audit?since=yesterday", "read", ""), http.StatusBadRequest, "invalid-query")
}

func TestAPIGrantChangesRecordTheirEvents(t *testing.T) {
	h, store := testAPI(t)
	ctx := t.Context()
	if _, _, err := store.ResolveIdentity(ctx, grants.Identity{Issuer: "https://idp.example.com/", Subject: "s1"},
		grants.Profile{Email: "u1@example.com", EmailVerified: true}, "u1", h.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := store.SetGrantClaim(ctx, "u1", "plan", "pro", h.Now()); err != nil {
		t.Fatal(err)
	}
	h.Invitations = grants.NewService(grants.ServiceOptions{Store: store, Now: h.Now,
		UpstreamSubjects: func(context.Context, string) ([]string, error) { return []string{"auth0|u1"}, nil }})
	mux := mounted(h)
	a := call(t, mux, "PUT", "/api/users/u1/grants/claims/tier", "write", `{"value":"gold"}`)
	if claims, _ := a.body["claims"].(map[string]any); a.status != http.StatusOK || claims["tier"] != "gold" || claims["plan"] != "pro" {
		t.Fatalf("set: %d %v", a.status, a.body)
	}
	a = call(t, mux, "DELETE", "/api/users/u1/grants/claims/plan", "write", "")
	if claims, _ := a.body["claims"].(map[string]any); a.status != http.StatusOK || claims["plan"] != nil {
		t.Fatalf("remove: %d %v", a.status, a.body)
	}
	// Both changes are recorded with the grant, for the outbox's consumers
	// (audit, webhooks, the Auth0 mirror): nothing is sent from here.
	g, err := store.GetGrant(ctx, "u1")
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Outbox) != 2 {
		t.Fatalf("recorded %d events, want 2: %+v", len(g.Outbox), g.Outbox)
	}
	set, removed := g.Outbox[0], g.Outbox[1]
	if set.Type != grants.EventGrantChanged || set.Actor != "client:funnel" || set.UserID != "u1" || set.Detail["set_claim"] != "tier" || len(set.UpstreamUsers) != 0 {
		t.Errorf("set event: %+v", set)
	}
	if removed.Detail["removed_claim"] != "plan" || removed.Detail["reason"] != "claim_removed" || len(removed.UpstreamUsers) != 1 || removed.UpstreamUsers[0] != "auth0|u1" {
		t.Errorf("remove event: %+v", removed)
	}
	wantProblem(t, call(t, mux, "GET", "/api/users/nobody/grants", "read", ""), http.StatusNotFound, "not-found")
	wantProblem(t, call(t, mux, "GET", "/api/users?cursor=not-ours", "read", ""), http.StatusBadRequest, "invalid-query")
	a = call(t, mux, "GET", "/api/users?email=u1@example.com", "read", "")
	if users, _ := a.body["users"].([]any); a.status != http.StatusOK || len(users) != 1 {
		t.Errorf("find: %d %v", a.status, a.body)
	}
}
