package broker

import (
	"context"

	gsessions "github.com/gorilla/sessions"

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
