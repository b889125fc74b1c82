package broker

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/sessions"
)

const (
	invitationCookie = "usher_invitation"
	invitationTTL    = time.Hour
	continuePrefix   = "continue:"
)

// handleInvite is the link in the invitation mail. It checks the token
// without consuming it (mail scanners and link previews follow links too),
// remembers it in a short-lived encrypted cookie, and sends the browser to
// the app's initiate_login_uri (OIDC Core §4).
func (b *Broker) handleInvite(w http.ResponseWriter, r *http.Request) {
	b.serveInvitation(w, r, r.PathValue("token"), "")
}

func (b *Broker) serveInvitation(w http.ResponseWriter, r *http.Request, token, clientID string) {
	ctx := r.Context()
	inv, err := b.invitations.Check(ctx, token)
	if err != nil {
		b.renderInvitationProblem(w, r, inv, clientID, err)
		return
	}
	client := b.invitationClient(inv, clientID)
	if client == nil {
		b.renderPage(w, r, http.StatusBadRequest, page{Key: "invite.no_client", ClientID: clientID})
		return
	}
	name := b.cookieName(invitationCookie)
	enc, err := b.browser.codec.Encode(name, token)
	if err != nil {
		b.unavailable(w, r, "sealing the invitation cookie", err)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: name, Value: enc, Path: "/", MaxAge: int(invitationTTL.Seconds()),
		HttpOnly: true, Secure: !b.insecure, SameSite: http.SameSiteLaxMode})
	if _, err := b.grants.UpdateInvitation(ctx, inv.ID, func(i *grants.Invitation) error {
		i.Events = append(i.Events, grants.Event{Type: "opened", At: b.now()})
		return nil
	}); err != nil {
		b.log.WarnContext(ctx, "recording invitation opened", "invitation_id", inv.ID, "err", err)
	}
	b.log.InfoContext(ctx, "invitation opened", "invitation_id", inv.ID, "client_id", client.ID)
	if b.offerToSession(w, r, inv, client) {
		return
	}
	ref := ""
	if client.ForwardInvitation {
		if ref, err = b.invitationReference(ctx, inv.TokenHash); err != nil {
			b.unavailable(w, r, "storing the invitation reference", err)
			return
		}
	}
	http.Redirect(w, r, b.initiateLoginURL(client, inv.Email, ref), http.StatusSeeOther)
}

// offerToSession shows the accept page at once when this browser is already
// signed in to usher: the app may never send it to /authorize again. It
// reports whether it answered.
func (b *Broker) offerToSession(w http.ResponseWriter, r *http.Request, inv *grants.Invitation, client *Client) bool {
	sess, err := b.browser.Get(r, b.cookie)
	if err != nil {
		return false
	}
	acct, ok := sessionAccount(sess)
	if !ok {
		return false
	}
	_, err = b.acceptRefusal(r, inv.TokenHash, acct)
	unverified := errors.Is(err, grants.ErrEmailUnverified)
	if err != nil && !unverified {
		// Not for this account (email policy): the normal sign-in lets the
		// person choose the account; the callback explains a refusal.
		return false
	}
	if unverified && inv != nil && inv.AwaitsVerificationBy(acct.UserID, b.now()) {
		b.showVerify(w, r, sess, verifyLinkID, verifyState(inv, client.ID, acct, noteStillUnverified))
		return true
	}
	v, err := b.acceptViewOf(r.Context(), inv, acct, client.ID)
	if err != nil {
		b.unavailable(w, r, "loading the account's grant", err)
		return true
	}
	v.Flow, v.Unverified = flowLink, unverified
	if err := b.showAcceptPage(w, r, sess, acceptLinkKey, acceptState{Hash: inv.TokenHash, ClientID: client.ID}, v); err != nil {
		b.unavailable(w, r, "saving the browser session", err)
	}
	return true
}

// invitationClient: the invitation's client, the one in the link, or the
// only public client.
func (b *Broker) invitationClient(inv *grants.Invitation, fromLink string) *Client {
	for _, id := range []string{inv.ClientID, fromLink} {
		if c, ok := b.clients[id]; ok && id != "" {
			return c
		}
	}
	var only *Client
	for _, c := range b.clients {
		if c.Public && len(c.RedirectURIs) > 0 {
			if only != nil {
				return nil
			}
			only = c
		}
	}
	return only
}

