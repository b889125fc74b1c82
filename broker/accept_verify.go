package broker

import (
	"context"
	"crypto/subtle"
	"errors"
	"net/http"
	"net/url"
	"time"

	gsessions "github.com/gorilla/sessions"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/sessions"
)

// "Verify your email, then continue": a person pressed Accept with an
// account whose email matches the invitation's policy but is not verified
// yet (an Auth0 database sign-up before the verification mail was
// followed). usher records that in the invitation (grants.AwaitVerification,
// server-side: verifying may take days, in another browser) and shows this
// page, with
//   - "Continue": asks the upstream afresh whether the email is verified
//     now — the Management API (upstream.EmailVerification) or, without
//     it, a new upstream round trip (usher's own session would answer from
//     the sign-in that showed the page) — and redeems once it is;
//   - "Resend verification email" (upstream.EmailVerification only);
//   - "Not now": the sign-in continues without the invitation, which stays
//     pending and awaiting (never blocking).
//
// Any later sign-in of that user through the upstream, in any browser,
// offers the invitation again once the email is verified (the accept page:
// the person sees which account receives it before it binds).
const (
	pathVerify   = "/invitation/verify"
	verifyPrefix = acceptPrefix + "verify:" // + auth request ID or verifyLinkID → acceptState (pruned with the accept pages)
	verifyLinkID = "link"                   // the page of a flowLink accept (no auth request)
	// upstreamAgainPrefix + auth request ID: its next login step goes to
	// the upstream even though this browser has an usher session.
	upstreamAgainPrefix = "upstream-again:"
	verifyTTL           = time.Hour
	resendInterval      = time.Minute

	// The verify page's notes: message catalog keys.
	noteStillUnverified = "verify.note.still_unverified"
	noteResent          = "verify.note.resent"
	noteResendFailed    = "verify.note.resend_failed"
)

func verifyState(inv *grants.Invitation, clientID string, acct signedInAccount, note string) acceptState {
	return acceptState{Hash: inv.TokenHash, ClientID: clientID, Invited: inv.Email, Account: acct.Email, UserID: acct.UserID, Message: note}
}

// awaitVerification records that acct accepted the invitation before
// verifying its email, then shows the verify page (id: the auth request,
// or verifyLinkID); a refusal is shown as after Accept.
func (b *Broker) awaitVerification(w http.ResponseWriter, r *http.Request, sess *gsessions.Session, id, hash, clientID string, acct signedInAccount) {
	inv, err := b.invitations.AwaitVerification(r.Context(), hash, grants.Redeemer{UserID: acct.UserID,
		Identity: acct.Issuer + "|" + acct.Subject, Email: acct.Email, EmailVerified: acct.EmailVerified})
	if err == nil && !(inv != nil && inv.AwaitsVerificationBy(acct.UserID, b.now())) {
		err = grants.ErrInvitationRedeemed // moved on meanwhile (CheckHash said nothing else)
	}
	if err != nil {
		b.log.WarnContext(r.Context(), "invitation cannot await verification", "user_id", acct.UserID, "err", err)
		b.verifyRefused(w, r, sess, b.verifyAuthRequest(r.Context(), id, acct), clientID, acct, inv, err)
		return
	}
	b.log.InfoContext(r.Context(), "invitation awaits email verification", "invitation_id", inv.ID, "user_id", acct.UserID)
	b.showVerify(w, r, sess, id, verifyState(inv, clientID, acct, ""))
}

// showVerify remembers the verify page in the session and redirects to it
// (a reload shows it again).
func (b *Broker) showVerify(w http.ResponseWriter, r *http.Request, sess *gsessions.Session, id string, st acceptState) {
	pruneAcceptPages(sess.Values, b.now())
	st.CSRF, st.Expires = randomToken(24), b.now().Add(verifyTTL)
	enc, err := jsonString(st)
	if err != nil {
		b.unavailable(w, r, "saving the browser session", err)
		return
	}
	sess.Values[verifyPrefix+id] = enc
	if err := sess.Save(r, w); err != nil {
		b.unavailable(w, r, "saving the browser session", err)
		return
	}
	http.Redirect(w, r, b.url(pathVerify+"?id="+url.QueryEscape(id)), http.StatusSeeOther)
}

