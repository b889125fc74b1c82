package broker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	gsessions "github.com/gorilla/sessions"

	"github.com/usher-oidc/usher/sessions"
)

// An upstream sign-in is bound to the browser that started it and used
// once. Its state (the nonce and PKCE verifier sent upstream) is kept with
// its auth request (sessions.Store.SaveLoginState) under a key only that
// browser can name: a hash of the state sent upstream and the browser's
// sign-in cookie, a random value (signinCookie). The state names the auth
// request ("<id>.<random>"), so the callback takes the login state and
// reads the request (and the browser session) in one round trip, and the
// take is atomic: of two callbacks with one state, one proceeds.
//
// Where the store cannot keep it (errors.ErrUnsupported: a Redis record
// format some replicas do not read yet), the state goes in the browser
// session as before (pendingLogin, keepInSession); the callback finds
// either. The admin page's sign-in keeps its state the same way, with an
// auth request of its own (adminauth.go).

const (
	signinCookie  = "usher_signin"
	loginStateSep = "." // neither auth request IDs nor session states hold one
)

// loginStateKey is the key the login state for state is kept under, for
// the browser whose sign-in cookie holds binding.
func loginStateKey(state, binding string) string {
	h := sha256.New()
	h.Write([]byte("usher login state\x00" + state + "\x00" + binding))
	return hex.EncodeToString(h.Sum(nil))
}

// signinBinding is the browser's sign-in cookie value, a new one when it
// has none (set by setSigninBinding once the state is kept).
func (b *Broker) signinBinding(r *http.Request) (value string, isNew bool) {
	if c, err := r.Cookie(b.cookieName(signinCookie)); err == nil && len(c.Value) >= 43 {
		return c.Value, false
	}
	return randomToken(32), true
}

func (b *Broker) setSigninBinding(w http.ResponseWriter, value string) {
	http.SetCookie(w, &http.Cookie{Name: b.cookieName(signinCookie), Value: value, Path: "/", MaxAge: b.browser.options.MaxAge,
		HttpOnly: true, Secure: !b.insecure, SameSite: http.SameSiteLaxMode})
}

// keepLoginState keeps the state of the upstream sign-in /login starts for
// ar and returns the state to send upstream: with ar where the store can,
// else in sess (saved). saveSession: sess changed and must be saved either
// way. false: the person got an answer already (a stale request, a store
// failure).
func (b *Broker) keepLoginState(w http.ResponseWriter, r *http.Request, sess *gsessions.Session, ar *sessions.AuthRequest, nonce, verifier string, saveSession bool) (string, bool) {
	state, err := b.saveLoginState(w, r, ar.ID, nonce, verifier)
	switch {
	case errors.Is(err, errors.ErrUnsupported):
		state = b.keepInSession(sess, pendingLogin{AuthRequestID: ar.ID, Nonce: nonce, Verifier: verifier, Expires: ar.ExpiresAt})
		saveSession = true
	case errors.Is(err, sessions.ErrNotFound):
		b.renderPage(w, r, http.StatusBadRequest, page{Key: "signin.stale"})
		return "", false
	case err != nil:
		b.unavailable(w, r, "keeping the sign-in's state", err)
		return "", false
	}
	if saveSession {
		if err := sess.Save(r, w); err != nil {
			b.unavailable(w, r, "saving the browser session", err)
			return "", false
		}
	}
	return state, true
}

// keepInSession keeps a sign-in's state p in the browser session (the
// caller saves it), where the store keeps no login states, and returns
// the state to send upstream.
func (b *Broker) keepInSession(sess *gsessions.Session, p pendingLogin) string {
	state := randomToken(24)
	prunePending(sess.Values, b.now())
	enc, _ := jsonString(p)
	sess.Values[pendingPrefix+state] = enc
	return state
}

// saveLoginState keeps the nonce and verifier of a sign-in started for
// auth request arID with it, under the key of a new state and this
// browser's sign-in cookie (set on w when new), and returns that state:
// the store's error as SaveLoginState answers it otherwise.
func (b *Broker) saveLoginState(w http.ResponseWriter, r *http.Request, arID, nonce, verifier string) (string, error) {
	binding, isNew := b.signinBinding(r)
	state := arID + loginStateSep + randomToken(24)
	ls := &sessions.LoginState{Nonce: nonce, Verifier: verifier}
	if err := b.keepWithRequest(r.Context(), arID, loginStateKey(state, binding), ls); err != nil {
		return "", err
	}
	if isNew {
		b.setSigninBinding(w, binding)
	}
	return state, nil
}

