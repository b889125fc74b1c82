package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/usher-oidc/usher/grants"
	storeerrs "github.com/usher-oidc/usher/store/errs"
)

// The admin API: JSON in and out, errors as RFC 9457 problem details. Callers
// authenticate with an access token usher issued (client_credentials) that
// carries the scope the operation needs.
const (
	scopeWrite = "invitations:write"
	scopeRead  = "invitations:read"
	maxAPIBody = 64 << 10
	idemKeyTTL = 24 * time.Hour
)

// Errors Authenticate returns for a token the admin API refuses; any other
// error means the token could not be checked (the store is unreachable).
var (
	// ErrInvalidToken: not a valid usher access token (bad signature,
	// expired, revoked).
	ErrInvalidToken = errors.New("invalid access token")
	// ErrNotAPIToken: a valid usher access token that the admin API does
	// not take (not a client_credentials token for {issuer}/api).
	ErrNotAPIToken = errors.New("not a client_credentials token for the admin API")
)

// API is the admin JSON API (/api/...). Its fields are everything it uses;
// Invitations, Store, Authenticate, Link, Sealer and Now are required.
type API struct {
	// Invitations changes invitations; each use case records its events in
	// the same write (the outbox delivers audit, webhooks, mail, mirror).
	Invitations Invitations
	// Store is what the API reads, and the grant and idempotency writes.
	Store APIStore
	// Authenticate checks a bearer token: the caller it names, or
	// ErrInvalidToken, ErrNotAPIToken, or another error when it could not
	// be checked.
	Authenticate func(ctx context.Context, token string) (Caller, error)
	// RateLimit takes one request of key (ClientLimitKey); when it answers
	// false it has answered the request itself (429). Nil: no limit. It is
	// not called for a Caller whose Limit Authenticate already took.
	RateLimit func(w http.ResponseWriter, r *http.Request, key string) bool
	// TooMany answers a request Caller.Limit refused (429 with
	// Retry-After); nil writes the problem without counting it.
	TooMany func(w http.ResponseWriter, r *http.Request, retryAfter time.Duration)
	// Link is an invitation's link with a freshly minted token.
	Link func(inv *grants.Invitation, token string) string
	// ClaimsNamespace prefixes invitation claims in tokens ("" = none).
	ClaimsNamespace string
	// Webhooks, when set, serves the delivery log and redelivery.
	Webhooks WebhookAdmin
	// Backup, when set, writes a consistent snapshot of the store to w and
	// returns how many bytes it wrote (boltstore.Store.Backup); nil (Redis)
	// answers GET /api/store/backup with 501.
	Backup func(w io.Writer) (int64, error)
	// Sealer seals the responses an Idempotency-Key replays (they may hold
	// an invitation link).
	Sealer  Sealer
	Metrics Metrics
	Logger  *slog.Logger
	Now     func() time.Time
}

// Invitations is the part of grants.Service the admin API and page use.
type Invitations interface {
	Create(ctx context.Context, req grants.CreateRequest, actor string) (inv *grants.Invitation, token string, existed bool, err error)
	Revoke(ctx context.Context, id, actor string) (*grants.Invitation, error)
	Resend(ctx context.Context, id, actor string) (*grants.Invitation, string, error)
	ChangeGrant(ctx context.Context, userID string, c grants.GrantChange, actor string) (*grants.Grant, error)
	SignOutEverywhere(ctx context.Context, userID, actor string) (*grants.Grant, error)
	EraseUser(ctx context.Context, userID, actor string) error
}

var _ Invitations = (*grants.Service)(nil)

// APIStore is what the admin API needs of grants.Store.
type APIStore interface {
	GetInvitation(ctx context.Context, id string) (*grants.Invitation, error)
	ListInvitations(ctx context.Context, f grants.InvitationFilter, now time.Time) ([]grants.Invitation, string, error)
	ListAudit(ctx context.Context, f grants.AuditFilter) ([]grants.AuditRecord, string, error)
	UsersByEmail(ctx context.Context, email string) ([]grants.User, error)
	ListUsers(ctx context.Context, f grants.UserFilter) ([]grants.User, string, error)
	GetUser(ctx context.Context, id string) (*grants.User, error)
	GetGrant(ctx context.Context, userID string) (*grants.Grant, error)
	ReserveIdempotencyKey(ctx context.Context, rec *grants.IdempotencyRecord) (*grants.IdempotencyRecord, error)
	CompleteIdempotencyKey(ctx context.Context, key string, status int, response json.RawMessage) error
	ReleaseIdempotencyKey(ctx context.Context, key string) error
	AppendAudit(ctx context.Context, rec *grants.AuditRecord) error
}

