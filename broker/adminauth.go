package broker

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	gsessions "github.com/gorilla/sessions"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/sessions"
)

// The admin page signs in through usher itself: the same upstream round
// trip as an SPA's sign-in, without an OIDC client in between; the browser
// session then names the user, and admins are users whose grant holds the
// admin role.
const (
	purposeAdmin     = "admin"
	DefaultAdminRole = "usher:admin"
	adminLoginTTL    = 10 * time.Minute
	sessionAdminAt   = "admin_at"
)

// handleAdminLogin starts an upstream sign-in for the admin page.
func (b *Broker) handleAdminLogin(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if err := b.upstream.Ready(ctx); err != nil {
		b.unavailable(w, r, "reaching the sign-in service", err)
		return
	}
	sess, err := b.browser.Get(r, b.cookie)
	if err != nil {
		b.unavailable(w, r, "loading the browser session", err)
		return
	}
	nonce, verifier := randomToken(24), randomToken(32)
	state, ok := b.keepAdminLoginState(w, r, nonce, verifier)
	if !ok {
		return
	}
	if state == "" { // the store keeps no login states: the session does
		state = b.keepInSession(sess, pendingLogin{Purpose: purposeAdmin, Nonce: nonce, Verifier: verifier, Expires: b.now().Add(adminLoginTTL)})
		if err := sess.Save(r, w); err != nil {
			b.unavailable(w, r, "saving the browser session", err)
			return
		}
	}
	http.Redirect(w, r, b.upstreamLoginURL(&emptyAuthRequest, state, nonce, verifier, loginHints{}), http.StatusFound)
}

// keepAdminLoginState keeps the admin sign-in's state as an SPA sign-in's
// is kept (loginstate.go): with an auth request of its own, of purpose
// admin, which no client's flow accepts (clientAuthRequest), taken once
// at the callback. "" when the store keeps no login states (the caller
// keeps it in the session); false when a page answered already.
func (b *Broker) keepAdminLoginState(w http.ResponseWriter, r *http.Request, nonce, verifier string) (string, bool) {
	ctx := r.Context()
	now := b.now()
	ar := &sessions.AuthRequest{ID: randomToken(16), Purpose: purposeAdmin, CreatedAt: now, ExpiresAt: now.Add(adminLoginTTL)}
	if err := b.sessions.CreateAuthRequest(ctx, ar); err != nil {
		b.unavailable(w, r, "saving the sign-in", err)
		return "", false
	}
	state, err := b.saveLoginState(w, r, ar.ID, nonce, verifier)
	switch {
	case errors.Is(err, errors.ErrUnsupported):
		_ = b.sessions.DeleteAuthRequest(ctx, ar.ID)
		return "", true
	case err != nil:
		b.unavailable(w, r, "keeping the sign-in's state", err)
		return "", false
	}
	return state, true
}

func (b *Broker) finishAdminLogin(w http.ResponseWriter, r *http.Request, sess *gsessions.Session, p pendingLogin) {
	ctx := r.Context()
	id, oerr := b.verifyUpstream(ctx, r.URL.Query(), p)
	if oerr != nil {
		b.renderPage(w, r, http.StatusForbidden, page{Title: "Sign-in failed", Message: "The sign-in could not be completed: " + oerr.Description,
			LinkURL: b.url("/admin/login"), LinkText: "Try again"})
		return
	}
	u, created, err := b.resolveUser(ctx, id)
	if err != nil {
		b.unavailable(w, r, "resolving the user", err)
		return
	}
	b.browser.renew(sess)
	authTime := id.AuthTime
	if authTime.IsZero() {
		authTime = b.now()
	}
	rememberAccount(sess, accountOf(u.ID, created, id, authTime, b.now()))
	sess.Values[sessionAdminAt] = strconv.FormatInt(b.now().Unix(), 10)
	if err := sess.Save(r, w); err != nil {
		b.unavailable(w, r, "saving the browser session", err)
		return
	}
	b.log.InfoContext(ctx, "admin page sign-in", "user_id", u.ID)
	if b.audit != nil {
		b.audit(ctx, AuditEvent{Action: "admin.signed_in", Actor: u.ID, Target: u.ID})
	}
	http.Redirect(w, r, b.url("/admin"), http.StatusSeeOther)
}

// adminSignedIn names the user sess is signed in as, and whether that
// sign-in went through the admin sign-in (finishAdminLogin).
func adminSignedIn(sess *gsessions.Session) (userID string, admin bool) {
	uid, _ := sess.Values["uid"].(string)
	return uid, sess.Values[sessionAdminAt] != nil
}

// recordAudit appends to the audit log in the store. A failure is logged,
// not fatal: the action it records has already happened.
func (b *Broker) recordAudit(ctx context.Context, e AuditEvent) {
	rec := &grants.AuditRecord{ID: randomToken(12), At: b.now(), Action: e.Action, Actor: e.Actor, Target: e.Target, Detail: e.Detail}
	if err := b.grants.AppendAudit(ctx, rec); err != nil {
		b.log.ErrorContext(ctx, "writing the audit log", "action", e.Action, "err", err)
	}
}

// AuditEvent is one line of the audit log.
type AuditEvent struct {
	Action string            `json:"action"` // invitation.created, invitation.redeemed, invitation.revoked, invitation.declined, grant.changed, admin.signed_in…
	Actor  string            `json:"actor"`  // client ID or user ID
	Target string            `json:"target"` // invitation ID or user ID
	Detail map[string]string `json:"detail,omitempty"`
}

// emptyAuthRequest: the admin sign-in has no SPA parameters to pass through.
var emptyAuthRequest = sessions.AuthRequest{}
