package broker

import (
	"crypto/subtle"
	"errors"
	"net/http"
	"net/url"
	"strings"

	gsessions "github.com/gorilla/sessions"
	"github.com/zitadel/oidc/v3/pkg/oidc"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/sessions"
)

// The invitation problem page: why an invitation carried by a sign-in could
// not be applied (sent to another email, used, expired, withdrawn,
// declined, refused by the redemption hook). The upstream callback (or the
// accept page's answer) does not render it itself: it remembers it in the
// browser session and redirects to /invitation/problem?id=<auth request>,
// so a reload shows the page again instead of replaying /callback?code=…
// (a dead end). The page offers:
//   - "Use another account" (email mismatch only): the authorization goes
//     upstream again with prompt=login and the invited email as login_hint,
//     as the accept page's "other" answer does, carrying the invitation;
//   - "Continue without the invitation": /login/continue finishes the
//     sign-in with the account that signed in;
//   - "Back to <app>": the app's initiate_login_uri (or first redirect
//     origin), signed in nowhere.
const (
	pathProblem   = "/invitation/problem"
	problemPrefix = acceptPrefix + "problem:" // + auth request ID → acceptState (pruned with the accept pages)
)

// showProblem finishes ar without its invitation (for /login/continue from
// this browser only), remembers the problem in the session and redirects
// the browser to the problem page.
func (b *Broker) showProblem(w http.ResponseWriter, r *http.Request, sess *gsessions.Session, ar *sessions.AuthRequest, inv *grants.Invitation, acct signedInAccount, cause error) {
	st := acceptState{Hash: ar.InvitationHash, ClientID: ar.ClientID, Message: refusalMessage(b.chromeFor(r, ar.UILocales).T, cause), Account: acct.Email}
	if inv != nil {
		st.Invited = inv.Email
		if st.ClientID == "" {
			st.ClientID = b.invitationClientID(inv, "")
		}
	}
	if errors.Is(cause, grants.ErrEmailMismatch) && inv != nil {
		st.Mismatch = true
		st.Message = mismatchMessage(inv, acct)
	}
	ar.InvitationHash, ar.Done = "", true
	if err := b.saveAuthRequest(r.Context(), ar); err != nil {
		b.unavailable(w, r, "completing the authorization request", err)
		return
	}
	pruneAcceptPages(sess.Values, b.now())
	st.CSRF, st.Expires = randomToken(24), b.now().Add(acceptTTL)
	enc, err := jsonString(st)
	if err != nil {
		b.unavailable(w, r, "saving the browser session", err)
		return
	}
	sess.Values[problemPrefix+ar.ID] = enc
	// The person may continue without the invitation, from this browser only.
	sess.Values[continuePrefix+ar.ID] = "1"
	if err := sess.Save(r, w); err != nil {
		b.unavailable(w, r, "saving the browser session", err)
		return
	}
	http.Redirect(w, r, b.url(pathProblem+"?id="+url.QueryEscape(ar.ID)), http.StatusSeeOther)
}

// mismatchMessage names both addresses and says, once, what would work.
func mismatchMessage(inv *grants.Invitation, acct signedInAccount) string {
	switch {
	case inv.EmailMatch == grants.MatchDomain:
		domain := inv.Email[strings.LastIndex(inv.Email, "@")+1:]
		return "This invitation can only go to an account with a verified address at " + domain + "."
	}
	return "This invitation can only go to an account with that verified address."
}

// problemState reads the problem page of auth request id from the session.
func (b *Broker) problemState(sess *gsessions.Session, id string) (acceptState, bool) {
	raw, _ := sess.Values[problemPrefix+id].(string)
	var st acceptState
	if id == "" || raw == "" || jsonParse(raw, &st) != nil || b.now().After(st.Expires) {
		return acceptState{}, false
	}
	return st, true
}

type problemView struct {
	chrome
	Message          string
	Invited, Account string
	Mismatch         bool
	ID, CSRF         string
	ContinueURL      string
	AppName, BackURL string
}

