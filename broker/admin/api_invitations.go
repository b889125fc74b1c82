package admin

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"github.com/usher-oidc/usher/broker/upstream"
	"github.com/usher-oidc/usher/client"
	"github.com/usher-oidc/usher/grants"
	storeerrs "github.com/usher-oidc/usher/store/errs"
)

// The invitation operations of the admin API: create (with Idempotency-Key),
// get, list, revoke and resend.

func (h *API) view(inv *grants.Invitation, token string) client.Invitation {
	return newView(inv, token, h.Now(), h.ClaimsNamespace, h.Link)
}

// newView is inv as the API shows it at now; token, when just minted, gives its link.
func newView(inv *grants.Invitation, token string, now time.Time, claimsNamespace string, link func(*grants.Invitation, string) string) client.Invitation {
	v := client.Invitation{
		ID: inv.ID, Status: inv.EffectiveStatus(now), Email: inv.Email, Roles: inv.Roles,
		Claims: inv.Claims, Metadata: inv.Metadata, ExternalID: inv.ExternalID, ClientID: inv.ClientID,
		EmailMatch: inv.EmailMatch, Inviter: inv.Inviter, CreatedAt: inv.CreatedAt, ExpiresAt: inv.ExpiresAt,
		EmailStatus: inv.EmailStatus, EmailError: inv.EmailError, RedeemedAt: inv.RedeemedAt,
		RedeemedBy: inv.RedeemedBy, RedeemedConnection: inv.RedeemedConnection, RevokedAt: inv.RevokedAt,
		DeclinedAt: inv.DeclinedAt, DeclinedBy: inv.DeclinedBy,
		Events: inv.Events, MirrorStatus: upstream.MirrorStateOf(inv).String(), Link: linkOf(inv), Locale: inv.Locale,
		UnsafeClaims: grants.UnsafeClaimNames(claimsNamespace, inv.Claims),
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
		v.URL = link(inv, token)
	}
	return v
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

func (h *API) apiCreateInvitation(w http.ResponseWriter, r *http.Request, c Caller) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAPIBody))
	if err != nil {
		writeProblem(w, http.StatusRequestEntityTooLarge, "too-large", "Request body too large",
			fmt.Sprintf("The request body must be at most %d bytes.", maxAPIBody))
		return
	}
	if key := r.Header.Get("Idempotency-Key"); key != "" {
		h.createIdempotently(w, r, c, key, body)
		return
	}
	h.createInvitation(w, r, c, body)
}

// createIdempotently creates the invitation under c's Idempotency-Key: the
// first request with the key creates it and keeps its answer (sealed), a
// retry with the same body replays that answer, and a failed request frees
// the key for a retry.
func (h *API) createIdempotently(w http.ResponseWriter, r *http.Request, c Caller, key string, body []byte) {
	ctx := r.Context()
	if len(key) > 255 {
		writeProblem(w, http.StatusBadRequest, "invalid-request", "Invalid Idempotency-Key", "The Idempotency-Key header must be at most 255 characters.",
			grants.FieldError{Field: "Idempotency-Key", Message: "too long"})
		return
	}
	scoped, ok := h.reserveIdempotencyKey(w, r, c, key, body)
	if !ok {
		return
	}
	rec := &recorder{ResponseWriter: w, status: http.StatusOK}
	h.createInvitation(rec, r, c, body)
	if rec.status >= 400 {
		_ = h.Store.ReleaseIdempotencyKey(ctx, scoped) // a failed request may be retried with the same key
		return
	}
	sealed, err := h.Sealer.Encode("idempotency", idemResponse{Status: rec.status, Body: rec.body})
	if err == nil {
		raw, _ := json.Marshal(sealed)
		err = h.Store.CompleteIdempotencyKey(ctx, scoped, rec.status, raw)
	}
	if err != nil {
		h.Logger.ErrorContext(ctx, "completing idempotency key", "err", err)
	}
}

// reserveIdempotencyKey reserves c's key for this body and returns the key
// as stored. When ok is false it has answered the request: with the first
// request's answer, or with a problem.
func (h *API) reserveIdempotencyKey(w http.ResponseWriter, r *http.Request, c Caller, key string, body []byte) (scoped string, ok bool) {
	sum := sha256.Sum256(body)
	scoped = c.ClientID + " " + key // the client scopes the key: one client cannot replay another's
	now := h.Now()
	prev, err := h.Store.ReserveIdempotencyKey(r.Context(), &grants.IdempotencyRecord{Key: scoped, RequestHash: hex.EncodeToString(sum[:]), CreatedAt: now, ExpiresAt: now.Add(idemKeyTTL)})
	switch {
	case errors.Is(err, grants.ErrIdempotencyMismatch):
		writeProblem(w, http.StatusConflict, "idempotency-mismatch", "Idempotency-Key reused",
			"This Idempotency-Key was already used with a different request body. Use a new key for a new request.")
		return "", false
	case errors.Is(err, grants.ErrIdempotencyInProgress):
		w.Header().Set("Retry-After", "1")
		writeProblem(w, http.StatusConflict, "idempotency-in-progress", "Request in progress",
			"The first request with this Idempotency-Key has not finished yet; retry shortly.")
		return "", false
	case err != nil:
		h.storeProblem(w, r, "reserving the idempotency key", err)
		return "", false
	case prev != nil:
		h.replayIdempotent(w, prev)
		return "", false
	}
	return scoped, true
}

