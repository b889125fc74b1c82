package broker

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// Client is a relying party registered in config.
type Client struct {
	ID   string
	Name string
	// Public clients (SPAs) have no secret and must use PKCE S256.
	Public bool
	// SecretSHA256 is the hex SHA-256 of a confidential client's secret.
	SecretSHA256           string
	RedirectURIs           []string
	PostLogoutRedirectURIs []string
	// InitiateLoginURI is where /invite sends the browser (OIDC Core §4).
	InitiateLoginURI string
	// AllowedOrigins for CORS; derived from RedirectURIs when empty.
	AllowedOrigins []string
	GrantTypes     []string
	// Scopes a confidential client may ask for in client_credentials.
	Scopes []string
	// Audiences are the APIs this client may ask access tokens for
	// (`audience` on /authorize); without one, tokens are for the client.
	Audiences []string
	// ResourceServer may introspect tokens issued to other clients (an API
	// checking the tokens it receives); other clients only their own.
	ResourceServer bool
	// ForwardInvitation: initiate_login_uri receives a single-use invitation
	// reference (see invitationReference), never the token.
	ForwardInvitation bool
	// IDTokenSigningAlg is id_token_signed_response_alg: RS256 (default),
	// ES256 or EdDSA.
	IDTokenSigningAlg string
}

// clientIDTokenAlg is the algorithm of the client's ID tokens.
func (b *Broker) clientIDTokenAlg(id string) string {
	if c, ok := b.clients[id]; ok && c.IDTokenSigningAlg != "" {
		return c.IDTokenSigningAlg
	}
	return DefaultIDTokenAlgorithm
}

// clientIDTokenAlgs: the algorithms usher needs ID token keys for.
func clientIDTokenAlgs(clients []Client) []string {
	var out []string
	for _, c := range clients {
		if c.IDTokenSigningAlg != "" {
			out = append(out, c.IDTokenSigningAlg)
		}
	}
	return out
}

func (c *Client) checkSecret(secret string) bool {
	if c.Public || c.SecretSHA256 == "" {
		return false
	}
	want, err := hex.DecodeString(c.SecretSHA256)
	if err != nil {
		return false
	}
	got := sha256.Sum256([]byte(secret))
	return subtle.ConstantTimeCompare(want, got[:]) == 1
}

func (c *Client) origins() []string {
	if len(c.AllowedOrigins) > 0 {
		return c.AllowedOrigins
	}
	var out []string
	for _, u := range c.RedirectURIs {
		p, err := url.Parse(u)
		if err != nil || p.Host == "" {
			continue
		}
		o := p.Scheme + "://" + p.Host
		if !slices.Contains(out, o) {
			out = append(out, o)
		}
	}
	return out
}

// opClient adapts a Client to op.Client.
type opClient struct {
	c        *Client
	loginURL func(id string) string
	idTTL    time.Duration
	devMode  bool
}

var _ op.Client = (*opClient)(nil)

func (o *opClient) GetID() string                       { return o.c.ID }
func (o *opClient) RedirectURIs() []string              { return o.c.RedirectURIs }
func (o *opClient) PostLogoutRedirectURIs() []string    { return o.c.PostLogoutRedirectURIs }
func (o *opClient) LoginURL(id string) string           { return o.loginURL(id) }
func (o *opClient) AccessTokenType() op.AccessTokenType { return op.AccessTokenTypeJWT }
func (o *opClient) IDTokenLifetime() time.Duration      { return o.idTTL }

// DevMode is the library's only switch for http redirect URIs on a browser
// client. It is consulted only after the exact-match check, and config allows
// http solely on loopback hosts, so turning it on for a loopback client admits
// nothing but its registered loopback URIs.
func (o *opClient) DevMode() bool {
	for _, u := range o.c.RedirectURIs {
		if p, err := url.Parse(u); err == nil && p.Scheme == "http" && isLoopback(p.Hostname()) {
			return true
		}
	}
	return false
}
func (o *opClient) ClockSkew() time.Duration { return 0 }

func (o *opClient) ApplicationType() op.ApplicationType {
	if o.c.Public {
		return op.ApplicationTypeUserAgent
	}
	return op.ApplicationTypeWeb
}

func (o *opClient) AuthMethod() oidc.AuthMethod {
	if o.c.Public {
		return oidc.AuthMethodNone
	}
	return oidc.AuthMethodBasic
}

// ResponseTypes: code only. No implicit or hybrid flow, ever.
func (o *opClient) ResponseTypes() []oidc.ResponseType {
	return []oidc.ResponseType{oidc.ResponseTypeCode}
}

func (o *opClient) GrantTypes() []oidc.GrantType {
	out := make([]oidc.GrantType, 0, len(o.c.GrantTypes))
	for _, g := range o.c.GrantTypes {
		out = append(out, oidc.GrantType(g))
	}
	return out
}

func (o *opClient) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}

func (o *opClient) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}

func (o *opClient) IsScopeAllowed(scope string) bool {
	return slices.Contains(o.c.Scopes, scope)
}

// IDTokenUserinfoClaimsAssertion: SPAs read profile and email from the ID
// token, so put them there even though an access token is issued too.
func (o *opClient) IDTokenUserinfoClaimsAssertion() bool { return true }

func hasGrant(c *Client, g string) bool { return slices.Contains(c.GrantTypes, g) }

func originOf(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return ""
	}
	return strings.ToLower(p.Scheme + "://" + p.Host)
}
