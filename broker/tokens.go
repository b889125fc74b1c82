package broker

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/sessions"
)

// server overrides the token and userinfo endpoints of the library's
// LegacyServer for one reason: access tokens must be RFC 9068 JWTs with
// `typ: at+jwt`, and the library signs every JWT as `typ: JWT`. Everything
// else (parsing, client authentication, PKCE, ID tokens) stays the library's.
type server struct {
	*op.LegacyServer
	b *Broker
}

func (s *server) CodeExchange(ctx context.Context, r *op.ClientRequest[oidc.AccessTokenRequest]) (*op.Response, error) {
	var (
		ar      *sessions.AuthRequest
		sp      *sessions.CodeSpend
		carried bool
		cache   *claimsCache
		err     error
	)
	if isSealedCode(r.Data.Code) {
		// Spent by tokenResponse, with the refresh token it issues.
		ar, sp, err = s.b.openSealedCode(r.Data.Code)
		ctx, carried = context.WithValue(ctx, ctxCodeSpend{}, sp), true
	} else {
		ar, carried, cache, err = s.b.authRequestByCode(ctx, r.Data.Code)
	}
	if err != nil {
		return nil, err
	}
	if cache != nil {
		ctx = context.WithValue(ctx, ctxClaimsCache, cache) // tokenResponse uses it
	}
	authReq := authRequest{ar}
	if err := checkCodeRequest(r, authReq); err != nil {
		if sp != nil {
			// As a stored code is consumed before these checks: a code
			// presented wrongly is spent all the same.
			return nil, s.b.spendRefused(ctx, authReq, sp, err)
		}
		return nil, err
	}
	resp, err := s.b.tokenResponse(ctx, authReq, r.Client, r.Data.Code, "")
	if err != nil {
		return nil, err
	}
	// A request its code carried expires with the code: deleting it now
	// would cost a store write for nothing.
	if !carried {
		if err := s.b.storage.DeleteAuthRequest(ctx, ar.ID); err != nil {
			return nil, err
		}
	}
	return op.NewResponse(resp), nil
}

// checkCodeRequest: the code is the client's, for its redirect URI, and
// PKCE holds. The library's rule: public clients always prove PKCE; anyone
// who sends a verifier must match a challenge (a verifier without
// challenge = downgrade).
func checkCodeRequest(r *op.ClientRequest[oidc.AccessTokenRequest], authReq authRequest) error {
	if r.Client.AuthMethod() == oidc.AuthMethodNone || r.Data.CodeVerifier != "" || authReq.GetCodeChallenge() != nil {
		if err := op.AuthorizeCodeChallenge(r.Data.CodeVerifier, authReq.GetCodeChallenge()); err != nil {
			return err
		}
	}
	if r.Client.GetID() != authReq.GetClientID() {
		return oidc.ErrInvalidGrant().WithDescription("code was issued to another client")
	}
	if r.Data.RedirectURI != authReq.GetRedirectURI() {
		return oidc.ErrInvalidGrant().WithDescription("redirect_uri does not match the authorization request")
	}
	return nil
}

// authRequestByCode is AuthRequestByCode, also saying whether the code
// carried its auth request: the request's record then expires with the
// code (sessions.Code.StoredAuthRequest) and needs no deleting. cache, when
// not nil, holds the user and grant read with the code (consumeCode).
func (b *Broker) authRequestByCode(ctx context.Context, code string) (ar *sessions.AuthRequest, carried bool, cache *claimsCache, err error) {
	c, cache, err := b.consumeCode(ctx, code)
	switch {
	case errors.Is(err, sessions.ErrCodeReplayed):
		return nil, false, nil, b.codeReplayed(ctx, c.AuthRequestID)
	case errors.Is(err, sessions.ErrNotFound):
		return nil, false, nil, oidc.ErrInvalidGrant().WithDescription("authorization code invalid or expired")
	case err != nil:
		return nil, false, nil, storeError("consuming the authorization code", err)
	}
	ar, carried = c.AuthRequest, true
	if ar == nil || ar.ID != c.AuthRequestID {
		carried = false // saved by a version before Code.AuthRequest
		ar, err = b.clientAuthRequest(ctx, c.AuthRequestID)
		if err != nil {
			if errors.Is(err, sessions.ErrNotFound) {
				return nil, false, nil, oidc.ErrInvalidGrant().WithDescription("authorization code invalid or expired")
			}
			return nil, false, nil, storeError("loading the authorization request", err)
		}
	}
	if !ar.Done {
		return nil, false, nil, oidc.ErrInvalidGrant()
	}
	return ar, carried, cache, nil
}

