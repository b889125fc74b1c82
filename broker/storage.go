package broker

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/usher-oidc/usher/sessions"
)

// opStorage is the op.Storage the zitadel provider calls. It holds no state
// of its own: everything lives in the sessions and grants stores so several
// replicas can share it.
type opStorage struct{ b *Broker }

var (
	_ op.Storage                        = opStorage{}
	_ op.ClientCredentialsStorage       = opStorage{}
	_ op.CanSetUserinfoFromRequest      = opStorage{}
	_ op.CanGetPrivateClaimsFromRequest = opStorage{}
	_ op.CanTerminateSessionFromRequest = opStorage{}
)

type ctxKey int

const (
	ctxAuthorizeExtras ctxKey = iota
	ctxHTTP
	ctxClaimsCache
)

// authorizeExtras are the /authorize parameters the op decoder drops.
type authorizeExtras struct {
	connection, screenHint, invitationHash, audience string
	// organization and upstreamInvitation: Auth0 Organizations, forwarded.
	organization, upstreamInvitation string
	// invitationNeedsInteraction: prompt=none with an explicit invitation.
	invitationNeedsInteraction bool
	// freshLogin: the person chose "Use another account" for this invitation.
	freshLogin bool
	// sessionID: the browser session the request's cookie names ("" for
	// none), read with the request's creation (storeAuthRequest);
	// sessionCookie: that cookie's value, decoded once per request.
	sessionID, sessionCookie string
}

func (s opStorage) CreateAuthRequest(ctx context.Context, req *oidc.AuthRequest, _ string) (op.AuthRequest, error) {
	b := s.b
	client, ok := b.clients[req.ClientID]
	if !ok {
		return nil, oidc.ErrInvalidClient().WithDescription("unknown client")
	}
	// The library accepts PKCE "plain"; RFC 9700 §2.1.1 says S256 only.
	if req.CodeChallenge != "" && req.CodeChallengeMethod != oidc.CodeChallengeMethodS256 {
		return nil, oidc.ErrInvalidRequest().WithDescription("code_challenge_method must be S256")
	}
	if client.Public && req.CodeChallenge == "" {
		return nil, oidc.ErrInvalidRequest().WithDescription("PKCE is required: send code_challenge with code_challenge_method=S256")
	}
	if !hasGrant(client, "authorization_code") {
		return nil, oidc.ErrUnauthorizedClient().WithDescription("this client may not use the authorization code flow")
	}
	var audience []string
	if ex, ok := ctx.Value(ctxAuthorizeExtras).(authorizeExtras); ok && ex.audience != "" {
		if !slices.Contains(client.Audiences, ex.audience) {
			return nil, oidc.ErrInvalidRequest().WithDescription("audience %q is not an API this client may request tokens for", ex.audience)
		}
		audience = []string{ex.audience}
	}
	switch req.ResponseMode {
	case "", oidc.ResponseModeQuery, oidc.ResponseModeFormPost, responseModeWebMessage:
	default:
		return nil, oidc.ErrInvalidRequest().WithDescription("response_mode must be query, form_post or web_message")
	}
	now := b.now()
	ar := &sessions.AuthRequest{
		ID:                  randomToken(16),
		ClientID:            req.ClientID,
		RedirectURI:         req.RedirectURI,
		Scopes:              req.Scopes,
		State:               req.State,
		Nonce:               req.Nonce,
		ResponseType:        string(req.ResponseType),
		ResponseMode:        string(req.ResponseMode),
		CodeChallenge:       req.CodeChallenge,
		CodeChallengeMethod: string(req.CodeChallengeMethod),
		Prompt:              req.Prompt,
		MaxAge:              req.MaxAge,
		LoginHint:           req.LoginHint,
		UILocales:           strings.Join(localeStrings(req.UILocales), " "),
		Audience:            audience,
		CreatedAt:           now,
		ExpiresAt:           now.Add(b.opts.Tokens.AuthRequest),
	}
	ex, _ := ctx.Value(ctxAuthorizeExtras).(authorizeExtras)
	if err := b.applyExtras(ar, ex); err != nil {
		return nil, err
	}
	session, stored, err := b.storeAuthRequest(ctx, ar, ex)
	if err != nil {
		return nil, err
	}
	noteCreated(ctx, ar, ex.sessionID, ex.sessionCookie, session, stored)
	return authRequest{ar}, nil
}

