// Package oidc is the generic upstream: any OpenID Connect provider, as a
// confidential client using the authorization code flow with PKCE (go-oidc
// for discovery and ID token verification, x/oauth2 for the exchange).
//
// It owns discovery (lazy and retried), the authorize URL, the code
// exchange and ID token checks (signature, iss, aud, exp by go-oidc; the
// nonce here; an HS256 tenant named as such), userinfo for an ID token
// without email (OIDC Core §5.4), the claims copied into usher's tokens,
// the issuer identities are stored under (Options.IdentityIssuer), and
// RP-initiated logout. Provider conventions beyond OIDC are options a
// wrapper sets (upstream/auth0 does).
package oidc