func (s *server) RefreshToken(ctx context.Context, r *op.ClientRequest[oidc.RefreshTokenRequest]) (*op.Response, error) {
	if !slices.Contains(r.Client.GrantTypes(), oidc.GrantTypeRefreshToken) {
		return nil, oidc.ErrUnauthorizedClient().WithDescription("this client may not use refresh tokens")
	}
	req, cache, err := s.b.refreshGrantRequest(ctx, r.Data.RefreshToken)
	if err != nil {
		return nil, err
	}
	if cache != nil {
		ctx = context.WithValue(ctx, ctxClaimsCache, cache) // tokenResponse uses it
	}
	if r.Client.GetID() != req.GetClientID() {
		return nil, oidc.ErrInvalidGrant().WithDescription("refresh token was issued to another client")
	}
	if err := op.ValidateRefreshTokenScopes(r.Data.Scopes, req); err != nil {
		return nil, err
	}
	resp, err := s.b.tokenResponse(ctx, req, r.Client, "", r.Data.RefreshToken)
	if err != nil {
		return nil, err
	}
	return op.NewResponse(resp), nil
}

func (s *server) ClientCredentialsExchange(ctx context.Context, r *op.ClientRequest[oidc.ClientCredentialsRequest]) (*op.Response, error) {
	req, err := s.b.storage.ClientCredentialsTokenRequest(ctx, r.Client.GetID(), r.Data.Scope)
	if err != nil {
		return nil, err
	}
	jti, exp, err := s.b.storage.CreateAccessToken(ctx, req)
	if err != nil {
		return nil, err
	}
	at, err := s.b.signAccessToken(ctx, req, r.Client.GetID(), jti, exp, time.Time{})
	if err != nil {
		return nil, err
	}
	return op.NewResponse(&oidc.AccessTokenResponse{
		AccessToken: at,
		TokenType:   oidc.BearerToken,
		ExpiresIn:   uint64(time.Until(exp).Round(time.Second).Seconds()),
		Scope:       req.GetScopes(),
	}), nil
}

// JWTProfile, TokenExchange and DeviceToken stay unimplemented (the embedded
// UnimplementedServer answers unsupported_grant_type).

// UserInfo verifies the access token itself so it can honour the token's
// scopes (the library passes only its jti and subject to storage).
func (s *server) UserInfo(ctx context.Context, r *op.Request[oidc.UserInfoRequest]) (*op.Response, error) {
	// One read of the grant: the sign-out check and the claims share it.
	ctx = context.WithValue(ctx, ctxClaimsCache, &claimsCache{})
	claims, err := s.b.verifyAccessToken(ctx, r.Data.AccessToken)
	if err != nil {
		return nil, err
	}
	if _, isClient := s.b.clients[claims.Subject]; isClient {
		return nil, oidc.ErrInvalidRequest().WithDescription("a client_credentials token has no user")
	}
	ui := new(oidc.UserInfo)
	// The upstream claims are the ones this access token carries (its sign-in's).
	if err := s.b.fillUserinfo(ctx, ui, claims.Subject, claims.Scopes, s.b.fromAccessToken(claims.Claims)); err != nil {
		return nil, err
	}
	return op.NewResponse(ui), nil
}

// verifyAccessToken checks signature (usher's own keys only), issuer, expiry,
// the RFC 9068 typ and revocation.
func (b *Broker) verifyAccessToken(ctx context.Context, token string) (*oidc.AccessTokenClaims, error) {
	return b.verifyAccessTokenWith(ctx, token, b.tokenRevoked)
}

// tokenRevokedFunc answers whether the access token of claims is revoked
// (its jti, or its refresh family).
type tokenRevokedFunc func(ctx context.Context, claims *oidc.AccessTokenClaims) (bool, error)

func (b *Broker) tokenRevoked(ctx context.Context, claims *oidc.AccessTokenClaims) (bool, error) {
	return b.sessions.TokenRevoked(ctx, familyFromJTI(claims.JWTID), claims.JWTID)
}

// verifyAccessTokenWith is verifyAccessToken with the revocation check
// revoked makes (the admin API's takes its rate limit along).
func (b *Broker) verifyAccessTokenWith(ctx context.Context, token string, revoked tokenRevokedFunc) (*oidc.AccessTokenClaims, error) {
	if token == "" {
		return nil, oidc.ErrInvalidRequest().WithDescription("access token missing")
	}
	claims := b.verified.get(token, b.now())
	if claims == nil {
		var err error
		if claims, err = b.verifyAccessTokenSignature(ctx, token); err != nil {
			return nil, err
		}
		b.verified.put(token, claims, b.now())
	}
	if !b.now().Before(claims.Expiration.AsTime()) {
		return nil, oidc.ErrInvalidRequest().WithDescription("access token invalid or expired")
	}
	isRevoked, err := revoked(ctx, claims)
	if err != nil {
		return nil, storeError("checking token revocation", err)
	}
	if isRevoked {
		return nil, oidc.ErrInvalidRequest().WithDescription("access token revoked")
	}
	if _, isClient := b.clients[claims.Subject]; !isClient {
		g, err := b.grant(ctx, claims.Subject)
		if err != nil {
			return nil, storeError("loading the user's grant", err)
		}
		// The jti holds the issue instant in ms; iat (whole seconds) only
		// for older tokens, where one of the sign-out's second counts as before it.
		issued, ok := issuedFromJTI(claims.JWTID)
		if !ok {
			issued = claims.IssuedAt.AsTime()
		}
		if g.SignedOut(issued) {
			return nil, oidc.ErrInvalidRequest().WithDescription("access token revoked: the user was signed out everywhere")
		}
	}
	return claims, nil
}