// initiateLoginURL is the client's initiate_login_uri with iss, login_hint
// and, for a client with forward_invitation, an invitation reference (never
// the token); a client without one goes to its first redirect origin.
func (b *Broker) initiateLoginURL(c *Client, email, ref string) string {
	target := c.InitiateLoginURI
	if target == "" {
		if len(c.RedirectURIs) == 0 {
			return b.url("/")
		}
		return originOf(c.RedirectURIs[0]) + "/"
	}
	u, err := url.Parse(target)
	if err != nil {
		return originOf(c.RedirectURIs[0]) + "/"
	}
	q := u.Query()
	q.Set("iss", b.opts.Issuer)
	if email != "" {
		q.Set("login_hint", email)
	}
	if ref != "" {
		q.Set("invitation", ref)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// renderInvitationProblem says plainly why a link cannot be used, with the
// right status (404 unknown, 410 gone), and offers to sign in anyway.
func (b *Broker) renderInvitationProblem(w http.ResponseWriter, r *http.Request, inv *grants.Invitation, clientID string, err error) {
	status, key := http.StatusGone, ""
	// Unknown, used, expired or withdrawn links count as failed attempts:
	// guessing tokens from one address soon stops.
	defer func() {
		if key != "" {
			b.limits.failedRedemption.allow(r.Context(), clientIP(r))
		}
	}()
	switch {
	case errors.Is(err, grants.ErrNotFound):
		status, key = http.StatusNotFound, "invite.not_found"
	case errors.Is(err, grants.ErrInvitationRedeemed):
		key = "invite.redeemed"
	case errors.Is(err, grants.ErrInvitationRevoked):
		key = "invite.revoked"
	case errors.Is(err, grants.ErrInvitationDeclined):
		key = "invite.declined"
	case errors.Is(err, grants.ErrInvitationExpired):
		key = "invite.expired"
	default:
		b.unavailable(w, r, "checking the invitation", err)
		return
	}
	var c *Client
	if inv != nil {
		c = b.invitationClient(inv, clientID)
	} else if cc, ok := b.clients[clientID]; ok {
		c = cc
	} else {
		c = b.invitationClient(&grants.Invitation{}, "")
	}
	p := page{Key: key}
	if c != nil {
		p.ClientID = c.ID
		p.LinkURL, p.LinkKey = b.initiateLoginURL(c, "", ""), "invite.sign_in_anyway"
	}
	b.renderPage(w, r, status, p)
}

// authorizeInvitation decides which invitation an authorization carries.
// prompt=none never shows the accept page, so it never carries one: a
// cookie-only invitation is ignored, an explicit `invitation` parameter is
// answered interaction_required.
func (b *Broker) authorizeInvitation(r *http.Request, ex *authorizeExtras) {
	if slices.Contains(strings.Fields(r.Form.Get("prompt")), oidc.PromptNone) {
		ex.invitationNeedsInteraction = r.Form.Get("invitation") != ""
		return
	}
	ex.invitationHash = b.invitationFromRequest(r)
	if ex.invitationHash == "" {
		return
	}
	if sess, err := b.browser.Get(r, b.cookie); err == nil && sess.Values[reloginKey] == ex.invitationHash {
		ex.freshLogin = true
	}
}

// invitationFromRequest returns the hash of the invitation this authorization
// carries: the `invitation` parameter, else the invitation cookie.
func (b *Broker) invitationFromRequest(r *http.Request) string {
	if tok := r.Form.Get("invitation"); tok != "" {
		if h, ok := grants.ParseToken(tok); ok {
			return h
		}
		return b.redeemReference(r.Context(), tok)
	}
	c, err := r.Cookie(b.cookieName(invitationCookie))
	if err != nil {
		return ""
	}
	var tok string
	if b.browser.codec.Decode(c.Name, c.Value, &tok) != nil {
		return ""
	}
	h, _ := grants.ParseToken(tok)
	return h
}

func (b *Broker) clearInvitationCookie(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: b.cookieName(invitationCookie), Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: !b.insecure, SameSite: http.SameSiteLaxMode})
}

// cookieName adds the __Host- prefix where the browser allows it.
func (b *Broker) cookieName(base string) string {
	if strings.HasPrefix(b.cookie, "__Host-") {
		return "__Host-" + base
	}
	return base
}