// applyExtras puts the /authorize parameters the op decoder drops on ar,
// or refuses them.
func (b *Broker) applyExtras(ar *sessions.AuthRequest, ex authorizeExtras) error {
	if ex.invitationNeedsInteraction {
		return refuseInvitationWithoutInteraction()
	}
	ar.Connection, ar.ScreenHint, ar.InvitationHash = ex.connection, ex.screenHint, ex.invitationHash
	if oerr := b.checkOrganizationParam(ex.organization, ex.upstreamInvitation); oerr != nil {
		return oerr
	}
	ar.Organization, ar.UpstreamInvitation = ex.organization, ex.upstreamInvitation
	if ex.freshLogin && !slices.Contains(ar.Prompt, oidc.PromptLogin) {
		ar.Prompt = append(ar.Prompt, oidc.PromptLogin)
	}
	return nil
}

func localeStrings(l oidc.Locales) []string {
	out := make([]string, 0, len(l))
	for _, t := range l {
		out = append(out, t.String())
	}
	return out
}

func (s opStorage) AuthRequestByID(ctx context.Context, id string) (op.AuthRequest, error) {
	ar, err := s.b.clientAuthRequest(ctx, id)
	if err != nil {
		return nil, storeError("loading the authorization request", err)
	}
	return authRequest{ar}, nil
}

// AuthRequestByCode consumes the code: single use is enforced here, by the
// store, atomically. A replayed code revokes everything issued from it
// (RFC 9700 §4.5.3.1 / RFC 6749 §4.1.2). Only the library's own code
// exchange calls it, which usher replaces (server.CodeExchange): a sealed
// code, found by no hash, is refused here.
func (s opStorage) AuthRequestByCode(ctx context.Context, code string) (op.AuthRequest, error) {
	ar, _, _, err := s.b.authRequestByCode(ctx, code)
	if err != nil {
		return nil, err
	}
	return authRequest{ar}, nil
}

// ctxCodeFor carries the completed auth request from authResponse to
// SaveAuthCode, which zitadel's op calls with the request's context and
// only the auth request's ID.
type ctxCodeFor struct{}

func (s opStorage) SaveAuthCode(ctx context.Context, id, code string) error {
	b := s.b
	if isSealedCode(code) {
		return b.sealedCodeIssued(ctx, id)
	}
	c := &sessions.Code{Hash: hashToken(code), AuthRequestID: id, ExpiresAt: b.now().Add(b.opts.Tokens.Code)}
	if ar, _ := ctx.Value(ctxCodeFor{}).(*sessions.AuthRequest); ar != nil && ar.ID == id && ar.Done {
		c.AuthRequest = ar
		c.AuthRequestNeverStored = unstored(ctx, id)
	} else if err := b.storeUnstored(ctx, id); err != nil {
		return err
	}
	var err error
	if later, _ := ctx.Value(ctxSessionWrite{}).(*sessionWrite); later != nil && !later.taken {
		// The browser session completeAuthorization saves rides along.
		later.taken = true
		_, err = sessions.RunTogether(ctx, b.sessions, sessions.Together{SaveSession: later.rec, ReplacesSession: later.replaces, SaveCode: c})
	} else {
		err = b.sessions.SaveCode(ctx, c)
	}
	if err == nil && c.AuthRequestNeverStored {
		keptByCode(ctx, id)
	}
	return storeError("saving the authorization code", err)
}

func (s opStorage) DeleteAuthRequest(ctx context.Context, id string) error {
	err := s.b.sessions.DeleteAuthRequest(ctx, id)
	if errors.Is(err, sessions.ErrNotFound) {
		return nil
	}
	return storeError("deleting the authorization request", err)
}

// familyOf: every token issued from one authorization shares a family, so a
// replayed code or a reused refresh token revokes them all at once.
func familyOf(req op.TokenRequest) string {
	switch r := req.(type) {
	case authRequest:
		return r.ID
	case *refreshRequest:
		return r.rt.FamilyID
	default:
		return "cc"
	}
}

// accessTokenID is an access token's jti: its family (so /userinfo and
// introspection check revocation with one read), the instant it was issued
// (unix ms, base 36: a sign out everywhere compares it, as iat has whole
// seconds only) and randomness.
func accessTokenID(family string, at time.Time) string {
	return family + "." + strconv.FormatInt(at.UnixMilli(), 36) + "." + randomToken(12)
}

