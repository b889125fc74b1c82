package broker

import (
	"context"
	"net/http"
	"net/url"

	gsessions "github.com/gorilla/sessions"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/usher-oidc/usher/sessions"
)

// sidKey holds, in the browser session's server-side values, a random ID
// that names the session for sign-out. The storage ID cannot serve: it is
// renewed at every sign-in (session fixation), and the link to the refresh
// tokens issued earlier must survive that.
const sidKey = "sid"

// bindSignIn records the browser session on a completed authorization
// request: its ID token carries it as `sid`, and the refresh tokens of
// public clients issued from it end with the session (CreateAccessAndRefreshTokens).
func (b *Broker) bindSignIn(sess *gsessions.Session, ar *sessions.AuthRequest) {
	sid, _ := sess.Values[sidKey].(string)
	if sid == "" {
		sid = randomToken(24)
		sess.Values[sidKey] = sid
	}
	ar.SessionID = sid
}

// revokeSessionTokens revokes every refresh-token family (and so its access
// tokens) issued through the browser session.
func (b *Broker) revokeSessionTokens(ctx context.Context, sess *gsessions.Session) error {
	sid, _ := sess.Values[sidKey].(string)
	if sid == "" {
		return nil
	}
	// No family outlives its absolute lifetime: revoking that long covers all.
	err := b.sessions.RevokeSessionFamilies(ctx, sid, b.now().Add(b.opts.Tokens.RefreshAbsolute))
	return storeError("revoking the session's tokens", err)
}

type httpPair struct {
	w http.ResponseWriter
	r *http.Request
}

func (b *Broker) handleEndSession(w http.ResponseWriter, r *http.Request) {
	ctx := context.WithValue(r.Context(), ctxHTTP, httpPair{w, r})
	b.opServer.ServeHTTP(w, r.WithContext(ctx))
}

// handleAuth0Logout is Auth0's /v2/logout (client_id, returnTo), which
// Auth0's SPA SDK calls, mapped onto RP-initiated logout.
func (b *Broker) handleAuth0Logout(w http.ResponseWriter, r *http.Request) {
	q := url.Values{}
	q.Set("client_id", r.URL.Query().Get("client_id"))
	if rt := r.URL.Query().Get("returnTo"); rt != "" {
		q.Set("post_logout_redirect_uri", rt)
	}
	r2 := r.Clone(r.Context())
	r2.URL.Path = pathEndSession
	r2.URL.RawQuery = q.Encode()
	r2.RequestURI = r2.URL.RequestURI()
	b.handleEndSession(w, r2)
}

// endSession clears usher's browser session and sends the browser through the
// upstream's logout (when it has one) before returning to the client.
func (b *Broker) endSession(ctx context.Context, req *op.EndSessionRequest) (string, error) {
	final := req.RedirectURI
	upstreamSID := ""
	if hp, ok := ctx.Value(ctxHTTP).(httpPair); ok {
		if sess, err := b.browser.Get(hp.r, b.cookie); err == nil {
			if acct, ok := sessionAccount(sess); ok {
				upstreamSID = acct.UpstreamSID
			}
			if err := b.revokeSessionTokens(ctx, sess); err != nil {
				return "", err
			}
			sess.Options.MaxAge = -1
			if err := sess.Save(hp.r, hp.w); err != nil {
				b.log.ErrorContext(ctx, "ending browser session", "err", err)
			}
		}
	}
	token, err := b.browser.codec.Encode("logout", final)
	if err != nil {
		return "", oidc.ErrServerError().WithParent(err)
	}
	if up := b.upstreamLogoutURL(ctx, token, upstreamSID); up != "" {
		return up, nil
	}
	return b.url("/logout/done?state=" + url.QueryEscape(token)), nil
}

func (b *Broker) handleLogoutDone(w http.ResponseWriter, r *http.Request) {
	var final string
	if err := b.browser.codec.Decode("logout", r.URL.Query().Get("state"), &final); err == nil && final != "" {
		// final was validated against the client's registered post-logout URIs.
		http.Redirect(w, r, final, http.StatusFound)
		return
	}
	b.renderPage(w, r, http.StatusOK, page{Key: "signout.done"})
}
