package devidp

// The Auth0 Management API subset that usher's mirror calls, answering as
// Auth0 documents it so that github.com/auth0/go-auth0/management talks to
// devidp over plain http on loopback exactly as to a tenant:
//
//	POST   /oauth/token  grant_type=client_credentials, audience=<issuer>api/v2/
//	       (a configured ManagementClients entry; client_secret_basic or _post)
//	GET    /api/v2/users-by-email?email=      case-sensitive (as Auth0), every connection
//	GET    /api/v2/users/{id}
//	GET    /api/v2/users?q=identities.user_id:"…"&search_engine=v3   (that query only)
//	POST   /api/v2/users/{id}/identities      {"provider","user_id"}: link (management_linking.go)
//	PATCH  /api/v2/users/{id}                 app_metadata / user_metadata merge, name;
//	                                          no "." nor leading "$" in field names (400)
//	GET    /api/v2/roles?name_filter=&page=&per_page=&include_totals=
//	POST   /api/v2/roles                      {"name","description"}
//	GET    /api/v2/users/{id}/roles?page=&per_page=&include_totals=
//	POST   /api/v2/users/{id}/roles           {"roles":[role IDs]}
//	DELETE /api/v2/users/{id}/roles           {"roles":[role IDs]}
//	POST   /api/v2/jobs/verification-email    {"user_id"}: a new verification mail (verify.go)
//
// Every /api/v2 call needs a bearer token from the client-credentials grant
// above (401 otherwise). Errors have Auth0's shape:
// {"statusCode":…, "error":…, "message":…, "errorCode":…}.

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	// managementTokenLifetime is Auth0's default for a Management API token.
	managementTokenLifetime = 24 * time.Hour
	// rateLimitLimit is the X-RateLimit-Limit devidp advertises.
	rateLimitLimit = 50
	// maxManagementCalls bounds the call log of a long-running `usher dev`.
	maxManagementCalls = 1000
	maxManagementBody  = 1 << 20
)

// ManagementCall is one request to the Management API (or to /oauth/token
// for a Management API token) as devidp saw it, for test assertions.
type ManagementCall struct {
	At     time.Time
	Method string
	Path   string // as sent (escaped), e.g. "/api/v2/users/auth0%7C…/roles"
	Status int
	// RetryAfter is what a 429 answer told the client to wait.
	RetryAfter time.Duration
}

type mgmtRole struct {
	id, name, description string
}

type mgmtToken struct {
	clientID string
	expires  time.Time
}

// management is the Management API state. It has its own mutex; it reads
// users from the OIDC store (under the store's mutex) but never holds both.
type management struct {
	mu           sync.Mutex
	clients      map[string]string          // client ID → secret
	scopes       map[string]map[string]bool // client ID → granted scopes
	tokens       map[string]mgmtToken
	roles        map[string]*mgmtRole // by ID
	roleOrder    []string             // role IDs in creation order
	userRoles    map[string]map[string]bool
	appMetadata  map[string]map[string]any
	userMetadata map[string]map[string]any
	created      map[string]time.Time     // first time the API saw the user
	linkedTo     map[string]string        // secondary sub → primary sub (management_linking.go)
	linkedIDs    map[string][]apiIdentity // primary sub → its linked identities, in link order
	updated      map[string]time.Time
	limitLeft    int
	retryAfter   time.Duration
	budget       *tokenBucket // nil: no budget enforced
	down         bool
	calls        []ManagementCall
}

func newManagement(clients []Client) (*management, error) {
	m := &management{
		clients:      make(map[string]string, len(clients)),
		scopes:       make(map[string]map[string]bool, len(clients)),
		tokens:       make(map[string]mgmtToken),
		roles:        make(map[string]*mgmtRole),
		userRoles:    make(map[string]map[string]bool),
		appMetadata:  make(map[string]map[string]any),
		userMetadata: make(map[string]map[string]any),
		created:      make(map[string]time.Time),
		linkedTo:     make(map[string]string),
		linkedIDs:    make(map[string][]apiIdentity),
		updated:      make(map[string]time.Time),
	}
	for i, c := range clients {
		switch {
		case c.ID == "":
			return nil, fmt.Errorf("devidp: ManagementClients[%d].ID is empty", i)
		case c.Secret == "":
			return nil, fmt.Errorf("devidp: ManagementClients[%d].Secret is empty", i)
		}
		if _, dup := m.clients[c.ID]; dup {
			return nil, fmt.Errorf("devidp: ManagementClients[%d].ID %q is a duplicate", i, c.ID)
		}
		m.clients[c.ID] = c.Secret
		m.scopes[c.ID] = grantedScopes(c)
	}
	return m, nil
}

