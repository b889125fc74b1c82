package broker

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"time"

	gsessions "github.com/gorilla/sessions"
	"github.com/zitadel/oidc/v3/pkg/oidc"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/sessions"
)

// usher's own sign-in session (the OP session). After an upstream sign-in,
// the browser session holds the account, the upstream's auth_time and amr,
// and a session ID (sid). An authorization request is then answered from it,
// without an upstream round trip, as any OP answers:
//   - prompt=login, or max_age older than the session's auth_time: upstream
//     again (prompt=none then gets login_required: it cannot interact);
//   - an invitation on the request: the accept page, for the session's account;
//   - otherwise a code at once (also for prompt=none, also in an iframe).
// Without a session, prompt=none with response_mode=web_message (a hidden
// iframe) is answered login_required at once: the upstream's own cookies
// are third-party in that iframe, so asking it cannot succeed.

// answerFromSession answers ar from the browser's usher session when it
// may, and reports whether it answered.
func (b *Broker) answerFromSession(w http.ResponseWriter, r *http.Request, sess *gsessions.Session, ar *sessions.AuthRequest) bool {
	promptNone := slices.Contains(ar.Prompt, oidc.PromptNone)
	acct, signedIn := sessionAccount(sess)
	if signedIn && !b.sessionLive(r, acct) {
		signedIn = false
	}
	switch {
	case !signedIn:
		if promptNone && ar.ResponseMode == responseModeWebMessage {
			b.authError(w, r, ar, oidc.ErrLoginRequired().WithDescription("no usher session in this browser"))
			return true
		}
		return false
	case slices.Contains(ar.Prompt, oidc.PromptLogin) || slices.Contains(ar.Prompt, oidc.PromptSelectAccount):
		return false
	case sess.Values[upstreamAgainPrefix+ar.ID] != nil:
		// "Continue" on the verify page: only the upstream knows whether
		// the email is verified now (the caller saves the session).
		delete(sess.Values, upstreamAgainPrefix+ar.ID)
		return false
	case ar.UpstreamInvitation != "" || !b.sameOrganization(ar.Organization, acct.Upstream):
		// An Auth0 organization invitation, or another organization than the
		// session signed in to: only the upstream can answer.
		return false
	case b.sessionTooOld(ar, acct):
		if promptNone {
			b.authError(w, r, ar, oidc.ErrLoginRequired().WithDescription("the session is older than max_age"))
			return true
		}
		ar.Prompt = append(ar.Prompt, oidc.PromptLogin) // upstream: a fresh login, as max_age asks
		return false
	}
	if ar.InvitationHash == "" && !promptNone && !acct.EmailVerified {
		hash, askUpstream := b.sessionAwaited(r.Context(), sess, &acct)
		if askUpstream {
			return false
		}
		ar.InvitationHash = hash
	}
	ar.Subject, ar.AuthTime, ar.AMR = acct.UserID, time.Unix(acct.AuthTime, 0), acct.AMR
	ar.Upstream = acct.Upstream
	b.bindSignIn(sess, ar)
	b.metrics.logins.WithLabelValues("session", connectionLabel(acct.Connection)).Inc()
	if ar.InvitationHash != "" {
		b.clearInvitationCookie(w)
		b.offerInvitation(w, r, sess, ar, acct)
		return true
	}
	b.completeAuthorization(w, r, sess, ar)
	return true
}

// sessionTooOld: the request's max_age is shorter than the time since the
// session's upstream sign-in.
func (b *Broker) sessionTooOld(ar *sessions.AuthRequest, acct signedInAccount) bool {
	if ar.MaxAge == nil {
		return false
	}
	if *ar.MaxAge == 0 {
		return true // max_age=0: the person must authenticate now (prompt=login)
	}
	age := b.now().Sub(time.Unix(acct.AuthTime, 0))
	return acct.AuthTime == 0 || age > time.Duration(*ar.MaxAge)*time.Second+maxAgeSkew
}

// sessionLive: the session's user may have been erased, or signed out
// everywhere, since this session signed in. The user and grant come from
// the request's claims cache, which /authorize fills with what it read
// beside the session (inlineLogin), else from one store read.
func (b *Broker) sessionLive(r *http.Request, acct signedInAccount) bool {
	ctx := r.Context()
	if c, _ := ctx.Value(ctxClaimsCache).(*claimsCache); c == nil {
		ctx = context.WithValue(ctx, ctxClaimsCache, &claimsCache{})
	}
	_, err := b.user(ctx, acct.UserID)
	var g *grants.Grant
	if err == nil {
		g, err = b.grant(ctx, acct.UserID)
	}
	if err != nil {
		if !isNotFound(err) {
			b.log.WarnContext(r.Context(), "loading the session's user and grant", "err", err)
		}
		return false
	}
	return !g.SignedOut(time.UnixMilli(acct.SignedInAt))
}

func isNotFound(err error) bool { return errors.Is(err, grants.ErrNotFound) }
