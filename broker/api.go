package broker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/usher-oidc/usher/broker/upstream"
	"github.com/usher-oidc/usher/notify/webhooks"

	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/usher-oidc/usher/grants"
	storeerrs "github.com/usher-oidc/usher/store/errs"
)

// The admin API: JSON in and out, errors as RFC 9457 problem details. Callers
// authenticate with an access token usher issued (client_credentials) that
// carries the scope the operation needs.
const (
	scopeWrite  = "invitations:write"
	scopeRead   = "invitations:read"
	maxAPIBody  = 64 << 10
	idemKeyTTL  = 24 * time.Hour
	problemType = "https://usher.dev/problems/"
)

// problem is an RFC 9457 problem details object.
type problem struct {
	Type   string              `json:"type"`
	Title  string              `json:"title"`
	Status int                 `json:"status"`
	Detail string              `json:"detail,omitempty"`
	Errors []grants.FieldError `json:"errors,omitempty"`
}

func writeProblem(w http.ResponseWriter, status int, slug, title, detail string, errs ...grants.FieldError) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(problem{Type: problemType + slug, Title: title, Status: status, Detail: detail, Errors: errs})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// caller is who called the admin API.
type caller struct {
	ClientID string
	Subject  string
	Scopes   []string
}

type apiHandler func(w http.ResponseWriter, r *http.Request, c caller)

// actor names the caller in the audit log.
func (c caller) actor() string {
	if c.ClientID != "" {
		return "client:" + c.ClientID
	}
	return c.Subject
}

func (b *Broker) apiAudit(w http.ResponseWriter, r *http.Request, _ caller) {
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
	recs, next, err := b.grants.ListAudit(r.Context(), f)
	if err != nil {
		if errors.Is(err, storeerrs.ErrBadCursor) {
			writeProblem(w, http.StatusBadRequest, "invalid-query", "Invalid cursor", "cursor must be a value returned as next_cursor.",
				grants.FieldError{Field: "cursor", Message: "not a cursor usher issued"})
			return
		}
		b.storeProblem(w, r, "reading the audit log", err)
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
func (b *Broker) api(scope string, h apiHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		token, ok := strings.CutPrefix(auth, "Bearer ")
		if !ok || token == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="usher"`)
			writeProblem(w, http.StatusUnauthorized, "unauthorized", "Authentication required",
				"Send an access token from usher's token endpoint (client_credentials grant) as 'Authorization: Bearer <token>'.")
			return
		}
		claims, err := b.verifyAccessToken(r.Context(), token)
		var unavailable op.StatusError
		if errors.As(err, &unavailable) {
			// The token may be fine: the revocation check could not be made.
			b.storeProblem(w, r, "checking the access token", err)
			return
		}
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="usher", error="invalid_token"`)
			writeProblem(w, http.StatusUnauthorized, "invalid-token", "Invalid access token",
				"The access token is invalid, expired or revoked; request a new one.")
			return
		}
		if err := b.checkAPIToken(claims); err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="usher", error="invalid_token"`)
			writeProblem(w, http.StatusUnauthorized, "invalid-token", "Not an admin API token",
				"The admin API takes only access tokens from the client_credentials grant; a token issued to a person is never accepted.")
			return
		}
		if ok, wait := b.limits.api.allow(r.Context(), "client:"+claims.ClientID); !ok {
			b.tooMany(w, "api", wait, true)
			return
		}
		if !slices.Contains(claims.Scopes, scope) {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="usher", error="insufficient_scope", scope=%q`, scope))
			writeProblem(w, http.StatusForbidden, "insufficient-scope", "Insufficient scope",
				fmt.Sprintf("This operation needs the scope %q; ask for it in the token request (the client must be allowed it in usher's config).", scope))
			return
		}
		h(w, r, caller{ClientID: claims.ClientID, Subject: claims.Subject, Scopes: claims.Scopes})
	})
}