var _ APIStore = grants.Store(nil)

// Sealer encrypts and authenticates values (securecookie.Codec).
type Sealer interface {
	Encode(name string, value any) (string, error)
	Decode(name, value string, dst any) error
}

// Metrics are the series the admin handlers count into (nil: not counted).
type Metrics struct {
	// InvitationsCreated is usher_invitations_created_total.
	InvitationsCreated prometheus.Counter
	// StoreErrors is usher_store_errors_total, by what was being done.
	StoreErrors *prometheus.CounterVec
}

func (m Metrics) invitationCreated() {
	if m.InvitationsCreated != nil {
		m.InvitationsCreated.Inc()
	}
}

func (m Metrics) storeError(what string) {
	if m.StoreErrors != nil {
		m.StoreErrors.WithLabelValues(what).Inc()
	}
}

// Caller is who called the admin API: the client of a client_credentials
// access token usher issued.
type Caller struct {
	ClientID string
	Subject  string
	Scopes   []string
	// Limit is set by an Authenticate that took the caller's request of
	// the API rate limit (ClientLimitKey) itself, in the same store round
	// trip as the token's revocation check; nil leaves it to RateLimit.
	Limit *LimitOutcome
}

// LimitOutcome is one rate-limit decision: a refused request may come
// back after RetryAfter.
type LimitOutcome struct {
	Allowed    bool
	RetryAfter time.Duration
}

// ClientLimitKey is the API rate limit's key for a client.
func ClientLimitKey(clientID string) string { return "client:" + clientID }

type apiHandler func(w http.ResponseWriter, r *http.Request, c Caller)

// actor names the Caller in the audit log.
func (c Caller) actor() string {
	if c.ClientID != "" {
		return "client:" + c.ClientID
	}
	return c.Subject
}

func (h *API) apiAudit(w http.ResponseWriter, r *http.Request, _ Caller) {
	q := r.URL.Query()
	f := grants.AuditFilter{Action: q.Get("action"), Actor: q.Get("actor"), Target: q.Get("target"), Cursor: q.Get("cursor")}
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		if v := q.Get(p.name); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				writeProblem(w, http.StatusBadRequest, "invalid-query", "Invalid "+p.name, p.name+" must be an RFC 3339 time, e.g. 2026-11-26T12:00:00Z.",
					grants.FieldError{Field: p.name, Message: "not an RFC 3339 time"})
				return
			}
			*p.dst = t
		}
	}
	var ok bool
	if f.Limit, ok = queryLimit(w, q, 50); !ok {
		return
	}
	recs, next, err := h.Store.ListAudit(r.Context(), f)
	if err != nil {
		if errors.Is(err, storeerrs.ErrBadCursor) {
			writeProblem(w, http.StatusBadRequest, "invalid-query", "Invalid cursor", "cursor must be a value returned as next_cursor.",
				grants.FieldError{Field: "cursor", Message: "not a cursor usher issued"})
			return
		}
		h.storeProblem(w, r, "reading the audit log", err)
		return
	}
	if recs == nil {
		recs = []grants.AuditRecord{}
	}
	writeJSON(w, http.StatusOK, struct {
		Records    []grants.AuditRecord `json:"records"`
		NextCursor string               `json:"next_cursor,omitempty"`
	}{recs, next})
}

