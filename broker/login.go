package broker

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"

	"github.com/usher-oidc/usher/sessions"
)

// handleLogin is the login step of the authorization request `id`: answered
// from usher's own session when it can (session.go), else the upstream leg.
func (b *Broker) handleLogin(w http.ResponseWriter, r *http.Request) {
	r, ar, err := b.loginReads(r)
	ctx := r.Context()
	if err != nil {
		if errors.Is(err, sessions.ErrNotFound) {
			b.renderPage(w, r, http.StatusBadRequest, page{Key: "signin.stale"})
			return
		}
		b.unavailable(w, r, "loading the authorization request", err)
		return
	}
	if ar.Done {
		b.renderPage(w, r, http.StatusBadRequest, page{Key: "login.done"})
		return
	}
	sess, err := b.browser.Get(r, b.cookie)
	if err != nil {
		b.unavailable(w, r, "loading the browser session", err)
		return
	}
	_, again := sess.Values[upstreamAgainPrefix+ar.ID] // answerFromSession drops it
	if b.answerFromSession(w, r, sess, ar) {
		return
	}
	// Upstream: the login state is kept with the request's record
	// (keepLoginState stores the request if /authorize left it unstored).
	if err := b.upstream.Ready(ctx); err != nil {
		b.log.ErrorContext(ctx, "upstream discovery failed", "err", err)
		b.authError(w, r, ar, oidc.ErrServerError().WithDescription("the sign-in service is unreachable; try again shortly"))
		return
	}
	nonce, verifier := randomToken(24), randomToken(32)
	state, ok := b.keepLoginState(w, r, sess, ar, nonce, verifier, again)
	if !ok {
		return
	}
	hints := b.invitationHints(ctx, ar)
	http.Redirect(w, r, b.upstreamLoginURL(ar, state, nonce, verifier, hints), http.StatusFound)
}

// loginReads reads the auth request and, when the browser has one, its
// session in one round trip; New finds the session read (preloadSession).
// When /authorize runs this step for the request it just stored, both come
// from that request instead (inlineLogin).
func (b *Broker) loginReads(r *http.Request) (*http.Request, *sessions.AuthRequest, error) {
	arID := r.URL.Query().Get("id")
	if r, ar, ok := b.inlineLogin(r, arID); ok {
		return r, ar, nil
	}
	sid, cookie := b.browser.cookieSession(r, b.cookie)
	if arID == "" || sid == "" {
		ar, err := b.clientAuthRequest(r.Context(), arID)
		return r, ar, err
	}
	read, err := sessions.RunTogether(r.Context(), b.sessions, sessions.Together{GetAuthRequest: arID, GetSession: sid})
	if err != nil {
		return r, nil, err
	}
	ar, err := clientOnly(read.AuthRequest, read.AuthRequestErr)
	return preloadSession(r, cookie, sid, read.Session, read.SessionErr), ar, err
}

func prunePending(values map[any]any, now time.Time) {
	n := 0
	for k, v := range values {
		ks, _ := k.(string)
		if !strings.HasPrefix(ks, pendingPrefix) {
			continue
		}
		var p pendingLogin
		if s, _ := v.(string); jsonParse(s, &p) != nil || now.After(p.Expires) {
			delete(values, k)
			continue
		}
		n++
	}
	// Bound the session size: at most 10 sign-ins in flight per browser.
	if n >= 10 {
		for k := range values {
			if ks, _ := k.(string); strings.HasPrefix(ks, pendingPrefix) {
				delete(values, k)
			}
		}
	}
}
