package broker

import (
	"slices"
	"strings"

	"github.com/zitadel/oidc/v3/pkg/oidc"

	"github.com/usher-oidc/usher/broker/admin"
)

// Access tokens for the admin API are client_credentials tokens, marked so
// that no token issued to a person can pass for one (issue 10): they carry
// `gty: client-credentials` (as Auth0 marks its M2M tokens) and the admin
// API's own audience, {issuer}/api.
const (
	claimGrantType      = "gty"
	gtyClientCredential = "client-credentials"
)

// apiAudience is the audience of client_credentials tokens.
func (b *Broker) apiAudience() string { return strings.TrimSuffix(b.opts.Issuer, "/") + "/api" }

// checkAPIToken accepts only a client_credentials token of a client still
// configured for that grant: marker, audience, and subject = client.
func (b *Broker) checkAPIToken(claims *oidc.AccessTokenClaims) error {
	if gty, _ := claims.Claims[claimGrantType].(string); gty != gtyClientCredential {
		return admin.ErrNotAPIToken
	}
	if !slices.Contains(claims.Audience, b.apiAudience()) {
		return admin.ErrNotAPIToken
	}
	c, ok := b.clients[claims.ClientID]
	if !ok || claims.Subject != claims.ClientID || !hasGrant(c, "client_credentials") {
		return admin.ErrNotAPIToken
	}
	return nil
}
