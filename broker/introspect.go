package broker

import (
	"context"
	"errors"
	"net/http"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/usher-oidc/usher/sessions"
)

// Introspection (RFC 7662) and revocation (RFC 7009) are usher's own: the
// library hands storage the caller's client ID, not the token's, so it can
// neither report whose token it is nor keep one client off another's tokens.

// Introspect answers for tokens issued to the caller, or to anyone when the
// caller is a resource server; any other token is {"active": false}, the
// same answer as for an unknown one, so it reveals nothing.
func (s *server) Introspect(ctx context.Context, r *op.Request[op.IntrospectionRequest]) (*op.Response, error) {
	caller, err := s.b.introspectionCaller(ctx, r.Data.ClientCredentials)
	if err != nil {
		return nil, err
	}
	inactive := op.NewResponse(new(oidc.IntrospectionResponse))
	// One read of the grant: the sign-out check and the claims share it.
	ctx = context.WithValue(ctx, ctxClaimsCache, &claimsCache{})
	if r.Data.IntrospectionRequest == nil || r.Data.Token == "" {
		return inactive, nil
	}
	claims, err := s.b.verifyAccessToken(ctx, r.Data.Token)
	var unavailable op.StatusError
	switch {
	case errors.As(err, &unavailable):
		return nil, err
	case err != nil:
		return inactive, nil
	case claims.ClientID != caller.ID && !caller.ResourceServer:
		return inactive, nil
	}
	resp, err := s.b.introspection(ctx, claims)
	if err != nil {
		return nil, err
	}
	return op.NewResponse(resp), nil
}

// introspectionCaller authenticates the caller: confidential clients only
// (RFC 7662 §2.1), with their secret.
func (b *Broker) introspectionCaller(ctx context.Context, cc *op.ClientCredentials) (*Client, error) {
	if cc == nil || cc.ClientID == "" || cc.ClientAssertion != "" {
		return nil, op.NewStatusError(oidc.ErrInvalidClient().WithDescription("authenticate with client_id and client_secret"), http.StatusUnauthorized)
	}
	if err := b.storage.AuthorizeClientIDSecret(ctx, cc.ClientID, cc.ClientSecret); err != nil {
		return nil, op.NewStatusError(oidc.ErrInvalidClient().WithDescription("invalid client credentials"), http.StatusUnauthorized)
	}
	return b.clients[cc.ClientID], nil
}

// introspection describes a live access token: its own claims, with a
// person's roles and claims read fresh from their grant.
func (b *Broker) introspection(ctx context.Context, c *oidc.AccessTokenClaims) (*oidc.IntrospectionResponse, error) {
	resp := &oidc.IntrospectionResponse{
		Active: true, Scope: c.Scopes, ClientID: c.ClientID, TokenType: oidc.BearerToken,
		Expiration: c.Expiration, IssuedAt: c.IssuedAt, NotBefore: c.NotBefore, AuthTime: c.AuthTime,
		Subject: c.Subject, Audience: c.Audience, Issuer: c.Issuer, JWTID: c.JWTID,
	}
	if _, isClient := b.clients[c.Subject]; isClient {
		return resp, nil
	}
	claims, err := b.privateClaims(ctx, c.Subject, "")
	if err != nil {
		return nil, err
	}
	resp.Claims = claims
	return resp, nil
}

// Revocation revokes only what was issued to the calling client. Another
// client's token gets the same 200 as an unknown one (RFC 7009 §2.1-2.2)
// and stays valid.
func (s *server) Revocation(ctx context.Context, r *op.ClientRequest[oidc.RevocationRequest]) (*op.Response, error) {
	b, client := s.b, r.Client.GetID()
	if r.Data.TokenTypeHint != "access_token" {
		done, err := b.revokeRefreshToken(ctx, client, r.Data.Token)
		if err != nil || done {
			return op.NewResponse(nil), err
		}
	}
	claims, err := b.verifyAccessToken(ctx, r.Data.Token)
	var unavailable op.StatusError
	switch {
	case errors.As(err, &unavailable):
		return nil, op.RevocationError(err)
	case err != nil, claims.ClientID != client:
		return op.NewResponse(nil), nil
	}
	if err := b.sessions.RevokeAccessToken(ctx, claims.JWTID, claims.Expiration.AsTime()); err != nil {
		return nil, op.RevocationError(storeError("revoking the access token", err))
	}
	return op.NewResponse(nil), nil
}

// revokeRefreshToken revokes the token's whole family when it is a refresh
// token of client; done reports that token was a refresh token (of anyone).
func (b *Broker) revokeRefreshToken(ctx context.Context, client, token string) (done bool, err error) {
	rt, err := b.loadRefreshToken(ctx, token)
	switch {
	case errors.Is(err, sessions.ErrRevoked):
		return true, nil
	case errors.Is(err, sessions.ErrNotFound):
		return false, nil
	case err != nil:
		return false, op.RevocationError(storeError("loading the refresh token", err))
	case rt.ClientID != client:
		return true, nil
	}
	if err := b.sessions.RevokeFamily(ctx, rt.FamilyID, rt.FamilyExpiresAt); err != nil {
		return false, op.RevocationError(storeError("revoking the refresh token", err))
	}
	return true, nil
}
