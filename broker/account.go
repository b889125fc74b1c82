package broker

import (
	"time"

	gsessions "github.com/gorilla/sessions"

	"github.com/usher-oidc/usher/broker/upstream"
	"github.com/usher-oidc/usher/sessions"
)

// sessionAccountKey holds, in the browser session, the account this browser
// signed in with: the accept page names it, and a redemption needs it.
const sessionAccountKey = "account"

// signedInAccount is who signed in, as the upstream said at the callback.
type signedInAccount struct {
	UserID     string `json:"u"`
	Issuer     string `json:"i"`
	Subject    string `json:"s"`
	Connection string `json:"c,omitempty"`
	// ConnectionSource: where Connection came from (upstream.ConnectionFrom*).
	ConnectionSource string `json:"cs,omitempty"`
	Email            string `json:"e,omitempty"`
	EmailVerified    bool   `json:"v,omitempty"`
	New              bool   `json:"n,omitempty"` // the usher user was created by that sign-in
	// AuthTime and AMR are the upstream's, for the ID tokens usher issues
	// from this session without asking the upstream again.
	AuthTime int64    `json:"t,omitempty"`
	AMR      []string `json:"m,omitempty"`
	// SignedInAt (unix ms) is when usher made this session: a sign out
	// everywhere ends the sessions made up to then.
	SignedInAt int64 `json:"at,omitempty"`
	// UpstreamSID is the upstream's session (its ID token's sid), sent as
	// logout_hint when the session ends.
	UpstreamSID string `json:"us,omitempty"`
	// Upstream: the upstream sub and copied claims, for the tokens issued
	// from this session (see sessions.Upstream).
	Upstream *sessions.Upstream `json:"up,omitempty"`
}

func accountOf(userID string, created bool, id *upstream.Identity, authTime, now time.Time) signedInAccount {
	return signedInAccount{SignedInAt: now.UnixMilli(), UserID: userID, Issuer: id.Issuer, Subject: id.Subject, Connection: id.Connection,
		ConnectionSource: id.ConnectionSource, Email: id.Email, EmailVerified: id.EmailVerified, New: created,
		AuthTime: authTime.Unix(), AMR: id.AMR, UpstreamSID: id.SessionID,
		Upstream: &sessions.Upstream{Subject: id.Subject, Claims: id.Claims}}
}

// identity is the account as the redemption hook and the mirror see it.
func (a signedInAccount) identity() *upstream.Identity {
	return &upstream.Identity{Issuer: a.Issuer, Subject: a.Subject, Connection: a.Connection, ConnectionSource: a.ConnectionSource, Email: a.Email, EmailVerified: a.EmailVerified}
}

// rememberAccount writes the account into the session (the caller saves it).
func rememberAccount(sess *gsessions.Session, a signedInAccount) {
	enc, _ := jsonString(a)
	sess.Values["uid"] = a.UserID
	sess.Values[sessionAccountKey] = enc
	delete(sess.Values, reloginKey) // that fresh login happened
}

// forgetAccount takes the account out of the session (the caller saves it).
func forgetAccount(sess *gsessions.Session) {
	delete(sess.Values, "uid")
	delete(sess.Values, sessionAccountKey)
}

// sessionAccount is the account of a signed-in browser session.
func sessionAccount(sess *gsessions.Session) (signedInAccount, bool) {
	raw, _ := sess.Values[sessionAccountKey].(string)
	uid, _ := sess.Values["uid"].(string)
	return accountFrom(raw, uid)
}

// recordAccount is sessionAccount of a stored session record (nil: none).
func recordAccount(rec *sessions.BrowserSession) (signedInAccount, bool) {
	if rec == nil {
		return signedInAccount{}, false
	}
	return accountFrom(rec.Values[sessionAccountKey], rec.Values["uid"])
}

func accountFrom(raw, uid string) (signedInAccount, bool) {
	var a signedInAccount
	if raw == "" || jsonParse(raw, &a) != nil || a.UserID == "" || a.UserID != uid {
		return signedInAccount{}, false
	}
	return a, true
}