// invitationHints steer the upstream for an invitee: their email as
// login_hint, and the sign-up screen when the upstream knows no one with it.
func (b *Broker) invitationHints(ctx context.Context, ar *sessions.AuthRequest) loginHints {
	if ar.InvitationHash == "" {
		return loginHints{}
	}
	inv, err := b.invitations.CheckHash(ctx, ar.InvitationHash)
	if err != nil {
		return loginHints{} // the callback will say what is wrong with it
	}
	return loginHints{loginHint: inv.Email, signup: ar.ScreenHint == "" && b.knownWithoutAccount(ctx, inv.Email)}
}

// knownWithoutAccount: does the upstream say the invitee has no account?
// Only the upstream knows (upstream.AccountFinder: Auth0's Management API);
// usher's own users say nothing about the tenant. When nobody knows (no
// AccountFinder, a failed or rate-limited lookup) usher asks for no sign-up
// screen: Auth0's login page offers sign-up.
func (b *Broker) knownWithoutAccount(ctx context.Context, email string) bool {
	if b.caps.accounts == nil {
		return false
	}
	ok, err := b.caps.accounts.HasAccount(ctx, email)
	if err != nil {
		b.log.WarnContext(ctx, "upstream account lookup failed; no screen_hint", "err", err)
		return false
	}
	return !ok
}

// redeem binds the invitation to acct, after the person pressed Accept.
// Claims the account already holds are kept; each such conflict is put on
// the invitation's timeline, in the audit log and in the webhook.
func (b *Broker) redeem(r *http.Request, hash string, acct signedInAccount) (*grants.Invitation, error) {
	ctx := r.Context()
	start := time.Now()
	id := acct.identity()
	upstreamUser := ""
	if b.caps.mirror != nil && acct.Issuer == b.upstream.Issuer() { // an account of this tenant
		upstreamUser = acct.Subject // the Auth0 user the grant is mirrored to
	}
	inv, _, conflicts, err := b.invitations.Redeem(ctx, hash, grants.Redeemer{
		UserID: acct.UserID, Identity: acct.Issuer + "|" + acct.Subject, Connection: acct.Connection,
		ConnectionSource: acct.ConnectionSource,
		Email:            acct.Email, EmailVerified: acct.EmailVerified, Approve: b.approver(acct.UserID, acct.New, id),
		UpstreamUser: upstreamUser, Signup: acct.New,
	})
	b.metrics.redemptionSeconds.Observe(time.Since(start).Seconds())
	if errors.Is(err, grants.ErrEmailUnverified) {
		// Not a failure: the caller records that it awaits verification.
		b.metrics.redemptions.WithLabelValues(redemptionResult(err)).Inc()
		return inv, err
	}
	if err != nil {
		b.recordRefusal(r, inv, acct, err)
		return inv, err
	}
	b.metrics.redemptions.WithLabelValues(redemptionResult(nil)).Inc()
	b.log.InfoContext(ctx, "invitation redeemed", "invitation_id", inv.ID, "user_id", acct.UserID, "connection", acct.Connection, "connection_source", acct.ConnectionSource, "claims_kept", len(conflicts))
	if len(conflicts) > 0 {
		b.invitationNotice(r, inv, "claims_kept", map[string]string{"user_id": acct.UserID, "claims": grants.ConflictNames(conflicts)})
	}
	return inv, nil
}

// handleContinue finishes a sign-in whose invitation failed, for the browser
// that saw the interstitial only.
func (b *Broker) handleContinue(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id := r.URL.Query().Get("id")
	sess, err := b.browser.Get(r, b.cookie)
	if err != nil {
		b.unavailable(w, r, "loading the browser session", err)
		return
	}
	if id == "" || sess.Values[continuePrefix+id] != "1" {
		b.renderPage(w, r, http.StatusBadRequest, page{Key: "signin.expired"})
		return
	}
	delete(sess.Values, continuePrefix+id)
	delete(sess.Values, problemPrefix+id)
	if err := sess.Save(r, w); err != nil {
		b.unavailable(w, r, "saving the browser session", err)
		return
	}
	ar, err := b.clientAuthRequest(ctx, id)
	if storeDown(err) {
		b.unavailable(w, r, "loading the authorization request", err)
		return
	}
	if err != nil || !ar.Done {
		b.renderPage(w, r, http.StatusBadRequest, page{Key: "signin.expired"})
		return
	}
	b.authResponse(w, r.WithContext(op.ContextWithIssuer(ctx, b.opts.Issuer)), ar)
}
