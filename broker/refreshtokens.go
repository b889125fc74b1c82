package broker

import (
	"context"
	"errors"
	"strings"

	"github.com/zitadel/oidc/v3/pkg/oidc"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/sessions"
)

// A refresh token is "rt_<family>.<subject>.<secret>": it names its family,
// so the store reads it from the family and its hash with no hash → family
// lookup, and its subject, so that on Redis the user and grant its tokens
// carry are read in the same round trip (refreshUserReader). The subject is
// a hint, as a code's is (codes.go): the token's record decides, and the
// prefetched user serves only that subject. Tokens issued before the
// subject was in them ("rt_<family>.<secret>") read as before, and a
// version that knows only that form reads the new one (its family is
// still before the first dot; the hash is of the whole value).
const refreshTokenPrefix = "rt_"

// newRefreshToken is a new refresh token of family for subject.
func newRefreshToken(family, subject string) string {
	if subject == "" || strings.Contains(subject, ".") {
		return refreshTokenPrefix + family + "." + randomToken(32)
	}
	return refreshTokenPrefix + family + "." + subject + "." + randomToken(32)
}

// refreshTokenParts are the family and the subject hint ("" for none) a
// refresh token names; false for a value not shaped like one.
func refreshTokenParts(token string) (family, subject string, ok bool) {
	rest, ok := strings.CutPrefix(token, refreshTokenPrefix)
	family, secret, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || family == "" || secret == "" {
		return "", "", false
	}
	if sub, s, found := strings.Cut(secret, "."); found && sub != "" && s != "" {
		subject = sub
	}
	return family, subject, true
}

// loadRefreshToken reads the refresh token a client presented; a value not
// shaped like one is ErrNotFound, without a store call.
func (b *Broker) loadRefreshToken(ctx context.Context, token string) (*sessions.RefreshToken, error) {
	family, _, ok := refreshTokenParts(token)
	if !ok {
		return nil, sessions.ErrNotFound
	}
	return b.sessions.GetRefreshToken(ctx, family, hashToken(token))
}

// refreshUserReader is a store that reads a refresh token and a user with
// its grant in one round trip (Redis on one master).
type refreshUserReader interface {
	GetRefreshTokenWithUser(ctx context.Context, family, hash, userID string) (*sessions.RefreshToken, grants.UserGrant, error)
}

// loadRefreshTokenWithUser is loadRefreshToken; when the token names its
// subject and the store can, the user and grant are read with it and come
// back as a token response's claims cache (nil otherwise, or when that
// read failed: the response then reads them itself).
func (b *Broker) loadRefreshTokenWithUser(ctx context.Context, token string) (*sessions.RefreshToken, *claimsCache, error) {
	family, subject, _ := refreshTokenParts(token)
	reader, can := b.sessions.(refreshUserReader)
	if subject == "" || !can {
		rt, err := b.loadRefreshToken(ctx, token)
		return rt, nil, err
	}
	rt, ug, err := reader.GetRefreshTokenWithUser(ctx, family, hashToken(token), subject)
	if err != nil {
		return rt, nil, err
	}
	return rt, prefetched(ug), nil
}

// refreshGrantRequest is the refresh grant's request for token, with the
// claims cache its user's read filled (loadRefreshTokenWithUser), if any;
// for a sealed token, from its seal, nothing read yet (refreshseal.go).
func (b *Broker) refreshGrantRequest(ctx context.Context, token string) (*refreshRequest, *claimsCache, error) {
	if req := b.openSealedRefresh(token); req != nil {
		return req, &claimsCache{}, nil // rotateSealed fills it
	}
	rt, cache, err := b.loadRefreshTokenWithUser(ctx, token)
	req, err := b.refreshRequestFor(ctx, rt, err)
	if err != nil {
		return nil, nil, err
	}
	return req, cache, nil
}

// refreshRequestFor is the refresh grant's request for rt, as the store
// answered it (err): invalid_grant for an unknown, expired, revoked or
// reused token (reuse revokes the family).
func (b *Broker) refreshRequestFor(ctx context.Context, rt *sessions.RefreshToken, err error) (*refreshRequest, error) {
	switch {
	case errors.Is(err, sessions.ErrNotFound), errors.Is(err, sessions.ErrRevoked):
		return nil, refreshInvalid()
	case err != nil:
		return nil, storeError("loading the refresh token", err)
	}
	if rt.RotatedAt != nil {
		// Reuse of a rotated token: someone holds a copy. Revoke the family.
		if rerr := b.sessions.RevokeFamily(ctx, rt.FamilyID, rt.FamilyExpiresAt); rerr != nil {
			b.log.ErrorContext(ctx, "revoking a refresh family", "err", rerr)
		}
		return nil, b.refreshReused(ctx, rt.FamilyID, rt.ClientID)
	}
	return &refreshRequest{rt: rt, scopes: rt.Scopes}, nil
}

// refreshInvalid is the refusal of a refresh token unknown, expired or
// revoked.
func refreshInvalid() error {
	return oidc.ErrInvalidGrant().WithDescription("refresh token invalid, expired or revoked")
}

// refreshReused logs the reuse of a rotated token of family (revoked by
// then) and is its refusal.
func (b *Broker) refreshReused(ctx context.Context, family, clientID string) error {
	b.log.WarnContext(ctx, "rotated refresh token reused; family revoked", "family", family, "client_id", clientID)
	return oidc.ErrInvalidGrant().WithDescription("refresh token already used; every token of this sign-in is revoked")
}