// --- test knobs and assertions ---

// ManagementRateLimit makes the next n Management API calls (/api/v2/…)
// answer 429 Too Many Requests with Retry-After (whole seconds, rounded up)
// and X-RateLimit-Limit/-Remaining/-Reset headers, as Auth0 does. n <= 0
// lifts a pending limit.
func (s *Server) ManagementRateLimit(n int, retryAfter time.Duration) {
	s.mgmt.mu.Lock()
	s.mgmt.limitLeft, s.mgmt.retryAfter = max(n, 0), max(retryAfter, 0)
	s.mgmt.mu.Unlock()
}

// ManagementBudget makes the Management API (/api/v2/…) enforce a tenant's
// budget, as Auth0 does (a Free or non-production tenant: about 2 calls a
// second, small bursts): a token bucket of burst calls refilled at
// perSecond. Every answer then carries X-RateLimit-Limit (burst),
// X-RateLimit-Remaining (calls left after this one) and X-RateLimit-Reset
// (epoch seconds, rounded up, when the bucket is full again); a call with
// the bucket empty answers 429 with Retry-After (whole seconds, rounded up,
// until the next call is allowed) as well. perSecond <= 0 lifts the budget.
// ManagementRateLimit's forced 429s come first.
func (s *Server) ManagementBudget(perSecond float64, burst int) {
	s.mgmt.mu.Lock()
	defer s.mgmt.mu.Unlock()
	if perSecond <= 0 {
		s.mgmt.budget = nil
		return
	}
	burst = max(burst, 1)
	s.mgmt.budget = &tokenBucket{perSecond: perSecond, burst: burst, tokens: float64(burst), at: time.Now()}
}

// tokenBucket is ManagementBudget's bucket.
type tokenBucket struct {
	perSecond float64
	burst     int
	tokens    float64
	at        time.Time
}

// take refills the bucket up to now and takes one call if it can; it
// returns the calls left, when the bucket is full again, and (refused) how
// long until one call is allowed.
func (b *tokenBucket) take(now time.Time) (ok bool, remaining int, full time.Time, wait time.Duration) {
	if now.After(b.at) {
		b.tokens = min(float64(b.burst), b.tokens+now.Sub(b.at).Seconds()*b.perSecond)
		b.at = now
	}
	if b.tokens >= 1 {
		b.tokens--
		ok = true
	} else {
		wait = time.Duration((1 - b.tokens) / b.perSecond * float64(time.Second))
	}
	full = now.Add(time.Duration((float64(b.burst) - b.tokens) / b.perSecond * float64(time.Second)))
	return ok, int(math.Floor(b.tokens)), full, wait
}

// ManagementDown makes every Management API call, and every request for a
// Management API token, answer 503 until ManagementDown(false).
func (s *Server) ManagementDown(down bool) {
	s.mgmt.mu.Lock()
	s.mgmt.down = down
	s.mgmt.mu.Unlock()
}

// ManagementCalls returns the calls seen so far, oldest first (the last
// 1000 at most).
func (s *Server) ManagementCalls() []ManagementCall {
	s.mgmt.mu.Lock()
	defer s.mgmt.mu.Unlock()
	return slices.Clone(s.mgmt.calls)
}

// CreateRole creates a role, as POST /api/v2/roles would, and returns its ID
// ("rol_" + 16 characters). A role name that exists is an error.
func (s *Server) CreateRole(name, description string) (string, error) {
	r, err := s.mgmt.createRole(name, description)
	if err != nil {
		return "", fmt.Errorf("devidp: create role %q: %w", name, err)
	}
	return r.id, nil
}