func (b *Broker) apiRoutes(mux *http.ServeMux) {
	mux.Handle("POST /api/invitations", b.api(scopeWrite, b.apiCreateInvitation))
	mux.Handle("GET /api/invitations", b.api(scopeRead, b.apiListInvitations))
	mux.Handle("GET /api/invitations/{id}", b.api(scopeRead, b.apiGetInvitation))
	mux.Handle("DELETE /api/invitations/{id}", b.api(scopeWrite, b.apiRevokeInvitation))
	mux.Handle("POST /api/invitations/{id}/resend", b.api(scopeWrite, b.apiResendInvitation))
	mux.Handle("GET /api/users", b.api(scopeRead, b.apiFindUsers))
	mux.Handle("GET /api/audit", b.api(scopeRead, b.apiAudit))
	if b.opts.Webhooks != nil {
		b.webhookRoutes(mux, b.opts.Webhooks)
	}
	mux.Handle("GET /api/users/{id}/grants", b.api(scopeRead, b.apiGetGrant))
	mux.Handle("DELETE /api/users/{id}/grants/roles/{role}", b.api(scopeWrite, b.apiRemoveRole))
	mux.Handle("DELETE /api/users/{id}/grants/claims/{key}", b.api(scopeWrite, b.apiRemoveClaim))
	mux.Handle("PUT /api/users/{id}/grants/claims/{key}", b.api(scopeWrite, b.apiSetClaim))
	mux.HandleFunc("GET /api/openapi.json", serveOpenAPI) // every route above is described there
	mux.Handle("/api/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, http.StatusNotFound, "not-found", "Not found", "No API operation at "+r.Method+" "+r.URL.Path+".")
	}))
}

// invitationView is an invitation as the API shows it. URL is set only when
// a token was just minted (create, resend): it is never stored in clear.
type invitationView struct {
	ID                 string         `json:"id"`
	Status             grants.Status  `json:"status"`
	Email              string         `json:"email"`
	Roles              []string       `json:"roles"`
	Claims             map[string]any `json:"claims"`
	Metadata           map[string]any `json:"metadata"`
	ExternalID         string         `json:"external_id,omitempty"`
	ClientID           string         `json:"client_id,omitempty"`
	EmailMatch         string         `json:"email_match"`
	Inviter            string         `json:"inviter,omitempty"`
	CreatedAt          time.Time      `json:"created_at"`
	ExpiresAt          time.Time      `json:"expires_at"`
	EmailStatus        string         `json:"email_status"`
	EmailError         string         `json:"email_error,omitempty"`
	RedeemedAt         *time.Time     `json:"redeemed_at,omitempty"`
	RedeemedBy         string         `json:"redeemed_by,omitempty"`
	RedeemedConnection string         `json:"redeemed_connection,omitempty"`
	RevokedAt          *time.Time     `json:"revoked_at,omitempty"`
	DeclinedAt         *time.Time     `json:"declined_at,omitempty"`
	DeclinedBy         string         `json:"declined_by,omitempty"`
	Events             []grants.Event `json:"events"`
	MirrorStatus       string         `json:"mirror_status,omitempty"`
	URL                string         `json:"url,omitempty"`
	// Link is the form of url: invite or authorize.
	Link string `json:"link"`
	// UnsafeClaims: stored claim names never served (grants.ValidateClaimName).
	UnsafeClaims []string `json:"unsafe_claims,omitempty"`
}

func (b *Broker) view(inv *grants.Invitation, token string) invitationView {
	v := invitationView{
		ID: inv.ID, Status: inv.EffectiveStatus(b.now()), Email: inv.Email, Roles: inv.Roles,
		Claims: inv.Claims, Metadata: inv.Metadata, ExternalID: inv.ExternalID, ClientID: inv.ClientID,
		EmailMatch: inv.EmailMatch, Inviter: inv.Inviter, CreatedAt: inv.CreatedAt, ExpiresAt: inv.ExpiresAt,
		EmailStatus: inv.EmailStatus, EmailError: inv.EmailError, RedeemedAt: inv.RedeemedAt,
		RedeemedBy: inv.RedeemedBy, RedeemedConnection: inv.RedeemedConnection, RevokedAt: inv.RevokedAt,
		DeclinedAt: inv.DeclinedAt, DeclinedBy: inv.DeclinedBy,
		Events: inv.Events, MirrorStatus: upstream.MirrorStateOf(inv).String(), Link: linkOf(inv),
		UnsafeClaims: grants.UnsafeClaimNames(b.opts.ClaimsNamespace, inv.Claims),
	}
	if v.Roles == nil {
		v.Roles = []string{}
	}
	if v.Claims == nil {
		v.Claims = map[string]any{}
	}
	if v.Metadata == nil {
		v.Metadata = map[string]any{}
	}
	if v.Events == nil {
		v.Events = []grants.Event{}
	}
	if token != "" {
		v.URL = b.inviteLink(inv, token)
	}
	return v
}