// keepWithRequest keeps ls under key with the auth request arID: where
// /authorize left the request unstored, the request's creation and the
// state's save go together (one round trip on Redis). A store that keeps
// no login states refuses that with errors.ErrUnsupported having written
// nothing; the request is then stored alone, for the state the browser
// session keeps, and the error returned.
func (b *Broker) keepWithRequest(ctx context.Context, arID, key string, ls *sessions.LoginState) error {
	if c := unstoredRequest(ctx, arID); c != nil {
		_, err := sessions.RunTogether(ctx, b.sessions, sessions.Together{CreateAuthRequest: c.ar,
			SaveLoginState: &sessions.LoginStateSave{LoginStateKey: sessions.LoginStateKey{AuthRequestID: arID, Key: key}, State: ls}})
		switch {
		case err == nil:
			c.unstored = false
		case errors.Is(err, errors.ErrUnsupported):
			if serr := b.storeUnstored(ctx, arID); serr != nil {
				return serr
			}
		}
		return err
	}
	return b.sessions.SaveLoginState(ctx, arID, key, ls)
}

// takeLoginState takes the login state the upstream's answer names, with
// its auth request and the browser session, in one round trip. ok false:
// the state names no auth request (a state kept in the session: the
// caller looks there). Otherwise a page answered already when err is set.
func (b *Broker) takeLoginState(w http.ResponseWriter, r *http.Request, q url.Values) (*http.Request, *sessions.AuthRequest, pendingLogin, bool) {
	state := q.Get("state")
	arID, _, ok := strings.Cut(state, loginStateSep)
	if !ok || arID == "" {
		return r, nil, pendingLogin{}, false
	}
	c, err := r.Cookie(b.cookieName(signinCookie))
	if err != nil {
		b.foreignCallback(w, r)
		return r, nil, pendingLogin{}, true
	}
	sid, cookie := b.browser.cookieSession(r, b.cookie)
	// An upstream error (login_required for every signed-out silent renew)
	// ends the request: the take deletes it, once its state is found.
	ends := q.Get("error") != ""
	read, err := sessions.RunTogether(r.Context(), b.sessions, sessions.Together{
		TakeLoginState: &sessions.LoginStateKey{AuthRequestID: arID, Key: loginStateKey(state, c.Value)}, GetSession: sid,
		EndTakenRequest: ends})
	if err == nil && read.AuthRequestErr != nil && !errors.Is(read.AuthRequestErr, sessions.ErrNotFound) {
		err = read.AuthRequestErr
	}
	switch {
	case err != nil:
		b.unavailable(w, r, "taking the sign-in's state", err)
	case read.AuthRequest == nil:
		b.renderPage(w, r, http.StatusBadRequest, page{Key: "callback.expired"})
	case read.LoginState == nil:
		b.foreignCallback(w, r) // another browser's, or used already
	case read.AuthRequest.Done:
		b.renderPage(w, r, http.StatusBadRequest, page{Key: "login.done"})
	default:
		if sid != "" {
			r = preloadSession(r, cookie, sid, read.Session, read.SessionErr)
		}
		return r, read.AuthRequest, pendingLogin{AuthRequestID: arID, Nonce: read.LoginState.Nonce, Verifier: read.LoginState.Verifier, requestEnded: ends}, true
	}
	return r, nil, pendingLogin{}, true
}

// foreignCallback: the upstream's answer carries a state this browser did
// not start (a forged, replayed or foreign response).
func (b *Broker) foreignCallback(w http.ResponseWriter, r *http.Request) {
	b.log.WarnContext(r.Context(), "upstream callback with a state this browser did not start")
	b.renderPage(w, r, http.StatusBadRequest, page{Key: "callback.foreign"})
}

// clientAuthRequest is sessions.Store.GetAuthRequest for a client's
// authorization request, the only kind a browser may name: another
// purpose's (an admin sign-in's) is ErrNotFound.
func (b *Broker) clientAuthRequest(ctx context.Context, id string) (*sessions.AuthRequest, error) {
	ar, err := b.sessions.GetAuthRequest(ctx, id)
	return clientOnly(ar, err)
}

// clientOnly is ar, err, with a request of another purpose as ErrNotFound.
func clientOnly(ar *sessions.AuthRequest, err error) (*sessions.AuthRequest, error) {
	if err == nil && ar.Purpose != "" {
		return nil, fmt.Errorf("auth request %s is an %s sign-in's: %w", ar.ID, ar.Purpose, sessions.ErrNotFound)
	}
	return ar, err
}