// verifyPage reads the verify page id of this browser's signed-in account.
func (b *Broker) verifyPage(sess *gsessions.Session, id string) (acceptState, signedInAccount, bool) {
	raw, _ := sess.Values[verifyPrefix+id].(string)
	acct, signedIn := sessionAccount(sess)
	var st acceptState
	if id == "" || raw == "" || !signedIn || jsonParse(raw, &st) != nil || b.now().After(st.Expires) || st.UserID != acct.UserID {
		return acceptState{}, acct, false
	}
	return st, acct, true
}

type verifyView struct {
	chrome
	Invited, Account, Note string // Note: a catalog key
	AppName                string
	ID, CSRF               string
	CanResend              bool
}

func (b *Broker) handleVerifyPage(w http.ResponseWriter, r *http.Request) {
	sess, err := b.browser.Get(r, b.cookie)
	if err != nil {
		b.unavailable(w, r, "loading the browser session", err)
		return
	}
	id := r.URL.Query().Get("id")
	st, acct, ok := b.verifyPage(sess, id)
	if !ok {
		b.renderPage(w, r, http.StatusBadRequest, page{Key: "verify.expired"})
		return
	}
	v := verifyView{chrome: b.chromeFor(r, "", st.ClientID), Invited: st.Invited, Account: st.Account, Note: st.Message, AppName: b.appName(st.ClientID),
		ID: id, CSRF: st.CSRF, CanResend: b.canAskUpstream(acct)}
	b.setFormCSP(w, st.ClientID)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_ = verifyTmpl.Execute(w, v)
}

// canAskUpstream: the upstream can be asked about acct's email directly.
func (b *Broker) canAskUpstream(acct signedInAccount) bool {
	return b.caps.verify != nil && acct.Issuer == b.upstream.Issuer()
}

// handleVerifyAnswer is the verify page's form: continue or resend.
func (b *Broker) handleVerifyAnswer(w http.ResponseWriter, r *http.Request) {
	sess, ok := b.pageForm(w, r, "accept.refused")
	if !ok {
		return
	}
	id := r.PostForm.Get("id")
	st, acct, ok := b.verifyPage(sess, id)
	if !ok || subtle.ConstantTimeCompare([]byte(st.CSRF), []byte(r.PostForm.Get("csrf"))) != 1 {
		b.renderPage(w, r, http.StatusBadRequest, page{Key: "verify.expired"})
		return
	}
	if r.PostForm.Get("action") == actionLater {
		b.verifyLater(w, r, sess, id, st, acct)
		return
	}
	if r.PostForm.Get("action") == "resend" && b.canAskUpstream(acct) {
		st.Message = noteResent
		if b.now().Before(st.Resent.Add(resendInterval)) { // one mail a minute: each is an Auth0 mail
			b.showVerify(w, r, sess, id, st)
			return
		}
		st.Resent = b.now()
		if err := b.caps.verify.ResendVerification(r.Context(), acct.Subject); err != nil {
			b.log.WarnContext(r.Context(), "resending the verification email", "user_id", acct.UserID, "err", err)
			st.Message = noteResendFailed
		}
		b.showVerify(w, r, sess, id, st)
		return
	}
	b.continueVerified(w, r, sess, id, st, acct)
}

// continueVerified asks the upstream afresh and redeems once the email is
// verified; otherwise the page again, with a note.
func (b *Broker) continueVerified(w http.ResponseWriter, r *http.Request, sess *gsessions.Session, id string, st acceptState, acct signedInAccount) {
	ctx := r.Context()
	verified, err := b.freshEmailVerified(ctx, acct)
	if err == nil && !verified { // the commonest click: nothing more to read
		st.Message = noteStillUnverified
		b.showVerify(w, r, sess, id, st)
		return
	}
	ar := b.verifyAuthRequest(ctx, id, acct)
	if err != nil { // the upstream itself must say: a new round trip
		b.upstreamAgain(w, r, sess, id, st, ar)
		return
	}
	delete(sess.Values, verifyPrefix+id)
	acct.EmailVerified = true
	rememberAccount(sess, acct)
	b.refreshEmailVerified(ctx, acct)
	if _, err := b.redeem(r, st.Hash, acct); err != nil {
		b.verifyRefused(w, r, sess, ar, st.ClientID, acct, nil, err)
		return
	}
	if ar != nil {
		b.completeAuthorization(w, r, sess, ar)
		return
	}
	if err := sess.Save(r, w); err != nil {
		b.unavailable(w, r, "saving the browser session", err)
		return
	}
	http.Redirect(w, r, b.continueURL(st.ClientID, acct.Email), http.StatusSeeOther)
}

