package broker

import (
	"crypto/subtle"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	gsessions "github.com/gorilla/sessions"

	"github.com/usher-oidc/usher/grants"
)

// The accept step: an invitation binds to an account only when a person, on
// usher's own page, has seen which account receives it and what it grants,
// and pressed Accept. A cookie or a query parameter alone never redeems.
//
// Two ways lead to the page:
//   - flowAuthorize: the upstream callback of an authorization that carries
//     an invitation (its `invitation` parameter or the browser's invitation
//     cookie) shows it before the code goes to the client;
//   - flowLink: opening /invite/<token> in a browser already signed in to
//     usher shows it at once, for that session's account (an unmodified SPA
//     may never send that browser to /authorize again).
//
// The page posts back to /accept (same origin, CSRF token bound to the
// browser session) with one of four actions: accept, other (sign in with
// another account: upstream again with prompt=login and the invited email as
// login_hint), later ("Not now": sign-in continues without the invitation,
// which stays pending; the browser forgets it), or decline (the invitation
// becomes declined for good, then sign-in continues as for "Not now").
const (
	pathAccept    = "/accept"
	flowAuthorize = "authorize"
	flowLink      = "link"
	acceptPrefix  = "accept:"      // + auth request ID → acceptState (flowAuthorize)
	acceptLinkKey = "accept:link"  // acceptState of flowLink
	reloginKey    = "invite:login" // token hash whose next sign-in must ask upstream for prompt=login
	acceptTTL     = 15 * time.Minute
	actionAccept  = "accept"
	actionOther   = "other"
	actionLater   = "later"
	actionDecline = "decline"
)

// acceptState is what the browser session remembers about a shown accept page.
type acceptState struct {
	CSRF     string    `json:"c"`
	Hash     string    `json:"h,omitempty"`  // flowLink: the invitation's token hash
	ClientID string    `json:"cl,omitempty"` // flowLink: the app to continue to
	Expires  time.Time `json:"e"`
	// The problem page (accept_problem.go): what to say, to whom.
	Message  string `json:"m,omitempty"`
	Invited  string `json:"ie,omitempty"`
	Account  string `json:"ae,omitempty"`
	Mismatch bool   `json:"mm,omitempty"`
	// UserID: the account the page was shown to (the verify page), and
	// when it last asked for a new verification mail.
	UserID string    `json:"u,omitempty"`
	Resent time.Time `json:"rs,omitempty"`
}

// showAcceptPage remembers the page in the session (which the caller saves)
// and renders it.
func (b *Broker) showAcceptPage(w http.ResponseWriter, r *http.Request, sess *gsessions.Session, key string, st acceptState, v acceptView) error {
	pruneAcceptPages(sess.Values, b.now())
	st.CSRF, st.Expires = randomToken(24), b.now().Add(acceptTTL)
	enc, err := jsonString(st)
	if err != nil {
		return err
	}
	sess.Values[key] = enc
	if err := sess.Save(r, w); err != nil {
		return err
	}
	v.CSRF = st.CSRF
	// Chromium applies form-action to the redirects that follow the post:
	// to the app (its code or its sign-in page) and to the upstream.
	b.setFormCSP(w, v.ClientID)
	b.renderAccept(w, r, v)
	return nil
}

// setFormCSP is the policy of the invitee's pages that post a form (accept,
// verify, problem): their own inline styles and logo, and form-action for
// the places the post is redirected to (acceptFormTargets).
func (b *Broker) setFormCSP(w http.ResponseWriter, clientID string) {
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self' "+
		strings.Join(b.acceptFormTargets(clientID), " "))
}

// acceptFormTargets are the origins an answer to the accept page may
// redirect to: the app's redirect URIs and sign-in route, and the upstream.
func (b *Broker) acceptFormTargets(clientID string) []string {
	var out []string
	add := func(u string) {
		if o := originOf(u); o != "" && o != "://" && !slices.Contains(out, o) {
			out = append(out, o)
		}
	}
	if c, ok := b.clients[clientID]; ok {
		for _, u := range c.RedirectURIs {
			add(u)
		}
		add(c.InitiateLoginURI)
	}
	add(b.upstream.Issuer())
	return out
}