// inviteLink is the invitation's link in the form it chose: /invite/<token>
// (the default), or /authorize?client_id=…&invitation=<token> for apps whose
// links must start at the authorization endpoint. The latter needs an app:
// without one usher can name, the link falls back to /invite/.
func (b *Broker) inviteLink(inv *grants.Invitation, token string) string {
	if inv.Link == grants.LinkAuthorize {
		if c := b.invitationClient(inv, ""); c != nil {
			return b.url("/authorize?" + url.Values{"client_id": {c.ID}, "invitation": {token}}.Encode())
		}
	}
	return strings.TrimSuffix(b.opts.InvitationBaseURL, "/") + "/invite/" + token
}

func linkOf(inv *grants.Invitation) string {
	if inv.Link == "" {
		return grants.LinkInvite
	}
	return inv.Link
}

// idemResponse is what an Idempotency-Key replays. It may hold a link with
// a token, so it is stored sealed (encrypted and authenticated).
type idemResponse struct {
	Status int             `json:"status"`
	Body   json.RawMessage `json:"body"`
}

func (b *Broker) apiCreateInvitation(w http.ResponseWriter, r *http.Request, c caller) {
	ctx := r.Context()
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAPIBody))
	if err != nil {
		writeProblem(w, http.StatusRequestEntityTooLarge, "too-large", "Request body too large",
			fmt.Sprintf("The request body must be at most %d bytes.", maxAPIBody))
		return
	}
	key := r.Header.Get("Idempotency-Key")
	if key != "" {
		if len(key) > 255 {
			writeProblem(w, http.StatusBadRequest, "invalid-request", "Invalid Idempotency-Key", "The Idempotency-Key header must be at most 255 characters.",
				grants.FieldError{Field: "Idempotency-Key", Message: "too long"})
			return
		}
		sum := sha256.Sum256(body)
		scoped := c.ClientID + " " + key // the client scopes the key: one client cannot replay another's
		now := b.now()
		prev, err := b.grants.ReserveIdempotencyKey(ctx, &grants.IdempotencyRecord{Key: scoped, RequestHash: hex.EncodeToString(sum[:]), CreatedAt: now, ExpiresAt: now.Add(idemKeyTTL)})
		switch {
		case errors.Is(err, grants.ErrIdempotencyMismatch):
			writeProblem(w, http.StatusConflict, "idempotency-mismatch", "Idempotency-Key reused",
				"This Idempotency-Key was already used with a different request body. Use a new key for a new request.")
			return
		case errors.Is(err, grants.ErrIdempotencyInProgress):
			w.Header().Set("Retry-After", "1")
			writeProblem(w, http.StatusConflict, "idempotency-in-progress", "Request in progress",
				"The first request with this Idempotency-Key has not finished yet; retry shortly.")
			return
		case err != nil:
			b.storeProblem(w, r, "reserving the idempotency key", err)
			return
		case prev != nil:
			var sealed string
			var resp idemResponse
			if json.Unmarshal(prev.Response, &sealed) == nil && b.browser.codec.Decode("idempotency", sealed, &resp) == nil {
				w.Header().Set("Idempotent-Replayed", "true")
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(resp.Status)
				w.Write(resp.Body)
				return
			}
			writeProblem(w, http.StatusConflict, "idempotency-unreadable", "Idempotency-Key unusable",
				"The stored result for this Idempotency-Key cannot be read back; use a new key.")
			return
		}
		rec := &recorder{ResponseWriter: w, status: http.StatusOK}
		b.createInvitation(rec, r, c, body)
		if rec.status >= 400 {
			_ = b.grants.ReleaseIdempotencyKey(ctx, scoped) // a failed request may be retried with the same key
			return
		}
		sealed, err := b.browser.codec.Encode("idempotency", idemResponse{Status: rec.status, Body: rec.body})
		if err == nil {
			raw, _ := json.Marshal(sealed)
			err = b.grants.CompleteIdempotencyKey(ctx, scoped, rec.status, raw)
		}
		if err != nil {
			b.log.ErrorContext(ctx, "completing idempotency key", "err", err)
		}
		return
	}
	b.createInvitation(w, r, c, body)
}