// issuedFromJTI is the issue instant accessTokenID put in jti; false for a
// jti without one (issued before it did).
func issuedFromJTI(jti string) (time.Time, bool) {
	parts := strings.Split(jti, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	ms, err := strconv.ParseInt(parts[1], 36, 64)
	return time.UnixMilli(ms), err == nil
}

func familyFromJTI(jti string) string {
	f, _, _ := strings.Cut(jti, ".")
	return f
}

func (s opStorage) CreateAccessToken(ctx context.Context, req op.TokenRequest) (string, time.Time, error) {
	ttl := s.b.opts.Tokens.Access
	if _, ok := req.(*clientCredentialsRequest); ok {
		ttl = s.b.opts.Tokens.ClientCredentials
	}
	return accessTokenID(familyOf(req), s.b.now()), s.b.now().Add(ttl), nil
}

func (s opStorage) TokenRequestByRefreshToken(ctx context.Context, token string) (op.RefreshTokenRequest, error) {
	// The library's own uses need no claims: no user read beside the token.
	rt, err := s.b.loadRefreshToken(ctx, token)
	req, err := s.b.refreshRequestFor(ctx, rt, err)
	if err != nil {
		return nil, err
	}
	return req, nil
}

func (s opStorage) TerminateSession(context.Context, string, string) error { return nil }

// TerminateSessionFromRequest ends usher's browser session (and, when the
// upstream supports it, the upstream's) before returning to the client.
func (s opStorage) TerminateSessionFromRequest(ctx context.Context, req *op.EndSessionRequest) (string, error) {
	return s.b.endSession(ctx, req)
}

// refreshTokenRef marks the token ID GetRefreshTokenInfo hands the library
// ("rt:<family>.<hash>"), so RevokeToken can tell a refresh token from an
// access token's jti (the library passes both with a user ID).
const refreshTokenRef = "rt:"

func (s opStorage) RevokeToken(ctx context.Context, tokenOrID, userID, clientID string) *oidc.Error {
	b := s.b
	ref, isRefresh := strings.CutPrefix(tokenOrID, refreshTokenRef)
	if !isRefresh && userID != "" { // an access token: tokenOrID is its jti
		if err := b.sessions.RevokeAccessToken(ctx, tokenOrID, b.now().Add(b.opts.Tokens.Access)); err != nil {
			return oidc.ErrServerError().WithParent(err)
		}
		return nil
	}
	var (
		rt  *sessions.RefreshToken
		err error
	)
	if family, hash, ok := strings.Cut(ref, "."); isRefresh && ok {
		rt, err = b.sessions.GetRefreshToken(ctx, family, hash)
	} else {
		rt, err = b.loadRefreshToken(ctx, tokenOrID)
	}
	if err != nil {
		// RFC 7009 §2.2: an invalid token is not an error.
		if errors.Is(err, sessions.ErrNotFound) || errors.Is(err, sessions.ErrRevoked) {
			return nil
		}
		return oidc.ErrServerError().WithParent(err)
	}
	if rt.ClientID != clientID {
		return nil // RFC 7009 §2.1: not this client's to revoke; answered as if done
	}
	// Revoking a refresh token ends its whole sign-in: every token of the family.
	if err := b.sessions.RevokeFamily(ctx, rt.FamilyID, rt.FamilyExpiresAt); err != nil {
		return oidc.ErrServerError().WithParent(err)
	}
	return nil
}

func (s opStorage) GetRefreshTokenInfo(ctx context.Context, clientID, token string) (string, string, error) {
	rt, err := s.b.loadRefreshToken(ctx, token)
	if err != nil || rt.ClientID != clientID {
		return "", "", op.ErrInvalidRefreshToken
	}
	return rt.Subject, refreshTokenRef + rt.FamilyID + "." + rt.Hash, nil
}

// SigningKey is the access-token key; ID tokens are signed with the
// client's key (see createIDToken).
func (s opStorage) SigningKey(context.Context) (op.SigningKey, error) {
	return s.b.keys.accessKey()
}

// SignatureAlgorithms fills discovery's id_token_signing_alg_values_supported.
func (s opStorage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	algs := s.b.keys.algorithms()
	out := make([]jose.SignatureAlgorithm, len(algs))
	for i, a := range algs {
		out[i] = jose.SignatureAlgorithm(a)
	}
	return out, nil
}

func (s opStorage) KeySet(context.Context) ([]op.Key, error) {
	return s.b.keys.published(), nil
}

func (s opStorage) GetClientByClientID(_ context.Context, id string) (op.Client, error) {
	c, ok := s.b.clients[id]
	if !ok {
		return nil, oidc.ErrInvalidClient().WithDescription("client %q is not registered", id)
	}
	return s.b.opClient(c), nil
}

func (s opStorage) AuthorizeClientIDSecret(_ context.Context, id, secret string) error {
	c, ok := s.b.clients[id]
	if !ok || !c.checkSecret(secret) {
		return oidc.ErrInvalidClient().WithDescription("invalid client credentials")
	}
	return nil
}

func (s opStorage) ClientCredentials(ctx context.Context, id, secret string) (op.Client, error) {
	if err := s.AuthorizeClientIDSecret(ctx, id, secret); err != nil {
		return nil, err
	}
	return s.b.opClient(s.b.clients[id]), nil
}

func (s opStorage) ClientCredentialsTokenRequest(_ context.Context, id string, scopes []string) (op.TokenRequest, error) {
	c, ok := s.b.clients[id]
	if !ok || !hasGrant(c, "client_credentials") {
		return nil, oidc.ErrUnauthorizedClient().WithDescription("this client may not use client_credentials")
	}
	if len(scopes) == 0 {
		scopes = c.Scopes
	}
	for _, sc := range scopes {
		if !slices.Contains(c.Scopes, sc) {
			return nil, oidc.ErrInvalidScope().WithDescription("scope %q is not allowed for this client", sc)
		}
	}
	return &clientCredentialsRequest{clientID: id, scopes: scopes, audience: []string{s.b.apiAudience()}}, nil
}

// SetUserinfoFromScopes is deprecated by the library; SetUserinfoFromRequest does the work.
func (s opStorage) SetUserinfoFromScopes(context.Context, *oidc.UserInfo, string, string, []string) error {
	return nil
}

func (s opStorage) SetUserinfoFromRequest(ctx context.Context, ui *oidc.UserInfo, req op.IDTokenRequest, scopes []string) error {
	if err := s.b.fillUserinfo(ctx, ui, req.GetSubject(), scopes, upstreamOf(req)); err != nil {
		return err
	}
	// The ID token names the usher session it was issued in (OIDC
	// front-/back-channel logout's sid), as the library has no field for it.
	if a, ok := req.(interface{ sessionID() string }); ok && a.sessionID() != "" {
		ui.AppendClaims("sid", a.sessionID())
	}
	return nil
}

func (s opStorage) SetUserinfoFromToken(ctx context.Context, ui *oidc.UserInfo, tokenID, subject, _ string) error {
	revoked, err := s.b.sessions.TokenRevoked(ctx, familyFromJTI(tokenID), tokenID)
	if err != nil {
		return storeError("checking token revocation", err)
	}
	if revoked {
		return oidc.ErrInvalidRequest().WithDescription("access token revoked")
	}
	return s.b.fillUserinfo(ctx, ui, subject, []string{oidc.ScopeOpenID, oidc.ScopeProfile, oidc.ScopeEmail}, nil)
}

// SetIntrospectionFromToken is never reached: server.Introspect answers
// introspection itself (the library would describe the caller, not the token).
func (s opStorage) SetIntrospectionFromToken(context.Context, *oidc.IntrospectionResponse, string, string, string) error {
	return errors.New("broker: introspection is answered by server.Introspect")
}

func (s opStorage) GetPrivateClaimsFromScopes(ctx context.Context, subject, clientID string, scopes []string) (map[string]any, error) {
	return s.b.privateClaims(ctx, subject, clientID)
}

func (s opStorage) GetPrivateClaimsFromRequest(ctx context.Context, req op.TokenRequest, _ []string) (map[string]any, error) {
	if _, ok := req.(*clientCredentialsRequest); ok {
		return map[string]any{claimGrantType: gtyClientCredential}, nil
	}
	own, err := s.b.privateClaims(ctx, req.GetSubject(), "")
	if err != nil {
		return nil, err
	}
	return s.b.withUpstreamClaims(own, upstreamOf(req)), nil
}

func (s opStorage) GetKeyByIDAndClientID(context.Context, string, string) (*jose.JSONWebKey, error) {
	return nil, errors.New("JWT client authentication is not supported")
}

func (s opStorage) ValidateJWTProfileScopes(context.Context, string, []string) ([]string, error) {
	return nil, errors.New("the JWT profile grant is not supported")
}

func (s opStorage) Health(ctx context.Context) error { return s.b.sessions.Ping(ctx) }

// storeError turns a backend failure into an OIDC server error whose message
// says what failed, without leaking internals to the client, answered 503:
// the store is unreachable, the request may be retried.
func storeError(what string, err error) error {
	if err == nil {
		return nil
	}
	return op.NewStatusError(oidc.ErrServerError().WithDescription("temporarily unavailable: %s", what).WithParent(err), http.StatusServiceUnavailable)
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
