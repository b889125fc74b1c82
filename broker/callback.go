package broker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"time"

	gsessions "github.com/gorilla/sessions"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/usher-oidc/usher/broker/upstream"
	"github.com/usher-oidc/usher/sessions"
)

// handleCallback is the upstream's redirect back to usher.
func (b *Broker) handleCallback(w http.ResponseWriter, r *http.Request) {
	r, ar, p, handled := b.takeLoginState(w, r, r.URL.Query())
	if handled {
		if ar == nil {
			return // answered
		}
		sess, err := b.browser.Get(r, b.cookie)
		if err != nil {
			b.unavailable(w, r, "loading the browser session", err)
			return
		}
		if ar.Purpose == purposeAdmin {
			// Its request held the state only; left to expire, so that a
			// replay reads as one (no such state), not as a stale sign-in.
			b.finishAdminLogin(w, r, sess, p)
			return
		}
		b.finishSignIn(w, r, sess, p, ar)
		return
	}
	b.callbackFromSession(w, r)
}

// callbackFromSession is the callback of a sign-in whose state the browser
// session holds (see loginstate.go): taken out of the session, which is
// saved, in the round trip that reads the auth request.
func (b *Broker) callbackFromSession(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	sess, err := b.browser.Get(r, b.cookie)
	if err != nil {
		b.unavailable(w, r, "loading the browser session", err)
		return
	}
	key := pendingPrefix + q.Get("state")
	raw, _ := sess.Values[key].(string)
	var p pendingLogin
	if q.Get("state") == "" || raw == "" || jsonParse(raw, &p) != nil || b.now().After(p.Expires) {
		b.foreignCallback(w, r)
		return
	}
	delete(sess.Values, key) // single use
	ar, err := b.consumeState(w, r, sess, p)
	if errors.Is(err, errSessionSave) {
		b.unavailable(w, r, "saving the browser session", err)
		return
	}
	if p.Purpose == purposeAdmin {
		b.finishAdminLogin(w, r, sess, p)
		return
	}
	if storeDown(err) {
		b.unavailable(w, r, "loading the authorization request", err)
		return
	}
	if err != nil {
		b.renderPage(w, r, http.StatusBadRequest, page{Key: "callback.expired"})
		return
	}
	b.finishSignIn(w, r, sess, p, ar)
}

// finishSignIn verifies the upstream's answer to the sign-in p started for
// ar, resolves the user and answers: the accept page for an invitation,
// else the code.
func (b *Broker) finishSignIn(w http.ResponseWriter, r *http.Request, sess *gsessions.Session, p pendingLogin, ar *sessions.AuthRequest) {
	ctx := r.Context()
	q := r.URL.Query()
	fail := func(e *oidc.Error) {
		if !p.requestEnded {
			_ = b.sessions.DeleteAuthRequest(ctx, ar.ID)
		}
		op.AuthRequestError(w, r, authRequest{ar}, e, b.provider)
	}
	id, oerr := b.verifyUpstream(ctx, q, p)
	if oerr == nil {
		b.resolveConnection(ctx, id)
		oerr = b.checkMaxAge(ar, id)
	}
	if oerr == nil {
		oerr = b.checkOrganization(ctx, ar, id)
	}
	if oerr != nil {
		b.metrics.logins.WithLabelValues("rejected", "").Inc()
		fail(oerr)
		return
	}
	u, created, mayAwait, err := b.resolveSignIn(ctx, id)
	if err != nil {
		fail(oidc.ErrServerError().WithDescription("temporarily unavailable: resolving the user"))
		return
	}
	b.log.InfoContext(ctx, "sign-in", "user_id", u.ID, "new_user", created, "connection", id.Connection, "connection_source", id.ConnectionSource, "client_id", ar.ClientID)
	outcome := "sign_in"
	if created {
		outcome = "sign_up"
	}
	b.metrics.logins.WithLabelValues(outcome, connectionLabel(id.Connection)).Inc()
	ar.Subject = u.ID
	ar.AuthTime = id.AuthTime
	if ar.AuthTime.IsZero() {
		ar.AuthTime = b.now()
	}
	ar.AMR = id.AMR
	ar.Upstream = &sessions.Upstream{Subject: id.Subject, Claims: id.Claims}
	// New session ID after sign-in (session fixation), then remember the account.
	b.browser.renew(sess)
	acct := accountOf(u.ID, created, id, ar.AuthTime, b.now())
	rememberAccount(sess, acct)
	b.bindSignIn(sess, ar)
	if ar.InvitationHash == "" && !slices.Contains(ar.Prompt, oidc.PromptNone) && mayAwait {
		// An invitation this user accepted before verifying the email:
		// this fresh sign-in may say it is verified now.
		ar.InvitationHash = b.awaitedInvitation(ctx, u.ID, id.EmailVerified)
	}
	if ar.InvitationHash != "" {
		b.clearInvitationCookie(w) // the auth request carries it from here on
		b.offerInvitation(w, r, sess, ar, acct)
		return
	}
	b.completeAuthorization(w, r, sess, ar)
}

// errSessionSave: consumeState could not save the browser session.
var errSessionSave = errors.New("saving the browser session")

