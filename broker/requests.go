package broker

import (
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/usher-oidc/usher/sessions"
)

// authRequest adapts a stored sessions.AuthRequest to op.AuthRequest.
type authRequest struct{ *sessions.AuthRequest }

var _ op.AuthRequest = authRequest{}

func (a authRequest) GetID() string          { return a.ID }
func (a authRequest) GetACR() string         { return "" }
func (a authRequest) GetAMR() []string       { return a.AMR }
func (a authRequest) GetAuthTime() time.Time { return a.AuthTime }
func (a authRequest) GetClientID() string    { return a.ClientID }
func (a authRequest) GetNonce() string       { return a.Nonce }
func (a authRequest) GetRedirectURI() string { return a.RedirectURI }
func (a authRequest) GetScopes() []string    { return a.Scopes }
func (a authRequest) GetState() string       { return a.State }
func (a authRequest) GetSubject() string     { return a.Subject }
func (a authRequest) sessionID() string      { return a.SessionID }
func (a authRequest) Done() bool             { return a.AuthRequest.Done }
func (a authRequest) GetResponseType() oidc.ResponseType {
	return oidc.ResponseType(a.ResponseType)
}
func (a authRequest) GetResponseMode() oidc.ResponseMode {
	return oidc.ResponseMode(a.ResponseMode)
}
func (a authRequest) GetCodeChallenge() *oidc.CodeChallenge {
	if a.CodeChallenge == "" {
		return nil
	}
	return &oidc.CodeChallenge{Challenge: a.CodeChallenge, Method: oidc.CodeChallengeMethod(a.CodeChallengeMethod)}
}

// refreshRequest adapts a refresh token to op.RefreshTokenRequest; it keeps
// the presented token's hash so the rotation can name its predecessor.
type refreshRequest struct {
	rt     *sessions.RefreshToken
	scopes []string
	// sealed: rt is what the token's seal carries, the store not read yet
	// (openSealedRefresh); the rotation checks it (rotateSealed).
	sealed bool
}

var _ op.RefreshTokenRequest = (*refreshRequest)(nil)

func (r *refreshRequest) GetAMR() []string            { return r.rt.AMR }
func (r *refreshRequest) GetAudience() []string       { return r.rt.Audience }
func (r *refreshRequest) GetAuthTime() time.Time      { return r.rt.AuthTime }
func (r *refreshRequest) GetClientID() string         { return r.rt.ClientID }
func (r *refreshRequest) GetScopes() []string         { return r.scopes }
func (r *refreshRequest) GetSubject() string          { return r.rt.Subject }
func (r *refreshRequest) SetCurrentScopes(s []string) { r.scopes = s }

// clientCredentialsRequest is the token request of a machine client.
type clientCredentialsRequest struct {
	clientID string
	scopes   []string
	audience []string
}

func (c *clientCredentialsRequest) GetSubject() string    { return c.clientID }
func (c *clientCredentialsRequest) GetAudience() []string { return c.audience }
func (c *clientCredentialsRequest) GetScopes() []string   { return c.scopes }

// GetAudience is the access token's audience: the requested API, else the client.
func (a authRequest) GetAudience() []string {
	if len(a.Audience) > 0 {
		return a.Audience
	}
	return []string{a.ClientID}
}

// idTokenView presents a token request to the library's ID-token builder with
// the client as the only audience: an ID token is for the client, even when
// the access token is for an API. An authorization request keeps its type, so
// the library still finds its nonce.
func idTokenView(req op.IDTokenRequest) op.IDTokenRequest {
	if ar, ok := req.(authRequest); ok {
		return idAuthRequest{ar}
	}
	return idTokenRequest{req}
}

type idAuthRequest struct{ authRequest }

func (r idAuthRequest) GetAudience() []string { return []string{r.ClientID} }

type idTokenRequest struct{ op.IDTokenRequest }

func (r idTokenRequest) GetAudience() []string { return []string{r.GetClientID()} }
