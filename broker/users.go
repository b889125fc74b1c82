package broker

import (
	"context"
	"errors"
	"slices"

	"github.com/usher-oidc/usher/broker/upstream"
	"github.com/usher-oidc/usher/notify/webhooks"

	"github.com/usher-oidc/usher/grants"
)

// resolveUser finds or creates the usher user of an upstream identity.
func (b *Broker) resolveUser(ctx context.Context, id *upstream.Identity) (*grants.User, bool, error) {
	u, created, _, err := b.resolveSignIn(ctx, id)
	return u, created, err
}

// resolveSignIn is resolveUser also saying whether the user may have
// invitations awaiting verification (false only where the store knows it
// has none: grants.SignInResolver, the same round trip).
func (b *Broker) resolveSignIn(ctx context.Context, id *upstream.Identity) (*grants.User, bool, bool, error) {
	ident := grants.Identity{
		Issuer: id.StoreIssuer, Subject: id.Subject, Connection: id.Connection,
		Email: id.Email, EmailVerified: id.EmailVerified,
	}
	var linkedElsewhere *grants.User
	if b.opts.LinkByVerifiedEmail {
		linkedElsewhere = b.linkByVerifiedEmail(ctx, ident)
	}
	profile := grants.Profile{Email: id.Email, EmailVerified: id.EmailVerified, Name: id.Name, Picture: id.Picture}
	resolve := func() (*grants.User, bool, error) {
		return b.grants.ResolveIdentity(ctx, ident, profile, newUserID(), b.now())
	}
	var u *grants.User
	var created bool
	var err error
	mayAwait := true
	if r, ok := b.grants.(grants.SignInResolver); ok {
		u, created, mayAwait, err = r.ResolveSignIn(ctx, ident, profile, newUserID(), b.now())
	} else {
		u, created, err = resolve()
	}
	if err == nil && linkedElsewhere != nil && u.ID != linkedElsewhere.ID && b.relinkOnceVerified(ctx, ident, u.ID, linkedElsewhere) {
		u, created, err = resolve() // the identity is the target's now: its profile, refreshed
		mayAwait = true
	}
	if err != nil {
		b.log.ErrorContext(ctx, "resolving the user", "err", err)
		return nil, false, false, err
	}
	if created {
		b.emit(ctx, webhooks.UserCreatedEvent(u, id.Connection))
	}
	b.bootstrapAdmin(ctx, u, id)
	if created && len(b.opts.DefaultRoles) > 0 {
		if _, err := b.invitations.ChangeGrant(ctx, u.ID, grants.GrantChange{AddRoles: b.opts.DefaultRoles, Reason: "default_roles"}, "config:default_roles"); err != nil {
			b.log.ErrorContext(ctx, "adding default roles", "err", err)
		}
	}
	return u, created, mayAwait, nil
}

// linkByVerifiedEmail attaches a new identity to the existing user with the
// same verified email, so grants follow the person across connections
// (password, Google, Facebook). Only verified emails on both sides link: an
// unverified email would let anyone claim someone else's account. Off by
// default (upstream.link_by_verified_email): it trusts every connection's
// email verification. It returns the user the identity should have been
// linked to when the identity is already another user's (relinkOnceVerified
// decides, once the sign-in has resolved that user).
func (b *Broker) linkByVerifiedEmail(ctx context.Context, ident grants.Identity) (linkedElsewhere *grants.User) {
	if !ident.EmailVerified || ident.Email == "" {
		return nil
	}
	users, err := b.grants.UsersByEmail(ctx, ident.Email)
	if err != nil {
		b.log.WarnContext(ctx, "account linking: looking up the email", "err", err)
		return nil
	}
	var target *grants.User
	for i := range users {
		if users[i].EmailVerified && (target == nil || users[i].CreatedAt.Before(target.CreatedAt)) {
			target = &users[i]
		}
	}
	if target == nil {
		return nil
	}
	ident.UserID = target.ID
	ident.CreatedAt = b.now()
	switch err := b.grants.LinkIdentity(ctx, ident); {
	case err == nil:
		b.log.InfoContext(ctx, "identity linked by verified email", "user_id", target.ID, "connection", ident.Connection)
	case errors.Is(err, grants.ErrConflict):
		// Already linked to another user: ResolveIdentity follows that
		// link, unless it is the user of its unverified days.
		return target
	default:
		b.log.WarnContext(ctx, "account linking failed", "err", err)
	}
	return nil
}