// pruneAcceptPages drops unanswered accept pages that expired, and all of
// them beyond a few, so a browser cannot grow its session record without bound.
func pruneAcceptPages(values map[any]any, now time.Time) {
	n := 0
	for k, v := range values {
		ks, _ := k.(string)
		if !strings.HasPrefix(ks, acceptPrefix) {
			continue
		}
		var st acceptState
		if raw, _ := v.(string); jsonParse(raw, &st) != nil || now.After(st.Expires) || n >= 10 {
			delete(values, k)
			continue
		}
		n++
	}
}

// pageForm reads the form one of usher's own pages posted, and the
// browser session; it has answered the request itself when ok is false (a
// form from elsewhere: refusedKey's page).
func (b *Broker) pageForm(w http.ResponseWriter, r *http.Request, refusedKey string) (sess *gsessions.Session, ok bool) {
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	if err := r.ParseForm(); err != nil || !b.sameOrigin(r) {
		b.renderPage(w, r, http.StatusForbidden, page{Key: refusedKey})
		return nil, false
	}
	sess, err := b.browser.Get(r, b.cookie)
	if err != nil {
		b.unavailable(w, r, "loading the browser session", err)
		return nil, false
	}
	return sess, true
}

// handleAccept is the form the accept page posts.
func (b *Broker) handleAccept(w http.ResponseWriter, r *http.Request) {
	sess, ok := b.pageForm(w, r, "accept.refused")
	if !ok {
		return
	}
	flow, id := r.PostForm.Get("flow"), r.PostForm.Get("id")
	key := acceptLinkKey
	if flow == flowAuthorize {
		key = acceptPrefix + id
	}
	raw, _ := sess.Values[key].(string)
	acct, signedIn := sessionAccount(sess)
	var st acceptState
	if raw == "" || !signedIn || jsonParse(raw, &st) != nil || b.now().After(st.Expires) ||
		subtle.ConstantTimeCompare([]byte(st.CSRF), []byte(r.PostForm.Get("csrf"))) != 1 {
		b.renderPage(w, r, http.StatusBadRequest, page{Key: "accept.expired"})
		return
	}
	delete(sess.Values, key) // one answer per page
	switch flow {
	case flowAuthorize:
		b.answerAuthorize(w, r, sess, id, acct, r.PostForm.Get("action"))
	default:
		b.answerLink(w, r, sess, st, acct, r.PostForm.Get("action"))
	}
}

// sameOrigin refuses a cross-site post: the CSRF token already binds the
// form to this browser; Fetch Metadata, or else Origin, when the browser
// sends them, must say the post came from usher's own page. (usher's pages
// send no Referer, so browsers post them with "Origin: null".)
func (b *Broker) sameOrigin(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" {
		return site == "same-origin"
	}
	origin := r.Header.Get("Origin")
	return origin == "" || origin == "null" || origin == originOf(b.opts.Issuer)
}

// invitationNotice records a line on an invitation's timeline; the action it
// records has happened, so a failure is only logged.
func (b *Broker) invitationNotice(r *http.Request, inv *grants.Invitation, typ string, detail map[string]string) {
	if inv == nil {
		return
	}
	if _, err := b.grants.UpdateInvitation(r.Context(), inv.ID, func(i *grants.Invitation) error {
		i.Events = append(i.Events, grants.Event{Type: typ, At: b.now(), Detail: detail})
		return nil
	}); err != nil {
		b.log.WarnContext(r.Context(), "recording an invitation event", "invitation_id", inv.ID, "type", typ, "err", err)
	}
}

// acceptRefusal is why an invitation cannot be offered to acct at all
// (gone, or its email policy excludes the account): the person then sees
// the refusal instead of the accept page.
func (b *Broker) acceptRefusal(r *http.Request, hash string, acct signedInAccount) (*grants.Invitation, error) {
	inv, err := b.invitations.CheckHash(r.Context(), hash)
	if err != nil {
		return inv, err
	}
	return inv, grants.EmailMatches(inv.EmailMatch, inv.Email, acct.Email, acct.EmailVerified)
}

// recordRefusal puts a refused redemption on the invitation's timeline, the
// metrics and the log, and counts it against the client IP.
func (b *Broker) recordRefusal(r *http.Request, inv *grants.Invitation, acct signedInAccount, err error) {
	b.metrics.redemptions.WithLabelValues(redemptionResult(err)).Inc()
	b.limits.failedRedemption.allow(r.Context(), clientIP(r))
	invID := ""
	if inv != nil {
		invID = inv.ID
		b.invitationNotice(r, inv, "redemption_failed", map[string]string{"user_id": acct.UserID, "reason": err.Error()})
	}
	b.log.WarnContext(r.Context(), "invitation not redeemed", "invitation_id", invID, "user_id", acct.UserID, "reason", err)
}