// verifyAccessTokenSignature checks what a token says of itself: its type,
// usher's signature and issuer, and unambiguous claim keys.
func (b *Broker) verifyAccessTokenSignature(ctx context.Context, token string) (*oidc.AccessTokenClaims, error) {
	if typ, err := jwtType(token); err != nil || typ != "at+jwt" {
		return nil, oidc.ErrInvalidRequest().WithDescription("not an usher access token")
	}
	// The verifier takes the issuer from the context, which only the op router sets.
	ctx = op.ContextWithIssuer(ctx, b.opts.Issuer)
	claims, err := op.VerifyAccessToken[*oidc.AccessTokenClaims](ctx, token, b.provider.AccessTokenVerifier(ctx))
	// The library checks exp against the wall clock; usher's clock decides too
	// (they are the same in production; tests move usher's).
	if err != nil || !b.now().Before(claims.Expiration.AsTime()) {
		return nil, oidc.ErrInvalidRequest().WithDescription("access token invalid or expired")
	}
	// Signed by usher, yet claims may have been decoded from the wrong one of
	// two folding keys ("sub" and "ſub"): such a payload is never trusted.
	if err := tokenClaimKeysCheck(token); err != nil {
		b.log.WarnContext(ctx, "access token refused: its claims are ambiguous", "jti", claims.JWTID, "err", err)
		return nil, oidc.ErrInvalidRequest().WithDescription("access token invalid or expired")
	}
	return claims, nil
}

// tokenResponse is the library's CreateTokenResponse with an RFC 9068 access token.
func (b *Broker) tokenResponse(ctx context.Context, req op.IDTokenRequest, client op.Client, code, currentRefresh string) (*oidc.AccessTokenResponse, error) {
	tr, ok := req.(op.TokenRequest)
	if !ok {
		return nil, oidc.ErrServerError()
	}
	if c, _ := ctx.Value(ctxClaimsCache).(*claimsCache); c == nil {
		ctx = context.WithValue(ctx, ctxClaimsCache, &claimsCache{})
	}
	var (
		jti, refresh string
		exp          time.Time
		err          error
	)
	wantsRefresh := false
	switch r := req.(type) {
	case authRequest:
		wantsRefresh = slices.Contains(r.Scopes, oidc.ScopeOfflineAccess) && slices.Contains(client.GrantTypes(), oidc.GrantTypeRefreshToken)
	case *refreshRequest:
		wantsRefresh = true
	}
	if sp, _ := ctx.Value(ctxCodeSpend{}).(*sessions.CodeSpend); sp != nil {
		ar, ok := req.(authRequest)
		if !ok {
			return nil, oidc.ErrServerError()
		}
		jti, refresh, exp, err = b.spendCode(ctx, ar, sp, wantsRefresh)
	} else if rr, ok := req.(*refreshRequest); ok && rr.sealed {
		jti, refresh, exp, err = b.rotateSealed(ctx, rr)
	} else {
		jti, refresh, exp, err = b.createTokens(ctx, tr, wantsRefresh, currentRefresh)
	}
	if err != nil {
		return nil, err
	}
	at, err := b.signAccessToken(ctx, tr, client.GetID(), jti, exp, req.GetAuthTime())
	if err != nil {
		return nil, err
	}
	idKey, err := b.keys.idTokenKey(b.clientIDTokenAlg(client.GetID()))
	if err != nil {
		return nil, oidc.ErrServerError().WithParent(err)
	}
	idToken, err := b.createIDToken(ctx, idTokenView(req), client, idKey, at, code)
	if err != nil {
		return nil, err
	}
	return &oidc.AccessTokenResponse{
		AccessToken:  at,
		IDToken:      idToken,
		RefreshToken: refresh,
		TokenType:    oidc.BearerToken,
		ExpiresIn:    uint64(exp.Sub(b.now()).Round(time.Second).Seconds()),
		Scope:        req.GetScopes(),
	}, nil
}