func (b *Broker) createInvitation(w http.ResponseWriter, r *http.Request, c caller, body []byte) {
	ctx := r.Context()
	var req grants.CreateRequest
	if err := decodeStrict(body, &req); err != nil {
		writeProblem(w, http.StatusBadRequest, "invalid-json", "Invalid JSON body", jsonErrorDetail(err))
		return
	}
	req.MayGrantPrivileged = slices.Contains(c.Scopes, grants.ScopeAdmin)
	// No default inviter: a client ID is not a person to name in the mail
	// ("funnel invited you"); the audit log records which client created it.
	inv, token, existed, err := b.invitations.Create(ctx, req, c.actor())
	var ve *grants.ValidationError
	switch {
	case errors.As(err, &ve):
		writeProblem(w, http.StatusBadRequest, "invalid-invitation", "Invalid invitation",
			"Fix the fields listed in errors; nothing was stored.", ve.Errors...)
		return
	case err != nil:
		b.storeProblem(w, r, "storing the invitation", err)
		return
	case existed:
		writeJSON(w, http.StatusOK, b.view(inv, ""))
		return
	}
	b.log.InfoContext(ctx, "invitation created", "invitation_id", inv.ID, "client_id", c.ClientID, "send_email", inv.SendEmail)
	b.metrics.invitationsMade.Inc()
	writeJSON(w, http.StatusCreated, b.view(inv, token))
}

func jsonErrorDetail(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	var ue *unknownFieldError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("The body is not valid JSON (at byte %d).", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("Field %q must be a JSON %s.", te.Field, te.Type.Kind())
	case errors.As(err, &ue):
		return fmt.Sprintf("Unknown field %q; see the API reference for the accepted fields.", ue.Field)
	case errors.Is(err, io.EOF):
		return "The body is empty; send a JSON object."
	}
	return "The body could not be read as an invitation: " + err.Error()
}

func (b *Broker) storeProblem(w http.ResponseWriter, r *http.Request, what string, err error) {
	b.metrics.storeErrors.WithLabelValues(what).Inc()
	b.log.ErrorContext(r.Context(), "admin API store failure", "what", what, "err", err)
	w.Header().Set("Retry-After", "5")
	writeProblem(w, http.StatusServiceUnavailable, "unavailable", "Temporarily unavailable",
		"usher could not reach its store while "+what+"; nothing was changed. Retry shortly.")
}

func (b *Broker) invitationProblem(w http.ResponseWriter, r *http.Request, id string, err error) {
	switch {
	case errors.Is(err, grants.ErrNotFound):
		writeProblem(w, http.StatusNotFound, "not-found", "Invitation not found", fmt.Sprintf("No invitation has the id %q.", clip(id, 100)))
	case errors.Is(err, grants.ErrInvitationRedeemed):
		writeProblem(w, http.StatusConflict, "already-redeemed", "Invitation already redeemed",
			"This invitation was redeemed; to take back what it granted, remove the roles or claims from the user's grant.")
	case errors.Is(err, grants.ErrInvitationRevoked):
		writeProblem(w, http.StatusConflict, "revoked", "Invitation revoked", "This invitation was revoked; create a new one.")
	case errors.Is(err, grants.ErrInvitationDeclined):
		writeProblem(w, http.StatusConflict, "declined", "Invitation declined", "The invitee declined this invitation; create a new one if they should still get it.")
	default:
		b.storeProblem(w, r, "updating the invitation", err)
	}
}

func (b *Broker) apiGetInvitation(w http.ResponseWriter, r *http.Request, _ caller) {
	id := r.PathValue("id")
	inv, err := b.grants.GetInvitation(r.Context(), id)
	if err != nil {
		b.invitationProblem(w, r, id, err)
		return
	}
	writeJSON(w, http.StatusOK, b.view(inv, ""))
}