// relinkOnceVerified links an identity that first signed in with its email
// unverified (which never links, so it got a user of its own) to target,
// now that its email is verified: the same path as a first sign-in, once
// verified. Only when that user (ownerID, whom the sign-in resolved) is a
// shell — no other identity, nothing granted beyond the default roles — so
// nothing anyone was given is lost. It reports whether it relinked.
func (b *Broker) relinkOnceVerified(ctx context.Context, ident grants.Identity, ownerID string, target *grants.User) bool {
	if !b.shellUser(ctx, ownerID) {
		return false
	}
	ident.UserID = target.ID
	switch err := b.grants.RelinkIdentity(ctx, ident, ownerID); {
	case err == nil:
		b.log.InfoContext(ctx, "identity linked by verified email, once verified", "user_id", target.ID, "from_user_id", ownerID, "connection", ident.Connection)
		return true
	case errors.Is(err, grants.ErrConflict): // moved meanwhile
	default:
		b.log.WarnContext(ctx, "account linking once verified failed", "err", err)
	}
	return false
}

// shellUser: the user has one identity and holds nothing beyond the
// default roles.
func (b *Broker) shellUser(ctx context.Context, userID string) bool {
	ids, err := b.grants.Identities(ctx, userID)
	if err != nil || len(ids) != 1 {
		return false
	}
	g, err := b.grants.GetGrant(ctx, userID)
	if err != nil || len(g.Invitations) > 0 || len(g.Claims) > 0 {
		return false
	}
	for _, r := range g.Roles {
		if !slices.Contains(b.opts.DefaultRoles, r) {
			return false
		}
	}
	return true
}

// bootstrapAdmin gives the admin role to a configured admin email, verified
// by the upstream (an unverified email could be anyone's).
func (b *Broker) bootstrapAdmin(ctx context.Context, u *grants.User, id *upstream.Identity) {
	if !id.EmailVerified || !slices.ContainsFunc(b.opts.AdminEmails, func(e string) bool { return grants.SameEmail(e, id.Email) }) {
		return
	}
	if g, err := b.grants.GetGrant(ctx, u.ID); err == nil && slices.Contains(g.Roles, b.opts.AdminRole) {
		return
	}
	if _, err := b.invitations.ChangeGrant(ctx, u.ID, grants.GrantChange{AddRoles: []string{b.opts.AdminRole}, Reason: "admin_bootstrap"}, "config:admin.emails"); err != nil {
		b.log.ErrorContext(ctx, "granting the bootstrap admin role", "user_id", u.ID, "err", err)
		return
	}
	b.log.InfoContext(ctx, "admin role granted from admin.emails", "user_id", u.ID)
}

// upstreamSubjects lists the user's accounts at the upstream whose grants
// are mirrored (Auth0 user IDs), so that taking a grant back there too
// is recorded with the change.
func (b *Broker) upstreamSubjects(ctx context.Context, userID string) ([]string, error) {
	if b.caps.mirror == nil {
		return nil, nil
	}
	ids, err := b.grants.Identities(ctx, userID)
	if err != nil {
		return nil, err
	}
	var subs []string
	for _, id := range ids {
		if id.Issuer == b.upstream.StoreIssuer() {
			subs = append(subs, id.Subject)
		}
	}
	return subs, nil
}

func newUserID() string { return "usr_" + randomToken(16) }
