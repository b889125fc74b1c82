package broker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	gsessions "github.com/gorilla/sessions"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/usher-oidc/usher/broker/admin"
	"github.com/usher-oidc/usher/grants"
)

// adminAPI is the admin JSON API (broker/admin) wired to this broker: the
// OP's access-token check, the API rate limit, the invitation links and
// the Auth0 mirror are handed over as functions, never the Broker itself.
func (b *Broker) adminAPI() *admin.API {
	h := &admin.API{
		Invitations:     b.invitations,
		Store:           b.grants,
		Authenticate:    b.authenticateAPI,
		RateLimit:       b.limitAPI,
		TooMany:         func(w http.ResponseWriter, r *http.Request, wait time.Duration) { b.tooMany(w, r, "api", wait, true) },
		Link:            b.inviteLink,
		ClaimsNamespace: b.opts.ClaimsNamespace,
		Sealer:          b.browser.codec,
		Backup:          b.opts.Backup,
		Metrics:         admin.Metrics{InvitationsCreated: b.metrics.invitationsMade, StoreErrors: b.metrics.storeErrors},
		Logger:          b.log,
		Now:             b.now,
	}
	if b.opts.Webhooks != nil {
		h.Webhooks = b.opts.Webhooks
	}
	return h
}

// adminPage is the admin page (broker/admin) wired to this broker: the
// browser session, the admin sign-in through the upstream (which stays
// here, beside the other sign-ins) and the clients are handed over.
func (b *Broker) adminPage() *admin.Page {
	var clients []admin.Client
	for _, c := range b.clients {
		clients = append(clients, admin.Client{ID: c.ID, Name: c.Name, Interactive: len(c.RedirectURIs) > 0})
	}
	return &admin.Page{
		Invitations: b.invitations,
		Store:       b.grants,
		Session:     b.adminSession,
		SignedIn:    adminSignedIn,
		SignIn:      pageHeaders(http.HandlerFunc(b.handleAdminLogin)),
		Link:        b.inviteLink,
		Clients:     clients,
		Issuer:      b.opts.Issuer,
		AdminRole:   b.opts.AdminRole,
		RoleCatalog: b.opts.RoleCatalog,
		DefaultTTL:  b.opts.InvitationDefaultTTL, MaxTTL: b.opts.InvitationMaxTTL,
		DefaultEmailMatch: b.opts.InvitationEmailMatch,
		ClaimsNamespace:   b.opts.ClaimsNamespace,
		Sealer:            b.browser.codec,
		Audit:             b.auditFunc,
		Metrics:           admin.Metrics{InvitationsCreated: b.metrics.invitationsMade},
		Logger:            b.log,
		Now:               b.now,
	}
}

// adminSession is the browser session the admin page reads; one whose user
// was signed out everywhere (or erased) since it signed in reads as signed
// out (in memory: the next sign-in replaces it).
func (b *Broker) adminSession(r *http.Request) (*gsessions.Session, error) {
	sess, err := b.browser.Get(r, b.cookie)
	if err != nil {
		return nil, err
	}
	if acct, ok := sessionAccount(sess); ok && !b.sessionLive(r, acct) {
		forgetAccount(sess)
	}
	return sess, nil
}

// auditFunc is b.audit in the shape broker/admin takes.
func (b *Broker) auditFunc(ctx context.Context, action, actor, target string, detail map[string]string) {
	b.audit(ctx, AuditEvent{Action: action, Actor: actor, Target: target, Detail: detail})
}

// authenticateAPI checks an admin API bearer token: an access token usher
// issued, still valid, from the client_credentials grant (checkAPIToken).
func (b *Broker) authenticateAPI(ctx context.Context, token string) (admin.Caller, error) {
	var limit *admin.LimitOutcome
	claims, err := b.verifyAccessTokenWith(ctx, token, func(ctx context.Context, claims *oidc.AccessTokenClaims) (bool, error) {
		var revoked bool
		var err error
		limit, revoked, err = b.revokedTakingLimit(ctx, claims)
		return revoked, err
	})
	var unavailable op.StatusError
	if errors.As(err, &unavailable) {
		return admin.Caller{}, err // the token may be fine: the revocation check could not be made
	}
	if err != nil {
		return admin.Caller{}, fmt.Errorf("%w: %w", admin.ErrInvalidToken, err)
	}
	if err := b.checkAPIToken(claims); err != nil {
		return admin.Caller{}, err
	}
	return admin.Caller{ClientID: claims.ClientID, Subject: claims.Subject, Scopes: claims.Scopes, Limit: limit}, nil
}

// revokedTakingLimit is the API token's revocation check; where the API
// rate limit is shared through the store (revocationLimiter), the client's
// request of it is taken in the same round trip and its outcome returned
// (a request counts even when its token turns out revoked). Otherwise
// limit is nil and RateLimit takes it, as for any limiter.
func (b *Broker) revokedTakingLimit(ctx context.Context, claims *oidc.AccessTokenClaims) (limit *admin.LimitOutcome, revoked bool, err error) {
	rl, shared := b.limits.api.l.(revocationLimiter)
	if _, isClient := b.clients[claims.Subject]; !shared || !isClient {
		revoked, err = b.tokenRevoked(ctx, claims)
		return nil, revoked, err
	}
	ok, wait, limitErr, revoked, err := rl.AllowUnlessRevoked(ctx, admin.ClientLimitKey(claims.ClientID), familyFromJTI(claims.JWTID), claims.JWTID)
	if err != nil {
		return nil, false, err
	}
	if limitErr != nil { // as limit.allow: a limit that cannot be read lets requests through
		b.limits.api.failOpen(limitErr)
		ok, wait = true, 0
	}
	return &admin.LimitOutcome{Allowed: ok, RetryAfter: wait}, revoked, nil
}

// limitAPI takes one admin API request of key, or answers 429.
func (b *Broker) limitAPI(w http.ResponseWriter, r *http.Request, key string) bool {
	if ok, wait := b.limits.api.allow(r.Context(), key); !ok {
		b.tooMany(w, r, "api", wait, true)
		return false
	}
	return true
}

// inviteLink is the invitation's link in the form it chose: /invite/<token>
// (the default), or /authorize?client_id=…&invitation=<token> for apps whose
// links must start at the authorization endpoint. The latter needs an app:
// without one usher can name, the link falls back to /invite/.
func (b *Broker) inviteLink(inv *grants.Invitation, token string) string {
	if inv.Link == grants.LinkAuthorize {
		if c := b.invitationClient(inv, ""); c != nil {
			return b.url("/authorize?" + url.Values{"client_id": {c.ID}, "invitation": {token}}.Encode())
		}
	}
	return strings.TrimSuffix(b.opts.InvitationBaseURL, "/") + "/invite/" + token
}