func (b *Broker) apiRevokeInvitation(w http.ResponseWriter, r *http.Request, c caller) {
	id := r.PathValue("id")
	inv, err := b.invitations.Revoke(r.Context(), id, c.actor())
	if err != nil {
		b.invitationProblem(w, r, id, err)
		return
	}
	b.log.InfoContext(r.Context(), "invitation revoked", "invitation_id", id, "client_id", c.ClientID)
	writeJSON(w, http.StatusOK, b.view(inv, ""))
}

func (b *Broker) apiResendInvitation(w http.ResponseWriter, r *http.Request, c caller) {
	ctx := r.Context()
	id := r.PathValue("id")
	inv, token, err := b.invitations.Resend(ctx, id, c.actor())
	if err != nil {
		b.invitationProblem(w, r, id, err)
		return
	}
	b.log.InfoContext(ctx, "invitation resent", "invitation_id", id, "client_id", c.ClientID)
	writeJSON(w, http.StatusOK, b.view(inv, token))
}

func (b *Broker) apiListInvitations(w http.ResponseWriter, r *http.Request, _ caller) {
	q := r.URL.Query()
	f := grants.InvitationFilter{Status: grants.Status(q.Get("status")), Email: q.Get("email"),
		ClientID: q.Get("client_id"), ExternalID: q.Get("external_id"), Cursor: q.Get("cursor"),
		UnsafeClaims: q.Get("unsafe_claims") == "true", ClaimsNamespace: b.opts.ClaimsNamespace}
	switch f.Status {
	case "", grants.StatusPending, grants.StatusRedeemed, grants.StatusRevoked, grants.StatusDeclined, grants.StatusExpired:
	default:
		writeProblem(w, http.StatusBadRequest, "invalid-query", "Invalid status filter", "status must be one of pending, redeemed, revoked, declined, expired.",
			grants.FieldError{Field: "status", Message: "unknown status"})
		return
	}
	var ok bool
	if f.Limit, ok = queryLimit(w, q, 50); !ok {
		return
	}
	list, next, err := b.grants.ListInvitations(r.Context(), f, b.now())
	if err != nil {
		if errors.Is(err, storeerrs.ErrBadCursor) {
			writeProblem(w, http.StatusBadRequest, "invalid-query", "Invalid cursor", "cursor must be a value returned as next_cursor.",
				grants.FieldError{Field: "cursor", Message: "not a cursor usher issued"})
			return
		}
		b.storeProblem(w, r, "listing invitations", err)
		return
	}
	out := struct {
		Invitations []invitationView `json:"invitations"`
		NextCursor  string           `json:"next_cursor,omitempty"`
	}{Invitations: make([]invitationView, 0, len(list)), NextCursor: next}
	for i := range list {
		out.Invitations = append(out.Invitations, b.view(&list[i], ""))
	}
	writeJSON(w, http.StatusOK, out)
}

func (b *Broker) apiFindUsers(w http.ResponseWriter, r *http.Request, _ caller) {
	email := r.URL.Query().Get("email")
	if email == "" {
		writeProblem(w, http.StatusBadRequest, "invalid-query", "email is required", "Search users by email: /api/users?email=name@example.com.",
			grants.FieldError{Field: "email", Message: "is required"})
		return
	}
	users, err := b.grants.UsersByEmail(r.Context(), email)
	if err != nil {
		b.storeProblem(w, r, "searching users", err)
		return
	}
	if users == nil {
		users = []grants.User{}
	}
	writeJSON(w, http.StatusOK, struct {
		Users []grants.User `json:"users"`
	}{users})
}

func (b *Broker) userGrant(w http.ResponseWriter, r *http.Request, change func(ctx context.Context, id string) (*grants.Grant, error)) {
	id := r.PathValue("id")
	if _, err := b.grants.GetUser(r.Context(), id); err != nil {
		if errors.Is(err, grants.ErrNotFound) {
			writeProblem(w, http.StatusNotFound, "not-found", "User not found", fmt.Sprintf("No user has the id %q.", clip(id, 100)))
			return
		}
		b.storeProblem(w, r, "loading the user", err)
		return
	}
	g, err := change(r.Context(), id)
	if err != nil {
		b.storeProblem(w, r, "updating the grant", err)
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
	}{g, grants.UnsafeClaimNames(b.opts.ClaimsNamespace, g.Claims)})
}