// continueURL is where a person goes from a flowLink page that did not
// redeem: the app's sign-in, without any invitation.
func (b *Broker) continueURL(clientID string, hint string) string {
	c := b.invitationClient(&grants.Invitation{ClientID: clientID}, "")
	if c == nil {
		return b.url("/")
	}
	return b.initiateLoginURL(c, hint, "")
}

// answerLink applies the person's answer to a page shown from an invitation link.
func (b *Broker) answerLink(w http.ResponseWriter, r *http.Request, sess *gsessions.Session, st acceptState, acct signedInAccount, action string) {
	inv, _ := b.invitations.CheckHash(r.Context(), st.Hash)
	switch action {
	case actionAccept:
		_, err := b.redeem(r, st.Hash, acct)
		b.clearInvitationCookie(w)
		if errors.Is(err, grants.ErrEmailUnverified) {
			b.awaitVerification(w, r, sess, verifyLinkID, st.Hash, st.ClientID, acct)
			return
		}
		if err := sess.Save(r, w); err != nil {
			b.unavailable(w, r, "saving the browser session", err)
			return
		}
		if err != nil {
			b.renderRefusal(w, r, err, b.continueURL(st.ClientID, ""), "problem.continue")
			return
		}
		http.Redirect(w, r, b.continueURL(st.ClientID, acct.Email), http.StatusSeeOther)
	case actionOther:
		// The invitation cookie stays; the next sign-in of this browser asks
		// the upstream for a fresh login with the invited email.
		sess.Values[reloginKey] = st.Hash
		forgetAccount(sess)
		if err := sess.Save(r, w); err != nil {
			b.unavailable(w, r, "saving the browser session", err)
			return
		}
		email := ""
		if inv != nil {
			email = inv.Email
		}
		http.Redirect(w, r, b.continueURL(st.ClientID, email), http.StatusSeeOther)
	case actionDecline:
		b.decline(r, st.Hash, acct)
		b.clearInvitationCookie(w)
		if err := sess.Save(r, w); err != nil {
			b.unavailable(w, r, "saving the browser session", err)
			return
		}
		http.Redirect(w, r, b.continueURL(st.ClientID, ""), http.StatusSeeOther)
	default:
		b.invitationNotice(r, inv, "deferred", map[string]string{"user_id": acct.UserID})
		b.clearInvitationCookie(w)
		if err := sess.Save(r, w); err != nil {
			b.unavailable(w, r, "saving the browser session", err)
			return
		}
		http.Redirect(w, r, b.continueURL(st.ClientID, ""), http.StatusSeeOther)
	}
}

// decline records the invitee's Decline: the invitation becomes declined
// (final), with an audit record and an invitation.declined webhook. The
// sign-in continues without it whatever happens here (the person said no),
// so a failure — e.g. it was redeemed from another tab meanwhile — is only
// logged.
func (b *Broker) decline(r *http.Request, hash string, acct signedInAccount) {
	ctx := r.Context()
	inv, err := b.invitations.Decline(ctx, hash, acct.UserID, map[string]string{"email": acct.Email, "connection": acct.Connection})
	if err != nil {
		b.log.WarnContext(ctx, "invitation not declined", "user_id", acct.UserID, "err", err)
		return
	}
	b.log.InfoContext(ctx, "invitation declined", "invitation_id", inv.ID, "user_id", acct.UserID)
}

// renderRefusal says in plain words why an invitation was not applied and
// offers to continue without it. Never silent, never blocking.
func (b *Broker) renderRefusal(w http.ResponseWriter, r *http.Request, err error, link, linkKey string) {
	t := b.chromeFor(r, "").T
	b.renderPage(w, r, http.StatusOK, page{Title: t.Text("problem.title"),
		Message: refusalMessage(t, err) + " " + t.Text("refusal.continue"), LinkURL: link, LinkKey: linkKey})
}

// loginURL is the login step of an auth request (after "Use another account").
func (b *Broker) loginURL(arID string) string {
	return b.url("/login?id=" + url.QueryEscape(arID))
}