// verifyLater continues the sign-in without the invitation; it still
// awaits the verification (a later sign-in offers it).
func (b *Broker) verifyLater(w http.ResponseWriter, r *http.Request, sess *gsessions.Session, id string, st acceptState, acct signedInAccount) {
	delete(sess.Values, verifyPrefix+id)
	if ar := b.verifyAuthRequest(r.Context(), id, acct); ar != nil {
		ar.InvitationHash = ""
		b.completeAuthorization(w, r, sess, ar)
		return
	}
	if err := sess.Save(r, w); err != nil {
		b.unavailable(w, r, "saving the browser session", err)
		return
	}
	http.Redirect(w, r, b.continueURL(st.ClientID, ""), http.StatusSeeOther)
}

var (
	// errNoFreshAnswer: the upstream cannot be asked directly.
	errNoFreshAnswer = errors.New("the upstream cannot be asked whether the email is verified")
	// errEmailChanged: the upstream account has another email by now.
	errEmailChanged = errors.New("the upstream account's email changed since the sign-in")
)

// freshEmailVerified is the upstream's email_verified for acct now.
func (b *Broker) freshEmailVerified(ctx context.Context, acct signedInAccount) (bool, error) {
	if !b.canAskUpstream(acct) {
		return false, errNoFreshAnswer
	}
	email, verified, err := b.caps.verify.EmailVerified(ctx, acct.Subject)
	if err != nil {
		b.log.WarnContext(ctx, "reading email_verified from the upstream; asking through a sign-in", "user_id", acct.UserID, "err", err)
	}
	// Verified is about the account's email now: another address than the
	// one accepted with verifies nothing here (a new sign-in tells).
	if err == nil && !grants.SameEmail(email, acct.Email) {
		return false, errEmailChanged
	}
	return verified, err
}

// refreshEmailVerified stores what the upstream just said on the user's
// profile (the ID tokens' email_verified), as the next sign-in would. The
// identity is the upstream's own (canAskUpstream), stored under StoreIssuer.
func (b *Broker) refreshEmailVerified(ctx context.Context, acct signedInAccount) {
	_, created, err := b.grants.ResolveIdentity(ctx, grants.Identity{Issuer: b.upstream.StoreIssuer(), Subject: acct.Subject,
		Connection: acct.Connection, Email: acct.Email, EmailVerified: true},
		grants.Profile{Email: acct.Email, EmailVerified: true}, newUserID(), b.now())
	if err != nil || created {
		b.log.WarnContext(ctx, "storing the verified email on the profile", "user_id", acct.UserID, "created", created, "err", err)
	}
}

// verifyAuthRequest is the pending authorization the page belongs to, nil
// for a flowLink page or one whose authorization expired.
func (b *Broker) verifyAuthRequest(ctx context.Context, id string, acct signedInAccount) *sessions.AuthRequest {
	if id == verifyLinkID {
		return nil
	}
	ar, err := b.clientAuthRequest(ctx, id)
	if err != nil || ar.Done || ar.Subject != acct.UserID || ar.InvitationHash == "" {
		return nil
	}
	return ar
}

