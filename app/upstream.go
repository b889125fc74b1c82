package app

import (
	"net/http"

	"github.com/usher-oidc/usher/broker/upstream"
	"github.com/usher-oidc/usher/broker/upstream/auth0"
	"github.com/usher-oidc/usher/broker/upstream/oidc"
	"github.com/usher-oidc/usher/config"
)

// NewUpstream builds the configured upstream: an Auth0 tenant
// (upstream.auth0.domain), with the Management API when mirror is set, or
// any OIDC provider (upstream.issuer). httpClient carries every call to it
// (nil: a default client).
func NewUpstream(cfg *config.Config, httpClient *http.Client, mirror *auth0.Mirror) upstream.Upstream {
	u := cfg.Upstream
	if u.IsAuth0() {
		return auth0.New(auth0.Options{
			Issuer: u.EffectiveIssuer(), ClientID: u.EffectiveClientID(), ClientSecret: u.EffectiveClientSecret(),
			Scopes: u.Scopes, HTTPClient: httpClient, IdentityIssuer: u.IdentityIssuer(),
			PassThroughClaims: u.PassThroughClaims, UserIDClaim: u.Auth0.UserIDClaim, Mirror: mirror,
		})
	}
	return oidc.New(oidc.Options{
		Issuer: u.EffectiveIssuer(), ClientID: u.EffectiveClientID(), ClientSecret: u.EffectiveClientSecret(),
		Scopes: u.Scopes, HTTPClient: httpClient, IdentityIssuer: u.IdentityIssuer(),
		CopiedClaims: u.PassThroughClaims,
		// Auth0-style subjects (connection|id) name their connection under a
		// generic upstream too: an Auth0 tenant used as plain OIDC, or a
		// provider that imitates it.
		Connection: auth0.ConnectionOf,
	})
}
