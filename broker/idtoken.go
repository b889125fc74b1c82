package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/crypto"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// createIDToken is op.CreateIDToken (zitadel/oidc v3.52.0, pkg/op/token.go)
// for the requests usher answers (no token exchange, no actor), with two
// costs taken out: the payload is written in one pass (marshalIDClaims)
// instead of by IDTokenClaims.MarshalJSON, which encodes the registered
// claims, decodes them into a map with the private ones and encodes that
// again (1.25 s against the signature's 2.06 s in a refresh benchmark's
// CPU profile), and the key's go-jose signer is made once
// (signingKey.idSigner) instead of per token. The claims are the library's
// own (NewIDTokenClaims, ClaimHash, SetUserInfo);
// TestMarshalIDClaimsMatchesTheLibrary holds the payload to the library's.
func (b *Broker) createIDToken(ctx context.Context, req op.IDTokenRequest, client op.Client, key *signingKey, accessToken, code string) (string, error) {
	claims, err := b.idTokenClaims(ctx, req, client, key.alg, accessToken, code)
	if err != nil {
		return "", err
	}
	payload, err := marshalIDClaims(claims)
	return signJWT(key.idSigner, "ID token", payload, err)
}

// signJWT signs a JWT payload (err: the payload's encoding failed) as the
// token endpoint answers: a failure is a server_error naming what.
func signJWT(signer jose.Signer, what string, payload []byte, err error) (string, error) {
	if err != nil {
		return "", oidc.ErrServerError().WithParent(fmt.Errorf("encoding the %s: %w", what, err))
	}
	signed, err := crypto.SignPayload(payload, signer)
	if err != nil {
		return "", oidc.ErrServerError().WithParent(fmt.Errorf("signing the %s: %w", what, err))
	}
	return signed, nil
}

// idTokenClaims are the claims op.CreateIDToken puts in the ID token,
// step by step as it does.
func (b *Broker) idTokenClaims(ctx context.Context, req op.IDTokenRequest, client op.Client, alg jose.SignatureAlgorithm, accessToken, code string) (*oidc.IDTokenClaims, error) {
	exp := time.Now().UTC().Add(client.ClockSkew()).Add(client.IDTokenLifetime())
	var acr, nonce string
	if ar, ok := req.(op.AuthRequest); ok {
		acr, nonce = ar.GetACR(), ar.GetNonce()
	}
	claims := oidc.NewIDTokenClaims(op.IssuerFromContext(ctx), req.GetSubject(), req.GetAudience(), exp, req.GetAuthTime(), nonce, acr, req.GetAMR(), req.GetClientID(), client.ClockSkew())
	scopes := client.RestrictAdditionalIdTokenScopes()(req.GetScopes())
	if accessToken != "" {
		atHash, err := oidc.ClaimHash(accessToken, alg)
		if err != nil {
			return nil, err
		}
		claims.AccessTokenHash = atHash
		if !client.IDTokenUserinfoClaimsAssertion() {
			scopes = withoutUserinfoScopes(scopes)
		}
	}
	if len(scopes) > 0 {
		// The library calls SetUserinfoFromScopes first: usher's does nothing.
		info := new(oidc.UserInfo)
		if err := b.storage.SetUserinfoFromRequest(ctx, info, req, scopes); err != nil {
			return nil, err
		}
		claims.SetUserInfo(info)
		liftSessionID(claims)
	}
	if code != "" {
		codeHash, err := oidc.ClaimHash(code, alg)
		if err != nil {
			return nil, err
		}
		claims.CodeHash = codeHash
	}
	return claims, nil
}

// liftSessionID moves the sid that SetUserinfoFromRequest adds as a private
// claim (the UserInfo it fills has no field for it) into the ID token's own
// field: the same payload, without a clash for appendPrivateClaims to read
// the registered claims back for.
func liftSessionID(c *oidc.IDTokenClaims) {
	if sid, ok := c.Claims["sid"].(string); ok && c.SessionID == "" {
		c.SessionID = sid
		delete(c.Claims, "sid")
	}
}

// withoutUserinfoScopes is the library's removeUserinfoScopes: without
// userinfo assertion, profile claims come from userinfo, not the ID token.
func withoutUserinfoScopes(scopes []string) []string {
	out := make([]string, 0, len(scopes))
	for _, s := range scopes {
		switch s {
		case oidc.ScopeProfile, oidc.ScopeEmail, oidc.ScopeAddress, oidc.ScopePhone:
			continue
		}
		out = append(out, s)
	}
	return out
}

// registeredIDClaims is oidc.IDTokenClaims without its MarshalJSON.
type registeredIDClaims oidc.IDTokenClaims

// marshalIDClaims is the JWT payload of c: the registered claims, then the
// private ones (appendPrivateClaims).
func marshalIDClaims(c *oidc.IDTokenClaims) ([]byte, error) {
	reg, err := json.Marshal((*registeredIDClaims)(c))
	if err != nil {
		return nil, err
	}
	return appendPrivateClaims(reg, c.Claims, registeredIDNames())
}
