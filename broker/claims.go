package broker

import (
	"context"
	"errors"
	"slices"

	"github.com/zitadel/oidc/v3/pkg/oidc"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/sessions"
)

// privateClaims are what usher adds to every token of a user: roles and the
// grant's claims (under the configured namespace).
func (b *Broker) privateClaims(ctx context.Context, subject, _ string) (map[string]any, error) {
	// A token response builds the access token and the ID token from the
	// same grant: read it once per response.
	cache, _ := ctx.Value(ctxClaimsCache).(*claimsCache)
	if cache != nil && cache.subject == subject && cache.claims != nil {
		return cache.claims, nil
	}
	claims, err := b.loadClaims(ctx, subject)
	if err == nil && cache != nil {
		cache.subject, cache.claims = subject, claims
	}
	return claims, err
}

// claimsCache holds one subject's claims (and user record) for the duration
// of a token response.
type claimsCache struct {
	subject string
	claims  map[string]any
	user    *grants.User
	grant   *grants.Grant
}

// prefetched is the claims cache of a user and grant read beside something
// else (a code, a refresh token, a browser session) by the subject that
// thing names as a hint: nil when that read failed (the caller reads what
// it needs itself). The cache serves only its own subject, so a hint that
// names another user than the record decides is read again.
func prefetched(ug grants.UserGrant) *claimsCache {
	if ug.Err != nil {
		return nil
	}
	return &claimsCache{user: ug.User, grant: ug.Grant}
}

// keepUserRead puts a user and grant read beside a store write (a code's
// spend, a refresh token's rotation) into the token response's claims
// cache, when it has one and the read succeeded.
func keepUserRead(ctx context.Context, ug grants.UserGrant) {
	if cache, _ := ctx.Value(ctxClaimsCache).(*claimsCache); cache != nil && ug.Err == nil {
		cache.user, cache.grant = ug.User, ug.Grant
	}
}

// grant reads the subject's grant once per token response.
func (b *Broker) grant(ctx context.Context, subject string) (*grants.Grant, error) {
	cache, _ := ctx.Value(ctxClaimsCache).(*claimsCache)
	if cache != nil && cache.grant != nil && cache.grant.UserID == subject {
		return cache.grant, nil
	}
	if b.readUserAndGrant(ctx, cache, subject) {
		return cache.grant, nil
	}
	g, err := b.grants.GetGrant(ctx, subject)
	if err == nil && cache != nil {
		cache.grant = g
	}
	return g, err
}

// user reads the subject's user record once per token response.
func (b *Broker) user(ctx context.Context, subject string) (*grants.User, error) {
	cache, _ := ctx.Value(ctxClaimsCache).(*claimsCache)
	if cache != nil && cache.user != nil && cache.user.ID == subject {
		return cache.user, nil
	}
	if b.readUserAndGrant(ctx, cache, subject) {
		return cache.user, nil
	}
	u, err := b.grants.GetUser(ctx, subject)
	if err == nil && cache != nil {
		cache.user = u
	}
	return u, err
}

// readUserAndGrant fills the token response's cache with the subject's
// user and grant in one store read where the store can (UserGrantReader);
// false leaves the caller to read what it needs on its own (no cache, no
// such store, no such user, or a failure the single reads report).
func (b *Broker) readUserAndGrant(ctx context.Context, cache *claimsCache, subject string) bool {
	if _, ok := b.grants.(grants.UserGrantReader); cache == nil || !ok {
		return false
	}
	u, g, err := b.userAndGrant(ctx, subject)
	if err != nil {
		return false
	}
	cache.user, cache.grant = u, g
	return true
}

// userAndGrant reads a user (ErrNotFound if absent) and its grant, in one
// store read where the store can (UserGrantReader).
func (b *Broker) userAndGrant(ctx context.Context, userID string) (*grants.User, *grants.Grant, error) {
	if r, ok := b.grants.(grants.UserGrantReader); ok {
		return r.UserAndGrant(ctx, userID)
	}
	u, err := b.grants.GetUser(ctx, userID)
	if err != nil {
		return nil, nil, err
	}
	g, err := b.grants.GetGrant(ctx, userID)
	if err != nil {
		return nil, nil, err
	}
	return u, g, nil
}

func (b *Broker) loadClaims(ctx context.Context, subject string) (map[string]any, error) {
	g, err := b.grant(ctx, subject)
	if err != nil {
		if errors.Is(err, grants.ErrNotFound) {
			return map[string]any{"roles": []string{}}, nil
		}
		return nil, storeError("loading the user's grant", err)
	}
	out := make(map[string]any, len(g.Claims)+1)
	var unsafe []string
	for k, v := range g.Claims {
		// The rule every entry point applies, again: a grant stored before it
		// existed may hold "ſub". Such a claim stays in the store (the
		// operator decides) but never reaches a token.
		if grants.ValidateClaimName(b.opts.ClaimsNamespace, k) != nil {
			unsafe = append(unsafe, k)
			continue
		}
		out[b.opts.ClaimsNamespace+k] = v
	}
	if len(unsafe) > 0 {
		slices.Sort(unsafe)
		b.log.WarnContext(ctx, "grant holds claim names that fold onto registered claims; not served (find them with GET /api/users/{id}/grants)",
			"user_id", subject, "claims", unsafe)
	}
	roles := g.Roles
	if roles == nil {
		roles = []string{}
	}
	out["roles"] = roles
	return out, nil
}

// fillUserinfo sets sub always (the library ships an ID token without sub
// otherwise), profile and email by scope, and usher's private claims.
// up: the sign-in's upstream claims (upstream_claims.go), nil for none.
func (b *Broker) fillUserinfo(ctx context.Context, ui *oidc.UserInfo, subject string, scopes []string, up *sessions.Upstream) error {
	ui.Subject = subject
	u, err := b.user(ctx, subject)
	if err != nil {
		if errors.Is(err, grants.ErrNotFound) {
			return oidc.ErrInvalidRequest().WithDescription("user no longer exists")
		}
		return storeError("loading the user", err)
	}
	for _, sc := range scopes {
		switch sc {
		case oidc.ScopeProfile:
			ui.Name = u.Name
			ui.Picture = u.Picture
			ui.UpdatedAt = oidc.FromTime(u.UpdatedAt)
		case oidc.ScopeEmail:
			ui.Email = u.Email
			ui.EmailVerified = oidc.Bool(u.EmailVerified)
		}
	}
	claims, err := b.privateClaims(ctx, subject, "")
	if err != nil {
		return err
	}
	for k, v := range b.withUpstreamClaims(claims, up) {
		ui.AppendClaims(k, v)
	}
	return nil
}