// AppMetadata returns a copy of a user's app_metadata (nil when it has none).
func (s *Server) AppMetadata(userID string) map[string]any {
	s.mgmt.mu.Lock()
	defer s.mgmt.mu.Unlock()
	return deepCopy(s.mgmt.appMetadata[userID])
}

// PatchAppMetadata applies patch to a user's app_metadata with the merge
// semantics of PATCH /api/v2/users/{id}: top-level keys are merged, a key
// set to nil is deleted, nested objects are replaced, an empty patch clears
// everything; field names Auth0 refuses are refused.
func (s *Server) PatchAppMetadata(userID string, patch map[string]any) error {
	if _, ok := s.store.user(userID); !ok {
		return fmt.Errorf("devidp: unknown user %q", userID)
	}
	if msg := metadataNameError("app_metadata", deepCopy(patch)); msg != "" {
		return fmt.Errorf("devidp: %s", msg)
	}
	s.mgmt.mu.Lock()
	defer s.mgmt.mu.Unlock()
	s.mgmt.seenLocked(userID, time.Now())
	s.mgmt.appMetadata[userID] = mergeMetadata(s.mgmt.appMetadata[userID], deepCopy(patch))
	s.mgmt.updated[userID] = time.Now()
	return nil
}

// AssignRole gives a user a role by name, creating the role if needed, as
// a tenant administrator does in the Auth0 dashboard (outside usher).
func (s *Server) AssignRole(userID, name string) error {
	s.mgmt.mu.Lock()
	var id string
	for rid, r := range s.mgmt.roles {
		if r.name == name {
			id = rid
		}
	}
	s.mgmt.mu.Unlock()
	if id == "" {
		var err error
		if id, err = s.CreateRole(name, "assigned by an administrator"); err != nil {
			return err
		}
	}
	s.mgmt.mu.Lock()
	defer s.mgmt.mu.Unlock()
	set := s.mgmt.userRoles[userID]
	if set == nil {
		set = make(map[string]bool)
		s.mgmt.userRoles[userID] = set
	}
	set[id] = true
	return nil
}

// UserRoles returns the names of the roles assigned to a user, sorted.
func (s *Server) UserRoles(userID string) []string {
	s.mgmt.mu.Lock()
	defer s.mgmt.mu.Unlock()
	var names []string
	for id := range s.mgmt.userRoles[userID] {
		if r, ok := s.mgmt.roles[id]; ok {
			names = append(names, r.name)
		}
	}
	slices.Sort(names)
	return names
}

// --- /api/v2 ---

// managementRoutes maps each /api/v2 endpoint to its handler, behind the
// scopes it accepts (management_scopes.go; PATCH decides from its body).
func (s *Server) managementRoutes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v2/users-by-email", needs(s.apiUsersByEmail, "read:users"))
	mux.HandleFunc("GET /api/v2/users/{id}", needs(s.apiGetUser, "read:users"))
	mux.HandleFunc("GET /api/v2/users", needs(s.apiSearchUsers, "read:users"))
	mux.HandleFunc("POST /api/v2/users/{id}/identities", needs(s.apiLinkUser, "update:users"))
	mux.HandleFunc("PATCH /api/v2/users/{id}", s.apiPatchUser)
	mux.HandleFunc("GET /api/v2/users/{id}/roles", needs(needs(s.apiUserRoles, "read:users"), "read:roles"))
	mux.HandleFunc("POST /api/v2/users/{id}/roles", needs(s.apiAssignRoles, "create:role_members"))
	mux.HandleFunc("DELETE /api/v2/users/{id}/roles", needs(s.apiRemoveRoles, "delete:role_members"))
	mux.HandleFunc("GET /api/v2/roles", needs(s.apiListRoles, "read:roles"))
	mux.HandleFunc("POST /api/v2/roles", needs(s.apiCreateRole, "create:roles"))
	mux.HandleFunc("POST /api/v2/jobs/verification-email", needs(s.apiVerificationEmail, "update:users"))
	mux.HandleFunc("/api/v2/", func(w http.ResponseWriter, r *http.Request) {
		writeAPIError(w, http.StatusNotFound, "Not Found", "")
	})
	return mux
}

