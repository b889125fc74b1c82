package devidp

// The claims the store gives the library for ID tokens, userinfo and
// introspection, and the rest of op.Storage: what devidp refuses
// (private_key_jwt, the JWT profile grant) and Health.

import (
	"context"
	"errors"
	"fmt"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// --- claims ---

// SetUserinfoFromScopes is deprecated in the library; SetUserinfoFromRequest does the work.
func (s *store) SetUserinfoFromScopes(context.Context, *oidc.UserInfo, string, string, []string) error {
	return nil
}

// SetUserinfoFromRequest fills the ID token's claims. It must set the
// subject: the library copies the whole userinfo over the token's claims, so
// an empty Subject would ship an ID token without sub.
func (s *store) SetUserinfoFromRequest(_ context.Context, info *oidc.UserInfo, req op.IDTokenRequest, scopes []string) error {
	if err := s.fillUserinfo(info, req.GetSubject(), scopes); err != nil {
		return err
	}
	var org *Organization
	if ar, ok := req.(*authRequest); ok {
		org = ar.org
	}
	s.addIDTokenClaims(info, org)
	return nil
}

func (s *store) SetUserinfoFromToken(_ context.Context, info *oidc.UserInfo, tokenID, subject, _ string) error {
	s.mu.Lock()
	t, ok := s.tokens[tokenID]
	var scopes []string
	if ok {
		ok = t.sub == subject && time.Now().Before(t.expires)
		scopes = t.scopes
	}
	s.mu.Unlock()
	if !ok {
		return errors.New("access token invalid or expired")
	}
	return s.fillUserinfo(info, subject, scopes)
}

func (s *store) SetIntrospectionFromToken(_ context.Context, resp *oidc.IntrospectionResponse, tokenID, subject, clientID string) error {
	s.mu.Lock()
	t, ok := s.tokens[tokenID]
	var tok accessToken
	if ok {
		tok = *t
	}
	s.mu.Unlock()
	if !ok || tok.sub != subject || tok.clientID != clientID || time.Now().After(tok.expires) {
		return errors.New("token is not active for this client")
	}
	info := new(oidc.UserInfo)
	if err := s.fillUserinfo(info, subject, tok.scopes); err != nil {
		return err
	}
	resp.SetUserInfo(info)
	resp.Scope = tok.scopes
	resp.ClientID = tok.clientID
	resp.Expiration = oidc.FromTime(tok.expires)
	return nil
}

// fillUserinfo sets the claims Auth0 sets for these scopes.
func (s *store) fillUserinfo(info *oidc.UserInfo, sub string, scopes []string) error {
	u, ok := s.user(sub)
	if !ok {
		return fmt.Errorf("unknown user %q", sub)
	}
	info.Subject = u.sub
	for _, scope := range scopes {
		switch scope {
		case oidc.ScopeProfile:
			info.Name = u.name
			info.Nickname = u.nickname()
			info.Picture = u.picture()
		case oidc.ScopeEmail:
			info.Email = u.email
			info.EmailVerified = oidc.Bool(u.emailVerified)
			// The typed field is omitempty, which would drop a false value;
			// Auth0 sends email_verified:false explicitly, and so do we.
			info.AppendClaims("email_verified", u.emailVerified)
		}
	}
	return nil
}

func (s *store) GetPrivateClaimsFromScopes(context.Context, string, string, []string) (map[string]any, error) {
	return nil, nil
}

func (s *store) GetKeyByIDAndClientID(context.Context, string, string) (*jose.JSONWebKey, error) {
	return nil, errors.New("devidp: private_key_jwt is not supported")
}

func (s *store) ValidateJWTProfileScopes(context.Context, string, []string) ([]string, error) {
	return nil, errors.New("devidp: JWT profile grant is not supported")
}

func (s *store) Health(context.Context) error { return nil }