// api checks the bearer token and its scope before h runs.
func (h *API) api(scope string, next apiHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		token, ok := strings.CutPrefix(auth, "Bearer ")
		if !ok || token == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="usher"`)
			writeProblem(w, http.StatusUnauthorized, "unauthorized", "Authentication required",
				"Send an access token from usher's token endpoint (client_credentials grant) as 'Authorization: Bearer <token>'.")
			return
		}
		c, err := h.Authenticate(r.Context(), token)
		switch {
		case errors.Is(err, ErrInvalidToken):
			w.Header().Set("WWW-Authenticate", `Bearer realm="usher", error="invalid_token"`)
			writeProblem(w, http.StatusUnauthorized, "invalid-token", "Invalid access token",
				"The access token is invalid, expired or revoked; request a new one.")
			return
		case errors.Is(err, ErrNotAPIToken):
			w.Header().Set("WWW-Authenticate", `Bearer realm="usher", error="invalid_token"`)
			writeProblem(w, http.StatusUnauthorized, "invalid-token", "Not an admin API token",
				"The admin API takes only access tokens from the client_credentials grant; a token issued to a person is never accepted.")
			return
		case err != nil:
			// The token may be fine: the revocation check could not be made.
			h.storeProblem(w, r, "checking the access token", err)
			return
		}
		if !h.limit(w, r, c) {
			return
		}
		if !slices.Contains(c.Scopes, scope) {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="usher", error="insufficient_scope", scope=%q`, scope))
			writeProblem(w, http.StatusForbidden, "insufficient-scope", "Insufficient scope",
				fmt.Sprintf("This operation needs the scope %q; ask for it in the token request (the client must be allowed it in usher's config).", scope))
			return
		}
		next(w, r, c)
	})
}

// limit takes c's request of the API rate limit, unless Authenticate did;
// refused, it has answered the request (429).
func (h *API) limit(w http.ResponseWriter, r *http.Request, c Caller) bool {
	switch {
	case c.Limit == nil:
		return h.RateLimit == nil || h.RateLimit(w, r, ClientLimitKey(c.ClientID))
	case c.Limit.Allowed:
		return true
	case h.TooMany != nil:
		h.TooMany(w, r, c.Limit.RetryAfter)
	default:
		WriteTooMany(w, c.Limit.RetryAfter)
	}
	return false
}

// Mount registers the admin API's routes (see the package documentation).
func (h *API) Mount(mux *http.ServeMux) {
	mux.Handle("POST /api/invitations", h.api(scopeWrite, h.apiCreateInvitation))
	mux.Handle("GET /api/invitations", h.api(scopeRead, h.apiListInvitations))
	mux.Handle("GET /api/invitations/{id}", h.api(scopeRead, h.apiGetInvitation))
	mux.Handle("DELETE /api/invitations/{id}", h.api(scopeWrite, h.apiRevokeInvitation))
	mux.Handle("POST /api/invitations/{id}/resend", h.api(scopeWrite, h.apiResendInvitation))
	mux.Handle("GET /api/users", h.api(scopeRead, h.apiUsers))
	mux.Handle("POST /api/users/{id}/sign-out", h.api(scopeWrite, h.apiSignOutUser))
	mux.Handle("DELETE /api/users/{id}", h.api(scopeWrite, h.apiEraseUser))
	mux.Handle("GET /api/audit", h.api(scopeRead, h.apiAudit))
	if h.Webhooks != nil {
		h.webhookRoutes(mux, h.Webhooks)
	}
	mux.Handle("GET /api/users/{id}/grants", h.api(scopeRead, h.apiGetGrant))
	mux.Handle("DELETE /api/users/{id}/grants/roles/{role}", h.api(scopeWrite, h.apiRemoveRole))
	mux.Handle("DELETE /api/users/{id}/grants/claims/{key}", h.api(scopeWrite, h.apiRemoveClaim))
	mux.Handle("PUT /api/users/{id}/grants/claims/{key}", h.api(scopeWrite, h.apiSetClaim))
	mux.Handle("GET /api/store/backup", h.api(scopeStoreBackup, h.apiStoreBackup))
	mux.HandleFunc("GET /api/openapi.json", serveOpenAPI) // every route above is described there
	mux.Handle("/api/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, http.StatusNotFound, "not-found", "Not found", "No API operation at "+r.Method+" "+r.URL.Path+".")
	}))
}

func (h *API) storeProblem(w http.ResponseWriter, r *http.Request, what string, err error) {
	h.Metrics.storeError(what)
	h.Logger.ErrorContext(r.Context(), "admin API store failure", "what", what, "err", err)
	w.Header().Set("Retry-After", "5")
	writeProblem(w, http.StatusServiceUnavailable, "unavailable", "Temporarily unavailable",
		"usher could not reach its store while "+what+"; nothing was changed. Retry shortly.")
}

func (h *API) apiFindUsers(w http.ResponseWriter, r *http.Request, _ Caller) {
	email := r.URL.Query().Get("email")
	if email == "" {
		writeProblem(w, http.StatusBadRequest, "invalid-query", "email is required", "Search users by email: /api/users?email=name@example.com.",
			grants.FieldError{Field: "email", Message: "is required"})
		return
	}
	users, err := h.Store.UsersByEmail(r.Context(), email)
	if err != nil {
		h.storeProblem(w, r, "searching users", err)
		return
	}
	if users == nil {
		users = []grants.User{}
	}
	writeJSON(w, http.StatusOK, struct {
		Users []grants.User `json:"users"`
	}{users})
}