// handleProblem shows the problem page remembered for this browser.
func (b *Broker) handleProblem(w http.ResponseWriter, r *http.Request) {
	sess, err := b.browser.Get(r, b.cookie)
	if err != nil {
		b.unavailable(w, r, "loading the browser session", err)
		return
	}
	id := r.URL.Query().Get("id")
	st, ok := b.problemState(sess, id)
	if !ok || sess.Values[continuePrefix+id] != "1" {
		b.renderPage(w, r, http.StatusBadRequest, page{Key: "signin.stale"})
		return
	}
	v := problemView{Message: st.Message, Invited: st.Invited, Account: st.Account, Mismatch: st.Mismatch,
		ID: id, CSRF: st.CSRF, ContinueURL: b.url("/login/continue?id=" + url.QueryEscape(id)),
		AppName: b.appName(st.ClientID), BackURL: b.continueURL(st.ClientID, "")}
	v.chrome = b.chromeFor(r, "", st.ClientID)
	// "Use another account" posts here and is redirected to the upstream.
	b.setFormCSP(w, st.ClientID)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_ = problemTmpl.Execute(w, v)
}

// handleProblemAnswer is "Use another account" on the problem page of an
// email mismatch: the authorization goes upstream again with the invitation.
func (b *Broker) handleProblemAnswer(w http.ResponseWriter, r *http.Request) {
	sess, ok := b.pageForm(w, r, "problem.refused")
	if !ok {
		return
	}
	id := r.PostForm.Get("id")
	st, ok := b.problemState(sess, id)
	acct, signedIn := sessionAccount(sess)
	if !ok || !signedIn || !st.Mismatch || r.PostForm.Get("action") != actionOther ||
		subtle.ConstantTimeCompare([]byte(st.CSRF), []byte(r.PostForm.Get("csrf"))) != 1 {
		b.renderPage(w, r, http.StatusBadRequest, page{Key: "problem.expired"})
		return
	}
	ar, err := b.clientAuthRequest(r.Context(), id)
	if storeDown(err) {
		b.unavailable(w, r, "loading the authorization request", err)
		return
	}
	if err != nil || !ar.Done || ar.Subject != acct.UserID {
		b.renderPage(w, r, http.StatusBadRequest, page{Key: "signin.stale"})
		return
	}
	delete(sess.Values, problemPrefix+id)
	delete(sess.Values, continuePrefix+id)
	ar.InvitationHash, ar.Done = st.Hash, false
	b.signInAgain(w, r, sess, ar, st.Invited)
}

// signInAgain sends ar upstream again, asking for a fresh login with the
// invited email (the accept page's and the problem page's "Use another
// account").
func (b *Broker) signInAgain(w http.ResponseWriter, r *http.Request, sess *gsessions.Session, ar *sessions.AuthRequest, invitedEmail string) {
	// The app's screen_hint was for the first attempt; the upstream now
	// picks its screen for the invited email (invitationHints).
	ar.Subject, ar.Prompt, ar.ScreenHint = "", []string{oidc.PromptLogin}, ""
	if invitedEmail != "" {
		ar.LoginHint = invitedEmail
	}
	if err := b.saveAuthRequest(r.Context(), ar); err != nil {
		b.unavailable(w, r, "saving the authorization request", err)
		return
	}
	if err := sess.Save(r, w); err != nil {
		b.unavailable(w, r, "saving the browser session", err)
		return
	}
	http.Redirect(w, r, b.loginURL(ar.ID), http.StatusSeeOther)
}

var problemTmpl = pageTemplate("problem", `{{define "title"}}{{.T.Text "problem.title"}} · {{.App}}{{end}}{{template "top" .}}
<h1 id="title">{{.T.Text "problem.title"}}</h1>
{{if .Mismatch}}<p id="invited">{{.T.HTML "problem.invited" "email" .Invited}}</p>
<p id="account">{{.T.HTML "problem.account" "account" (or .Account (.T.Text "accept.no_email"))}}</p>{{end}}
<p id="message">{{.Message}}</p>
{{if .Mismatch}}<form method="post" action="/invitation/problem">
<input type="hidden" name="id" value="{{.ID}}"><input type="hidden" name="csrf" value="{{.CSRF}}">
<button class="primary" id="other" name="action" value="other">{{.T.Text "accept.other"}}</button></form>{{end}}
<a class="button{{if not .Mismatch}} primary{{end}}" id="continue" href="{{.ContinueURL}}">{{.T.Text "problem.continue"}}</a>
<a class="button" id="back" href="{{.BackURL}}">{{.T.Text "problem.back" "app" .AppName}}</a>
{{template "bottom" .}}`)
