package broker

import (
	"context"
	"errors"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/usher-oidc/usher/sessions"
)

// newRefreshRecord is the record of the refresh token a token response for
// req issues, to be completed (firstOfFamily, nextLink) before issueRefresh
// makes its value.
func (b *Broker) newRefreshRecord(req op.TokenRequest, now time.Time) *sessions.RefreshToken {
	return &sessions.RefreshToken{
		FamilyID:  familyOf(req),
		Subject:   req.GetSubject(),
		Scopes:    req.GetScopes(),
		Audience:  req.GetAudience(),
		CreatedAt: now,
	}
}

// firstOfFamily completes next, the first refresh token of the sign-in r
// completed.
func (b *Broker) firstOfFamily(next *sessions.RefreshToken, r authRequest, now time.Time) {
	next.ClientID, next.AMR, next.AuthTime, next.Upstream = r.ClientID, r.AMR, r.AuthTime, r.Upstream
	if c, ok := b.clients[r.ClientID]; ok && c.Public {
		// Only public clients' tokens end with the browser session: a
		// confidential client's offline_access is meant to outlive it.
		next.SessionID = r.SessionID
	}
	next.FamilyExpiresAt, next.FamilyCreatedAt = now.Add(b.opts.Tokens.RefreshAbsolute), now
	next.ExpiresAt = minTime(now.Add(b.opts.Tokens.RefreshIdle), next.FamilyExpiresAt)
}

// nextLink is the record of the refresh token that replaces r's: the
// family's data carried over, the scopes as r narrowed them.
func (b *Broker) nextLink(r *refreshRequest, now time.Time) *sessions.RefreshToken {
	next := b.newRefreshRecord(r, now)
	next.ClientID, next.AMR, next.AuthTime, next.SessionID = r.rt.ClientID, r.rt.AMR, r.rt.AuthTime, r.rt.SessionID
	next.Upstream = r.rt.Upstream
	// Rotation never extends the family's absolute lifetime.
	next.FamilyExpiresAt, next.FamilyCreatedAt = r.rt.FamilyExpiresAt, r.rt.FamilyCreatedAt
	next.ExpiresAt = minTime(now.Add(b.opts.Tokens.RefreshIdle), next.FamilyExpiresAt)
	return next
}

func (s opStorage) CreateAccessAndRefreshTokens(ctx context.Context, req op.TokenRequest, current string) (string, string, time.Time, error) {
	b := s.b
	now := b.now()
	family := familyOf(req)
	var token string
	switch r := req.(type) {
	case authRequest:
		next := b.newRefreshRecord(req, now)
		b.firstOfFamily(next, r, now)
		token = b.issueRefresh(next)
		if err := b.sessions.CreateRefreshToken(ctx, next); err != nil {
			return "", "", time.Time{}, storeError("saving the refresh token", err)
		}
	case *refreshRequest:
		next := b.nextLink(r, now)
		token = b.issueRefresh(next)
		if err := b.rotationRefused(ctx, next, b.sessions.RotateRefreshToken(ctx, r.rt.Hash, next)); err != nil {
			return "", "", time.Time{}, err
		}
	default:
		return "", "", time.Time{}, oidc.ErrInvalidRequest().WithDescription("refresh tokens are not issued for this grant")
	}
	return accessTokenID(family, now), token, now.Add(b.opts.Tokens.Access), nil
}

// rotationRefused is the token error for a rotation to next the store
// refused (err), nil for none.
func (b *Broker) rotationRefused(ctx context.Context, next *sessions.RefreshToken, err error) error {
	switch {
	case errors.Is(err, sessions.ErrRefreshReused):
		return b.refreshReused(ctx, next.FamilyID, next.ClientID)
	case errors.Is(err, sessions.ErrRevoked), errors.Is(err, sessions.ErrNotFound):
		return refreshInvalid()
	case err != nil:
		return storeError("rotating the refresh token", err)
	}
	return nil
}