// upstreamAgain sends the person through the upstream once more, whose ID
// token then says whether the email is verified now: the authorization
// when it is still pending (its callback offers the invitation again),
// else the app's sign-in without usher's session (the callback finds the
// invitation awaiting this user).
func (b *Broker) upstreamAgain(w http.ResponseWriter, r *http.Request, sess *gsessions.Session, id string, st acceptState, ar *sessions.AuthRequest) {
	delete(sess.Values, verifyPrefix+id)
	if ar != nil {
		ar.Subject = ""
		if err := b.saveAuthRequest(r.Context(), ar); err != nil {
			b.unavailable(w, r, "saving the authorization request", err)
			return
		}
		sess.Values[upstreamAgainPrefix+ar.ID] = "1"
		if err := sess.Save(r, w); err != nil {
			b.unavailable(w, r, "saving the browser session", err)
			return
		}
		http.Redirect(w, r, b.loginURL(ar.ID), http.StatusSeeOther)
		return
	}
	forgetAccount(sess)
	if err := sess.Save(r, w); err != nil {
		b.unavailable(w, r, "saving the browser session", err)
		return
	}
	http.Redirect(w, r, b.continueURL(st.ClientID, st.Account), http.StatusSeeOther)
}

// verifyRefused explains an invitation that can no longer be redeemed
// (expired, withdrawn meanwhile…): the problem page of the pending
// authorization ar (verifyAuthRequest), else, nil, the refusal page.
func (b *Broker) verifyRefused(w http.ResponseWriter, r *http.Request, sess *gsessions.Session, ar *sessions.AuthRequest, clientID string, acct signedInAccount, inv *grants.Invitation, cause error) {
	if ar != nil {
		b.showProblem(w, r, sess, ar, inv, acct, cause)
		return
	}
	if err := sess.Save(r, w); err != nil {
		b.unavailable(w, r, "saving the browser session", err)
		return
	}
	b.renderRefusal(w, r, cause, b.continueURL(clientID, ""), "problem.continue")
}

// awaitedInvitation is, for a sign-in through the upstream whose email is
// verified, the token hash of an invitation this user accepted before
// verifying it ("" when none): the callback offers it again.
func (b *Broker) awaitedInvitation(ctx context.Context, userID string, verified bool) string {
	if !verified {
		return ""
	}
	invs, err := b.invitations.AwaitingVerificationOf(ctx, userID)
	if err != nil {
		b.log.WarnContext(ctx, "looking up invitations awaiting verification", "user_id", userID, "err", err)
		return ""
	}
	if len(invs) == 0 {
		return ""
	}
	return invs[0].TokenHash
}

// sessionAwaited is, for an authorization answered from usher's session
// whose account was unverified at its sign-in, the token hash of an
// invitation it accepted before verifying, once the upstream says now that
// the email is verified ("" otherwise); askUpstream when only a new
// upstream round trip can tell (the callback then looks again). Accounts
// signed in verified never get here, so the common session answer costs
// no lookup.
func (b *Broker) sessionAwaited(ctx context.Context, sess *gsessions.Session, acct *signedInAccount) (hash string, askUpstream bool) {
	hash = b.awaitedInvitation(ctx, acct.UserID, true)
	if hash == "" {
		return "", false
	}
	verified, err := b.freshEmailVerified(ctx, *acct)
	switch {
	case err != nil:
		return "", true
	case !verified:
		return "", false
	}
	acct.EmailVerified = true
	rememberAccount(sess, *acct)
	b.refreshEmailVerified(ctx, *acct)
	return hash, false
}

var verifyTmpl = pageTemplate("verify", `{{define "title"}}{{.T.Text "verify.title"}}{{end}}{{template "top" .}}
<h1 id="title">{{.T.Text "verify.title"}}</h1>
<p id="invited">{{.T.HTML "verify.invited" "app" .AppName "email" .Invited}}</p>
<p id="account">{{.T.HTML "verify.account" "email" .Account}}</p>
{{if .Note}}<p class="warn" id="note" role="status">{{.T.Text .Note}}</p>{{end}}
<form method="post" action="/invitation/verify">
<input type="hidden" name="id" value="{{.ID}}"><input type="hidden" name="csrf" value="{{.CSRF}}">
<button class="primary" id="continue" name="action" value="continue">{{.T.Text "verify.continue"}}</button>
{{if .CanResend}}<button id="resend" name="action" value="resend">{{.T.Text "verify.resend"}}</button>{{end}}
<button id="later" name="action" value="later">{{.T.Text "accept.later"}}</button>
</form>
{{template "bottom" .}}`)
