package config

import (
	"strings"
)

// Upstream is the identity provider usher is a client of: either a generic
// OIDC provider (issuer + client_id) or an Auth0 tenant (auth0.domain +
// auth0.client_id).
type Upstream struct {
	Issuer              string   `yaml:"issuer"`
	ClientID            string   `yaml:"client_id"`
	ClientSecret        string   `yaml:"client_secret" usher:"secret"`
	Scopes              []string `yaml:"scopes"`
	LinkByVerifiedEmail bool     `yaml:"link_by_verified_email"`
	// IssuerAliases are earlier issuers of the same accounts (same subs),
	// e.g. the tenant's canonical https://TENANT.REGION.auth0.com/ after a
	// switch to a custom domain. usher keys upstream identities by the first
	// alias, so the users stored under it stay the same users.
	IssuerAliases []string `yaml:"issuer_aliases"`
	// PassThroughClaims are upstream ID token claims (e.g. an Auth0 Action's
	// https://example.com/plan) copied into usher's ID and access tokens and
	// userinfo; usher's own claims of the same name win.
	PassThroughClaims []string `yaml:"pass_through_claims"`
	Auth0             Auth0    `yaml:"auth0"`
}

// Auth0 configures an Auth0 tenant as the upstream.
type Auth0 struct {
	// Domain is the tenant host ("tenant.eu.auth0.com"); an explicit
	// http:// or https:// scheme is kept (the local stand-in uses http).
	Domain       string     `yaml:"domain"`
	ClientID     string     `yaml:"client_id"`
	ClientSecret string     `yaml:"client_secret" usher:"secret"`
	Connections  []string   `yaml:"connections"`
	Management   Management `yaml:"management"`
	// UserIDClaim names the claim carrying the Auth0 `sub` (user_id) of the
	// identity that signed in, for apps migrating from Auth0's tokens.
	// Default auth0_user_id; "" = off.
	UserIDClaim string `yaml:"user_id_claim"`
}

// Management configures the optional Auth0 Management API mirror.
type Management struct {
	// Domain is the tenant's canonical domain (tenant.eu.auth0.com), for the
	// Management API's base URL and token audience; empty = auth0.domain.
	// Set it when auth0.domain is a custom domain: Auth0 only issues
	// Management API tokens for https://<canonical domain>/api/v2/.
	Domain       string `yaml:"domain"`
	ClientID     string `yaml:"client_id"`
	ClientSecret string `yaml:"client_secret" usher:"secret"`
	CreateRoles  bool   `yaml:"create_roles"`
	// RateLimit is the tenant's Management API budget usher keeps to, all
	// replicas together (on Redis; on bbolt the one process).
	RateLimit ManagementRateLimit `yaml:"rate_limit"`
}

// ManagementRateLimit is a Management API budget: PerSecond calls a second,
// Burst of them at once at most. The defaults are a Free or non-production
// tenant's (about 2/s, small bursts); a paid tenant may raise them to its
// plan's limits.
type ManagementRateLimit struct {
	PerSecond float64 `yaml:"per_second"`
	Burst     int     `yaml:"burst"`
}

// Default management rate limit (a Free tenant's).
const (
	DefaultManagementPerSecond = 2
	DefaultManagementBurst     = 5
)

// Enabled reports whether the Management API mirror is configured.
func (m Management) Enabled() bool { return m.ClientID != "" }

// IsAuth0 reports whether the upstream is configured as an Auth0 tenant.
func (u Upstream) IsAuth0() bool { return u.Auth0.Domain != "" }

// EffectiveIssuer is the upstream issuer exactly as its discovery document
// states it: upstream.issuer, or for Auth0 "https://<domain>/" (an explicit
// scheme in the domain is kept; always exactly one trailing slash).
func (u Upstream) EffectiveIssuer() string {
	if !u.IsAuth0() {
		return u.Issuer
	}
	return domainIssuer(u.Auth0.Domain)
}

// EffectiveClientID is usher's client ID at the upstream.
func (u Upstream) EffectiveClientID() string {
	if u.IsAuth0() {
		return u.Auth0.ClientID
	}
	return u.ClientID
}

// EffectiveClientSecret is usher's client secret at the upstream.
func (u Upstream) EffectiveClientSecret() string {
	if u.IsAuth0() {
		return u.Auth0.ClientSecret
	}
	return u.ClientSecret
}

// ManagementDomain is the domain the Management API is called at:
// auth0.management.domain, or auth0.domain when that is unset.
func (u Upstream) ManagementDomain() string {
	if d := strings.TrimSpace(u.Auth0.Management.Domain); d != "" {
		return d
	}
	return u.Auth0.Domain
}

// IdentityIssuer is the issuer upstream identities are keyed by: the first
// of upstream.issuer_aliases; for Auth0 with auth0.management.domain set,
// the tenant's canonical issuer https://<management.domain>/ (the same
// accounts answer at the canonical and the custom domain); otherwise the
// effective issuer.
func (u Upstream) IdentityIssuer() string {
	switch {
	case len(u.IssuerAliases) > 0:
		return u.IssuerAliases[0]
	case u.IsAuth0() && strings.TrimSpace(u.Auth0.Management.Domain) != "":
		return domainIssuer(u.Auth0.Management.Domain)
	}
	return u.EffectiveIssuer()
}

func domainIssuer(domain string) string {
	d := strings.TrimRight(strings.TrimSpace(domain), "/")
	if !hasHTTPScheme(d) {
		d = "https://" + d
	}
	return d + "/"
}

func hasHTTPScheme(s string) bool {
	l := strings.ToLower(s)
	return strings.HasPrefix(l, "http://") || strings.HasPrefix(l, "https://")
}