// createTokens checks what the tokens will carry, then creates the access
// token's ID and, when wanted, the refresh token (a new family's first, or
// a rotation).
func (b *Broker) createTokens(ctx context.Context, tr op.TokenRequest, wantsRefresh bool, currentRefresh string) (jti, refresh string, exp time.Time, err error) {
	if err := b.readClaimsFirst(ctx, tr.GetSubject(), issuedAt(tr)); err != nil {
		return "", "", time.Time{}, err
	}
	if wantsRefresh {
		return b.storage.CreateAccessAndRefreshTokens(ctx, tr, currentRefresh)
	}
	jti, exp, err = b.storage.CreateAccessToken(ctx, tr)
	return jti, "", exp, err
}

// readClaimsFirst reads what the tokens will carry (the user, the grant)
// before the refresh token rotates: a store failure then answers 503 with
// the old refresh token still valid, instead of after a rotation the client
// never learnt of, whose retry would look like reuse and end the sign-in.
// It also refuses a sign-in (auth request, refresh token family) issued
// before the user was signed out everywhere.
func (b *Broker) readClaimsFirst(ctx context.Context, subject string, issued time.Time) error {
	if _, err := b.user(ctx, subject); err != nil {
		if errors.Is(err, grants.ErrNotFound) {
			return oidc.ErrInvalidGrant().WithDescription("user no longer exists")
		}
		return storeError("loading the user", err)
	}
	if _, err := b.privateClaims(ctx, subject, ""); err != nil {
		return err
	}
	g, err := b.grant(ctx, subject)
	if err != nil {
		return storeError("loading the user's grant", err)
	}
	if g.SignedOut(issued) {
		return oidc.ErrInvalidGrant().WithDescription("the user was signed out everywhere; sign in again")
	}
	return nil
}

// issuedAt is when the sign-in a token request continues began: the auth
// request's creation, or the refresh token family's first token.
func issuedAt(req op.TokenRequest) time.Time {
	switch r := req.(type) {
	case authRequest:
		return r.CreatedAt
	case *refreshRequest:
		return r.rt.FamilyCreatedAt
	}
	return time.Time{}
}

func (b *Broker) signAccessToken(ctx context.Context, req op.TokenRequest, clientID, jti string, exp, authTime time.Time) (string, error) {
	key, err := b.keys.accessKey()
	if err != nil {
		return "", oidc.ErrServerError().WithParent(err)
	}
	claims := oidc.NewAccessTokenClaims(b.opts.Issuer, req.GetSubject(), req.GetAudience(), exp, jti, clientID, 0)
	claims.Scopes = req.GetScopes()
	if !authTime.IsZero() {
		claims.AuthTime = oidc.FromTime(authTime)
	}
	claims.Claims, err = b.storage.GetPrivateClaimsFromRequest(ctx, req, nil)
	if err != nil {
		return "", err
	}
	payload, err := marshalAccessClaims(claims)
	return signJWT(key.atSigner, "access token", payload, err)
}

// jwtType reads the JOSE `typ` header (RFC 8725 §3.11: tokens of one kind must
// not be accepted as another).
func jwtType(token string) (string, error) {
	jws, err := jose.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256, jose.RS256, jose.EdDSA})
	if err != nil || len(jws.Signatures) != 1 {
		return "", errors.New("not a signed JWT")
	}
	typ, _ := jws.Signatures[0].Protected.ExtraHeaders[jose.HeaderType].(string)
	return typ, nil
}

// Discovery advertises only what usher does: the library lists implicit and
// JWT-bearer support whenever its storage could, which usher refuses.
func (s *server) Discovery(ctx context.Context, r *op.Request[struct{}]) (*op.Response, error) {
	resp, err := s.LegacyServer.Discovery(ctx, r)
	if err != nil {
		return nil, err
	}
	if cfg, ok := resp.Data.(*oidc.DiscoveryConfiguration); ok {
		cfg.ResponseTypesSupported = []string{string(oidc.ResponseTypeCode)}
		cfg.ResponseModesSupported = []string{string(oidc.ResponseModeQuery), string(oidc.ResponseModeFormPost)}
		cfg.GrantTypesSupported = []oidc.GrantType{oidc.GrantTypeCode, oidc.GrantTypeRefreshToken, oidc.GrantTypeClientCredentials}
		cfg.RevocationEndpointAuthSigningAlgValuesSupported = nil
		cfg.IntrospectionEndpointAuthSigningAlgValuesSupported = nil
		// RFC 9207: usher names itself in every authorization response
		// (issRedirects); the library's struct has no field to say so.
		raw, err := json.Marshal(cfg)
		if err != nil {
			return nil, err
		}
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, err
		}
		m["authorization_response_iss_parameter_supported"] = true
		resp.Data = m
	}
	return resp, nil
}