func (b *Broker) apiGetGrant(w http.ResponseWriter, r *http.Request, _ caller) {
	b.userGrant(w, r, b.grants.GetGrant)
}

func (b *Broker) apiRemoveRole(w http.ResponseWriter, r *http.Request, c caller) {
	b.userGrant(w, r, func(ctx context.Context, id string) (*grants.Grant, error) {
		b.log.InfoContext(ctx, "grant role removed", "user_id", id, "role", r.PathValue("role"), "client_id", c.ClientID)
		b.audit(ctx, AuditEvent{Action: "grant.changed", Actor: c.actor(), Target: id, Detail: map[string]string{"removed_role": r.PathValue("role")}})
		g, err := b.grants.RemoveGrantRole(ctx, id, r.PathValue("role"), b.now())
		if err == nil {
			b.mirrorRevocation(ctx, id, r.PathValue("role"), "")
			b.emit(ctx, webhooks.GrantChangedEvent(g, "role_removed"))
		}
		return g, err
	})
}

func (b *Broker) apiRemoveClaim(w http.ResponseWriter, r *http.Request, c caller) {
	b.userGrant(w, r, func(ctx context.Context, id string) (*grants.Grant, error) {
		b.log.InfoContext(ctx, "grant claim removed", "user_id", id, "claim", r.PathValue("key"), "client_id", c.ClientID)
		b.audit(ctx, AuditEvent{Action: "grant.changed", Actor: c.actor(), Target: id, Detail: map[string]string{"removed_claim": r.PathValue("key")}})
		g, err := b.grants.RemoveGrantClaim(ctx, id, r.PathValue("key"), b.now())
		if err == nil {
			b.mirrorRevocation(ctx, id, "", r.PathValue("key"))
			b.emit(ctx, webhooks.GrantChangedEvent(g, "claim_removed"))
		}
		return g, err
	})
}

// apiSetClaim sets one claim of a user's grant: the operator's way to change
// a claim the user holds, which an invitation never does. Body: {"value": …}.
func (b *Broker) apiSetClaim(w http.ResponseWriter, r *http.Request, c caller) {
	key := r.PathValue("key")
	if err := grants.ValidateClaimName(b.opts.ClaimsNamespace, key); err != nil {
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
	b.userGrant(w, r, func(ctx context.Context, id string) (*grants.Grant, error) {
		g, err := b.grants.SetGrantClaim(ctx, id, key, value, b.now())
		if err == nil {
			b.log.InfoContext(ctx, "grant claim set", "user_id", id, "claim", key, "client_id", c.ClientID)
			b.audit(ctx, AuditEvent{Action: "grant.changed", Actor: c.actor(), Target: id, Detail: map[string]string{"set_claim": key}})
			b.emit(ctx, webhooks.GrantChangedEvent(g, "claim_set"))
		}
		return g, err
	})
}

// recorder keeps a copy of a response so Idempotency-Key can replay it.
type recorder struct {
	http.ResponseWriter
	status int
	body   []byte
}

func (r *recorder) WriteHeader(s int) { r.status = s; r.ResponseWriter.WriteHeader(s) }
func (r *recorder) Write(p []byte) (int, error) {
	r.body = append(r.body, p...)
	return r.ResponseWriter.Write(p)
}

// mirrorRevocation removes a revoked role or claim from the user's accounts
// at the upstream tenant too.
func (b *Broker) mirrorRevocation(ctx context.Context, userID, role, claim string) {
	if b.caps.mirror == nil {
		return
	}
	ids, err := b.grants.Identities(ctx, userID)
	if err != nil {
		b.log.ErrorContext(ctx, "listing identities for the Auth0 mirror", "user_id", userID, "err", err)
		return
	}
	for _, id := range ids {
		if id.Issuer != b.upstream.Issuer() {
			continue
		}
		if err := b.caps.mirror.EnqueueRevocation(ctx, id.Subject, role, claim); err != nil {
			b.log.ErrorContext(ctx, "queueing the Auth0 mirror revocation", "user_id", userID, "err", err)
		}
	}
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