// consumeState saves sess, its sign-in state taken out (single use), and
// reads the auth request that state was for in the same round trip.
func (b *Broker) consumeState(w http.ResponseWriter, r *http.Request, sess *gsessions.Session, p pendingLogin) (*sessions.AuthRequest, error) {
	t := sessions.Together{GetAuthRequest: p.AuthRequestID}
	if p.Purpose == purposeAdmin {
		t.GetAuthRequest = ""
	}
	var read sessions.Read
	err := b.browser.saveWith(r, w, sess, func(rec *sessions.BrowserSession, replaces string) error {
		t.SaveSession, t.ReplacesSession = rec, replaces
		var err error
		read, err = sessions.RunTogether(r.Context(), b.sessions, t)
		return err
	})
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: %w", errSessionSave, err)
	case t.GetAuthRequest == "":
		return nil, sessions.ErrNotFound
	}
	return read.AuthRequest, read.AuthRequestErr
}

// completeAuthorization marks the auth request done and answers the client:
// the code's save stores the completed request and the browser session
// (SaveAuthCode, one round trip).
func (b *Broker) completeAuthorization(w http.ResponseWriter, r *http.Request, sess *gsessions.Session, ar *sessions.AuthRequest) {
	ar.Done = true
	later := &sessionWrite{}
	err := b.browser.saveWith(r, w, sess, func(rec *sessions.BrowserSession, replaces string) error {
		later.rec, later.replaces = rec, replaces
		return nil
	})
	if err != nil {
		b.unavailable(w, r, "saving the browser session", err)
		return
	}
	ctx := context.WithValue(op.ContextWithIssuer(r.Context(), b.opts.Issuer), ctxSessionWrite{}, later)
	b.authResponse(w, r.WithContext(ctx), ar)
	if !later.taken {
		// The answer saved no code (an error answered): the session alone.
		if err := b.browser.write(ctx, later.rec, later.replaces); err != nil {
			b.log.ErrorContext(ctx, "saving the browser session", "err", err)
		}
	}
}

// verifyUpstream turns the upstream's answer into a verified identity, or the
// OIDC error the client should get.
func (b *Broker) verifyUpstream(ctx context.Context, q url.Values, p pendingLogin) (*upstream.Identity, *oidc.Error) {
	if upErr := q.Get("error"); upErr != "" {
		// e.g. login_required after prompt=none, or an Auth0 Action or Rule
		// denying access: the SPA gets the same OIDC error.
		oerr := upstreamError(upErr, q.Get("error_description"))
		b.log.InfoContext(ctx, "upstream answered with an error", "upstream_error", clip(upErr, 64),
			"upstream_error_description", clip(q.Get("error_description"), 300), "error", oerr.ErrorType)
		return nil, oerr
	}
	if err := b.upstream.Ready(ctx); err != nil {
		b.log.ErrorContext(ctx, "upstream discovery failed", "err", err)
		b.metrics.upstreamErrors.WithLabelValues("discovery").Inc()
		return nil, oidc.ErrServerError().WithDescription("the sign-in service is unreachable")
	}
	// RFC 9207: when the upstream names itself, it must be the one we asked.
	if iss := q.Get("iss"); iss != "" && iss != b.upstream.Issuer() {
		b.log.WarnContext(ctx, "upstream callback from an unexpected issuer", "iss", iss)
		return nil, oidc.ErrAccessDenied().WithDescription("the sign-in response came from an unexpected issuer")
	}
	start := time.Now()
	id, err := b.upstream.Exchange(ctx, upstream.Callback{RedirectURL: b.callbackURL(), Code: q.Get("code"), Nonce: p.Nonce, CodeVerifier: p.Verifier})
	b.metrics.upstreamSeconds.WithLabelValues("token").Observe(time.Since(start).Seconds())
	if err != nil {
		b.metrics.upstreamErrors.WithLabelValues("token").Inc()
		b.log.WarnContext(ctx, "upstream sign-in rejected", "err", err)
		if errors.Is(err, upstream.ErrHS256) {
			b.hs256Once.Do(func() { b.log.ErrorContext(ctx, upstream.Advice(err)) })
			return nil, oidc.ErrServerError().WithDescription("the sign-in service is misconfigured: its ID tokens are signed with HS256, usher needs RS256")
		}
		return nil, oidc.ErrAccessDenied().WithDescription("the sign-in could not be verified")
	}
	if id.UserinfoErr != nil {
		b.log.WarnContext(ctx, "upstream userinfo failed; signing in with the ID token's claims", "err", id.UserinfoErr)
	}
	return id, nil
}

// upstreamError forwards the upstream's OIDC error code when it is one the
// SPA should see as such; anything else becomes access_denied.
func upstreamError(code, desc string) *oidc.Error {
	desc = clip(desc, 300)
	switch code {
	case "login_required":
		return oidc.ErrLoginRequired().WithDescription("%s", desc)
	case "interaction_required", "consent_required", "account_selection_required":
		return oidc.ErrInteractionRequired().WithDescription("%s: %s", code, desc)
	case "access_denied", "unauthorized":
		// Auth0 Rules' UnauthorizedError arrives as error=unauthorized, which
		// is no OIDC code; its description is meant for the person.
		return oidc.ErrAccessDenied().WithDescription("%s", desc)
	case "server_error":
		return oidc.ErrServerError().WithDescription("%s", desc)
	case "temporarily_unavailable":
		return &oidc.Error{ErrorType: "temporarily_unavailable", Description: desc}
	}
	return oidc.ErrAccessDenied().WithDescription("the sign-in service refused the request")
}