func (h *API) userGrant(w http.ResponseWriter, r *http.Request, change func(ctx context.Context, id string) (*grants.Grant, error)) {
	id := r.PathValue("id")
	if _, err := h.Store.GetUser(r.Context(), id); err != nil {
		if errors.Is(err, grants.ErrNotFound) {
			writeProblem(w, http.StatusNotFound, "not-found", "User not found", fmt.Sprintf("No user has the id %q.", clip(id, 100)))
			return
		}
		h.storeProblem(w, r, "loading the user", err)
		return
	}
	g, err := change(r.Context(), id)
	if err != nil {
		h.storeProblem(w, r, "updating the grant", err)
		return
	}
	if g.Roles == nil {
		g.Roles = []string{}
	}
	if g.Claims == nil {
		g.Claims = map[string]any{}
	}
	writeJSON(w, http.StatusOK, struct {
		*grants.Grant
		// UnsafeClaims: claim names the grant holds but tokens never carry.
		UnsafeClaims []string `json:"unsafe_claims,omitempty"`
	}{g, grants.UnsafeClaimNames(h.ClaimsNamespace, g.Claims)})
}

func (h *API) apiGetGrant(w http.ResponseWriter, r *http.Request, _ Caller) {
	h.userGrant(w, r, h.Store.GetGrant)
}

func (h *API) apiRemoveRole(w http.ResponseWriter, r *http.Request, c Caller) {
	h.changeGrant(w, r, c, grants.GrantChange{RemoveRole: r.PathValue("role")})
}

func (h *API) apiRemoveClaim(w http.ResponseWriter, r *http.Request, c Caller) {
	h.changeGrant(w, r, c, grants.GrantChange{RemoveClaim: r.PathValue("key")})
}

// changeGrant applies one grant change through the service (which records
// its events) and answers with the grant.
func (h *API) changeGrant(w http.ResponseWriter, r *http.Request, c Caller, change grants.GrantChange) {
	h.userGrant(w, r, func(ctx context.Context, id string) (*grants.Grant, error) {
		g, err := h.Invitations.ChangeGrant(ctx, id, change, c.actor())
		if err == nil {
			h.Logger.InfoContext(ctx, "grant changed", "user_id", id, "removed_role", change.RemoveRole,
				"removed_claim", change.RemoveClaim, "set_claim", change.SetClaim, "client_id", c.ClientID)
		}
		return g, err
	})
}

// apiSetClaim sets one claim of a user's grant: the operator's way to change
// a claim the user holds, which an invitation never does. Body: {"value": …}.
func (h *API) apiSetClaim(w http.ResponseWriter, r *http.Request, c Caller) {
	key := r.PathValue("key")
	if err := grants.ValidateClaimName(h.ClaimsNamespace, key); err != nil {
		writeProblem(w, http.StatusBadRequest, "invalid-claim", "Invalid claim name", err.Error(),
			grants.FieldError{Field: "key", Message: err.Error()})
		return
	}
	var body struct {
		Value *json.RawMessage `json:"value"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, grants.MaxClaimsBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil || body.Value == nil || string(*body.Value) == "null" {
		writeProblem(w, http.StatusBadRequest, "invalid-json", "Invalid JSON body",
			`Send {"value": <any JSON value but null>} (at most 8 KiB); to take a claim back, use DELETE.`)
		return
	}
	var value any
	_ = json.Unmarshal(*body.Value, &value)
	h.changeGrant(w, r, c, grants.GrantChange{SetClaim: key, Value: value})
}

// queryLimit reads ?limit= (1..1000, def when absent); a bad value has been
// answered with a problem when ok is false.
func queryLimit(w http.ResponseWriter, q url.Values, def int) (n int, ok bool) {
	s := q.Get("limit")
	if s == "" {
		return def, true
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 1000 {
		writeProblem(w, http.StatusBadRequest, "invalid-query", "Invalid limit", "limit must be a number from 1 to 1000.",
			grants.FieldError{Field: "limit", Message: "must be 1..1000"})
		return 0, false
	}
	return n, true
}