// managementAPI serves /api/v2/: down → 503, no valid bearer token → 401,
// rate limited → 429, then the route.
func (s *Server) managementAPI() http.Handler {
	mux := s.managementRoutes()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w}
		var retryAfter time.Duration
		defer func() { s.mgmt.record(r, rec.status, retryAfter) }()
		w = rec
		now := time.Now()

		s.mgmt.mu.Lock()
		down := s.mgmt.down
		s.mgmt.mu.Unlock()
		if down {
			writeAPIError(w, http.StatusServiceUnavailable, "devidp: the Management API is down (ManagementDown)", "")
			return
		}
		scopes, msg := s.mgmt.checkBearer(r, now)
		if msg != "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+s.issuer+`api/v2/"`)
			writeAPIError(w, http.StatusUnauthorized, msg, "")
			return
		}
		r = withScopes(r, scopes)
		s.mgmt.mu.Lock()
		limited := s.mgmt.limitLeft > 0
		limit, remaining, reset := rateLimitLimit, rateLimitLimit-1, now.Add(time.Second)
		if limited {
			s.mgmt.limitLeft--
			retryAfter = s.mgmt.retryAfter
			remaining, reset = 0, now.Add(retryAfter)
		} else if b := s.mgmt.budget; b != nil {
			var ok bool
			ok, remaining, reset, retryAfter = b.take(now)
			limit, limited = b.burst, !ok
		}
		s.mgmt.mu.Unlock()
		h := w.Header()
		h.Set("X-RateLimit-Limit", strconv.Itoa(limit))
		h.Set("X-RateLimit-Remaining", strconv.Itoa(remaining))
		// Whole epoch seconds, never earlier than the instant they stand
		// for (nor than Retry-After): a client honouring it waits long enough.
		h.Set("X-RateLimit-Reset", strconv.FormatInt(ceilUnix(reset), 10))
		if limited {
			secs := int64(math.Ceil(retryAfter.Seconds()))
			retryAfter = time.Duration(secs) * time.Second
			if ceilUnix(now.Add(retryAfter)) > ceilUnix(reset) {
				h.Set("X-RateLimit-Reset", strconv.FormatInt(ceilUnix(now.Add(retryAfter)), 10))
			}
			h.Set("Retry-After", strconv.FormatInt(secs, 10))
			writeAPIError(w, http.StatusTooManyRequests, "Global limit has been reached", "too_many_requests")
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// ceilUnix is t in epoch seconds, rounded up.
func ceilUnix(t time.Time) int64 {
	if t.Nanosecond() != 0 {
		return t.Unix() + 1
	}
	return t.Unix()
}

// checkBearer returns a live Management API token's scopes, or Auth0's
// message for why it is refused.
func (m *management) checkBearer(r *http.Request, now time.Time) (map[string]bool, string) {
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return nil, "Missing authentication"
	}
	scheme, token, ok := strings.Cut(auth, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return nil, "Bad HTTP authentication header format"
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.tokens[token]
	if !ok {
		return nil, "Invalid token"
	}
	if now.After(t.expires) {
		return nil, "Expired token received for JSON Web Token validation"
	}
	return m.scopes[t.clientID], ""
}

func (m *management) record(r *http.Request, status int, retryAfter time.Duration) {
	if status == 0 {
		status = http.StatusOK
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.calls) >= maxManagementCalls {
		m.calls = slices.Delete(m.calls, 0, len(m.calls)-maxManagementCalls+1)
	}
	m.calls = append(m.calls, ManagementCall{
		At: time.Now(), Method: r.Method, Path: r.URL.EscapedPath(), Status: status, RetryAfter: retryAfter,
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(status int) {
	if s.status == 0 {
		s.status = status
	}
	s.ResponseWriter.WriteHeader(status)
}

func (s *statusRecorder) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(p)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// writeAPIError answers with Auth0's Management API error body.
func writeAPIError(w http.ResponseWriter, status int, message, errorCode string) {
	body := map[string]any{"statusCode": status, "error": http.StatusText(status), "message": message}
	if errorCode != "" {
		body["errorCode"] = errorCode
	}
	if status == http.StatusUnauthorized {
		body["attributes"] = map[string]string{"error": message}
	}
	writeJSON(w, status, body)
}
