package broker

import (
	"errors"
	"net/http"

	gsessions "github.com/gorilla/sessions"
	"github.com/zitadel/oidc/v3/pkg/oidc"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/sessions"
)

// offerInvitation is the callback's last step when the authorization carries
// an invitation: the accept page for the account that just signed in, or,
// when the invitation cannot go to that account, the refusal with a way to
// continue without it.
func (b *Broker) offerInvitation(w http.ResponseWriter, r *http.Request, sess *gsessions.Session, ar *sessions.AuthRequest, acct signedInAccount) {
	ctx := r.Context()
	inv, err := b.acceptRefusal(r, ar.InvitationHash, acct)
	unverified := errors.Is(err, grants.ErrEmailUnverified)
	if err != nil && !unverified {
		b.recordRefusal(r, inv, acct, err)
		b.showProblem(w, r, sess, ar, inv, acct, err)
		return
	}
	// Not done: no code can be issued for it until the person answers.
	if err := b.saveAuthRequest(ctx, ar); err != nil {
		b.unavailable(w, r, "saving the authorization request", err)
		return
	}
	if unverified && inv != nil && inv.AwaitsVerificationBy(acct.UserID, b.now()) {
		// Accepted already, still unverified: back to "verify, then continue".
		b.showVerify(w, r, sess, ar.ID, verifyState(inv, ar.ClientID, acct, noteStillUnverified))
		return
	}
	v, err := b.acceptViewOf(ctx, inv, acct, ar.ClientID)
	if err != nil {
		b.unavailable(w, r, "loading the account's grant", err)
		return
	}
	v.Flow, v.ID, v.Unverified, v.UILocales = flowAuthorize, ar.ID, unverified, ar.UILocales
	if err := b.showAcceptPage(w, r, sess, acceptPrefix+ar.ID, acceptState{}, v); err != nil {
		b.unavailable(w, r, "saving the browser session", err)
	}
}

// answerAuthorize applies the person's answer to the accept page of an
// authorization, then finishes it (or, for another account, restarts its
// upstream leg).
func (b *Broker) answerAuthorize(w http.ResponseWriter, r *http.Request, sess *gsessions.Session, arID string, acct signedInAccount, action string) {
	ctx := r.Context()
	ar, err := b.clientAuthRequest(ctx, arID)
	if storeDown(err) {
		b.unavailable(w, r, "loading the authorization request", err)
		return
	}
	if err != nil || ar.Done || ar.Subject != acct.UserID || ar.InvitationHash == "" {
		b.renderPage(w, r, http.StatusBadRequest, page{Key: "signin.stale"})
		return
	}
	inv, _ := b.invitations.CheckHash(ctx, ar.InvitationHash)
	switch action {
	case actionAccept:
		if _, err := b.redeem(r, ar.InvitationHash, acct); err != nil {
			if errors.Is(err, grants.ErrEmailUnverified) {
				b.awaitVerification(w, r, sess, ar.ID, ar.InvitationHash, ar.ClientID, acct)
				return
			}
			b.showProblem(w, r, sess, ar, inv, acct, err)
			return
		}
		b.completeAuthorization(w, r, sess, ar)
	case actionOther:
		// Upstream again, asking for a fresh login with the invited email.
		email := ""
		if inv != nil {
			email = inv.Email
		}
		b.signInAgain(w, r, sess, ar, email)
	case actionDecline:
		b.decline(r, ar.InvitationHash, acct)
		ar.InvitationHash = ""
		b.clearInvitationCookie(w)
		b.completeAuthorization(w, r, sess, ar)
	default:
		b.invitationNotice(r, inv, "deferred", map[string]string{"user_id": acct.UserID})
		ar.InvitationHash = ""
		b.completeAuthorization(w, r, sess, ar)
	}
}

// refuseInvitationWithoutInteraction: prompt=none cannot show the accept
// page, so an authorization that itself carries an invitation is answered
// interaction_required (a cookie-only invitation is ignored instead).
func refuseInvitationWithoutInteraction() *oidc.Error {
	return oidc.ErrInteractionRequired().WithDescription("this sign-in carries an invitation, which the person must accept on usher's page; retry without prompt=none")
}