// replayIdempotent answers with the stored answer to the key's first request.
func (h *API) replayIdempotent(w http.ResponseWriter, prev *grants.IdempotencyRecord) {
	var sealed string
	var resp idemResponse
	if json.Unmarshal(prev.Response, &sealed) == nil && h.Sealer.Decode("idempotency", sealed, &resp) == nil {
		w.Header().Set("Idempotent-Replayed", "true")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(resp.Status)
		w.Write(resp.Body)
		return
	}
	writeProblem(w, http.StatusConflict, "idempotency-unreadable", "Idempotency-Key unusable",
		"The stored result for this Idempotency-Key cannot be read back; use a new key.")
}

func (h *API) createInvitation(w http.ResponseWriter, r *http.Request, c Caller, body []byte) {
	ctx := r.Context()
	var wire client.CreateRequest
	if err := decodeStrict(body, &wire); err != nil {
		writeProblem(w, http.StatusBadRequest, "invalid-json", "Invalid JSON body", jsonErrorDetail(err))
		return
	}
	req := wire.Grants()
	req.MayGrantPrivileged = slices.Contains(c.Scopes, grants.ScopeAdmin)
	// No default inviter: a client ID is not a person to name in the mail
	// ("funnel invited you"); the audit log records which client created it.
	inv, token, existed, err := h.Invitations.Create(ctx, req, c.actor())
	var ve *grants.ValidationError
	switch {
	case errors.As(err, &ve):
		writeProblem(w, http.StatusBadRequest, "invalid-invitation", "Invalid invitation",
			"Fix the fields listed in errors; nothing was stored.", ve.Errors...)
		return
	case err != nil:
		h.storeProblem(w, r, "storing the invitation", err)
		return
	case existed:
		writeJSON(w, http.StatusOK, h.view(inv, ""))
		return
	}
	h.Logger.InfoContext(ctx, "invitation created", "invitation_id", inv.ID, "client_id", c.ClientID, "send_email", inv.SendEmail)
	h.Metrics.invitationCreated()
	writeJSON(w, http.StatusCreated, h.view(inv, token))
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

func (h *API) invitationProblem(w http.ResponseWriter, r *http.Request, id string, err error) {
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
		h.storeProblem(w, r, "updating the invitation", err)
	}
}

func (h *API) apiGetInvitation(w http.ResponseWriter, r *http.Request, _ Caller) {
	id := r.PathValue("id")
	inv, err := h.Store.GetInvitation(r.Context(), id)
	if err != nil {
		h.invitationProblem(w, r, id, err)
		return
	}
	writeJSON(w, http.StatusOK, h.view(inv, ""))
}

func (h *API) apiRevokeInvitation(w http.ResponseWriter, r *http.Request, c Caller) {
	id := r.PathValue("id")
	inv, err := h.Invitations.Revoke(r.Context(), id, c.actor())
	if err != nil {
		h.invitationProblem(w, r, id, err)
		return
	}
	h.Logger.InfoContext(r.Context(), "invitation revoked", "invitation_id", id, "client_id", c.ClientID)
	writeJSON(w, http.StatusOK, h.view(inv, ""))
}

func (h *API) apiResendInvitation(w http.ResponseWriter, r *http.Request, c Caller) {
	ctx := r.Context()
	id := r.PathValue("id")
	inv, token, err := h.Invitations.Resend(ctx, id, c.actor())
	if err != nil {
		h.invitationProblem(w, r, id, err)
		return
	}
	h.Logger.InfoContext(ctx, "invitation resent", "invitation_id", id, "client_id", c.ClientID)
	writeJSON(w, http.StatusOK, h.view(inv, token))
}

func (h *API) apiListInvitations(w http.ResponseWriter, r *http.Request, _ Caller) {
	q := r.URL.Query()
	f := grants.InvitationFilter{Status: grants.Status(q.Get("status")), Email: q.Get("email"),
		ClientID: q.Get("client_id"), ExternalID: q.Get("external_id"), Cursor: q.Get("cursor"),
		UnsafeClaims: q.Get("unsafe_claims") == "true", ClaimsNamespace: h.ClaimsNamespace}
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
	if !apiSearchFilter(w, &f, q) {
		return
	}
	list, next, err := h.Store.ListInvitations(r.Context(), f, h.Now())
	if err != nil {
		if errors.Is(err, storeerrs.ErrBadCursor) {
			writeProblem(w, http.StatusBadRequest, "invalid-query", "Invalid cursor", "cursor must be a value returned as next_cursor.",
				grants.FieldError{Field: "cursor", Message: "not a cursor usher issued"})
			return
		}
		h.storeProblem(w, r, "listing invitations", err)
		return
	}
	out := client.InvitationList{Invitations: make([]client.Invitation, 0, len(list)), NextCursor: next}
	for i := range list {
		out.Invitations = append(out.Invitations, h.view(&list[i], ""))
	}
	writeJSON(w, http.StatusOK, out)
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
