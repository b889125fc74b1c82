package broker

import (
	"context"
	"strings"

	"github.com/zitadel/oidc/v3/pkg/oidc"

	"github.com/usher-oidc/usher/broker/upstream"
	"github.com/usher-oidc/usher/sessions"
)

// Upstream claims in usher's tokens (migration from Auth0's tokens, and
// Auth0 Organizations):
//   - upstream.auth0.user_id_claim (default auth0_user_id) carries the Auth0
//     `sub` of the identity that signed in;
//   - upstream.pass_through_claims and, for Auth0, org_id and org_name are
//     copied from the upstream ID token.
// The upstream names them (upstream.TokenClaims).
// They are stored per sign-in (sessions.Upstream on the auth request, the
// browser session and the refresh token family), not per user: a user with
// several identities (linked accounts) gets the sub of the identity that
// signed in, and a refresh repeats its own sign-in's values, never those of
// a later sign-in with another identity or organization. /userinfo repeats
// what the presented access token carries. usher's own claims (roles, the
// grant's claims) win over an upstream claim of the same name.

// upstreamTokenClaims are the claims up adds to a token whose usher claims
// are own: a name own already has is left out (usher's grant wins).
func (b *Broker) upstreamTokenClaims(up *sessions.Upstream, own map[string]any) map[string]any {
	if up == nil {
		return nil
	}
	tc := b.upstream.TokenClaims()
	out := map[string]any{}
	add := func(k string, v any) {
		if _, taken := own[k]; !taken && v != nil {
			out[k] = v
		}
	}
	// Only names configured now: a claim dropped from the config stops at once,
	// also for sign-ins made before.
	for _, n := range tc.Copied {
		add(n, up.Claims[n])
	}
	if tc.Subject != "" && up.Subject != "" {
		add(tc.Subject, up.Subject)
	}
	return out
}

// withUpstreamClaims is own plus up's claims, as a new map (own may be the
// response's shared claims cache).
func (b *Broker) withUpstreamClaims(own map[string]any, up *sessions.Upstream) map[string]any {
	extra := b.upstreamTokenClaims(up, own)
	if len(extra) == 0 {
		return own
	}
	out := make(map[string]any, len(own)+len(extra))
	for k, v := range own {
		out[k] = v
	}
	for k, v := range extra {
		out[k] = v
	}
	return out
}

// upstreamOf is the sign-in a token request continues.
func upstreamOf(req any) *sessions.Upstream {
	switch r := req.(type) {
	case authRequest:
		return r.Upstream
	case idAuthRequest:
		return r.Upstream
	case *refreshRequest:
		return r.rt.Upstream
	case idTokenRequest:
		return upstreamOf(r.IDTokenRequest)
	}
	return nil
}

// fromAccessToken rebuilds, for /userinfo, the upstream claims an access
// token carries: the same names, read back from the verified token.
func (b *Broker) fromAccessToken(claims map[string]any) *sessions.Upstream {
	tc := b.upstream.TokenClaims()
	up := &sessions.Upstream{Claims: map[string]any{}}
	for _, n := range tc.Copied {
		if v, ok := claims[n]; ok {
			up.Claims[n] = v
		}
	}
	if n := tc.Subject; n != "" {
		up.Subject, _ = claims[n].(string)
	}
	return up
}

// Organizations (upstream.Organizations; Auth0's:
// https://auth0.com/docs/manage-users/organizations/using-tokens): usher
// forwards `organization`, and an `invitation` that is not usher's own
// (inv_…, invref_…), to the upstream, which copies its organization claims
// into usher's tokens.

// isUsherInvitation: usher's invitation tokens and references.
func isUsherInvitation(tok string) bool {
	return strings.HasPrefix(tok, "inv_") || strings.HasPrefix(tok, referencePrefix)
}

// maxOrganizationLen bounds `organization` (Auth0's org IDs are org_ + 16
// characters, its names at most 50).
const maxOrganizationLen = 100

// checkOrganizationParam refuses an `organization` usher cannot forward.
func (b *Broker) checkOrganizationParam(org, upstreamInvitation string) *oidc.Error {
	if org == "" && upstreamInvitation == "" {
		return nil
	}
	if b.caps.orgs == nil {
		return oidc.ErrInvalidRequest().WithDescription("organization and Auth0 invitations need an Auth0 upstream; this usher's upstream is not Auth0")
	}
	if org == "" {
		return oidc.ErrInvalidRequest().WithDescription("an Auth0 organization invitation needs its organization parameter")
	}
	if len(org) > maxOrganizationLen || !claimSafe(org) || len(upstreamInvitation) > 200 || !claimSafe(upstreamInvitation) {
		return oidc.ErrInvalidRequest().WithDescription("organization or invitation is malformed")
	}
	return nil
}

func claimSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7E {
			return false
		}
	}
	return true
}

// sameOrganization: the session may answer a request for org (both without
// an organization, or the session's sign-in went through org). An upstream
// without organizations has none.
func (b *Broker) sameOrganization(org string, up *sessions.Upstream) bool {
	if b.caps.orgs == nil {
		return org == ""
	}
	var claims map[string]any
	if up != nil {
		claims = up.Claims
	}
	return b.caps.orgs.InOrganization(org, claims)
}

// checkOrganization: the sign-in went through the organization asked for.
func (b *Broker) checkOrganization(ctx context.Context, ar *sessions.AuthRequest, id *upstream.Identity) *oidc.Error {
	if ar.Organization == "" {
		return nil
	}
	if b.caps.orgs == nil || !b.caps.orgs.InOrganization(ar.Organization, id.Claims) {
		b.log.WarnContext(ctx, "upstream ID token is not for the requested organization", "organization", ar.Organization)
		return oidc.ErrAccessDenied().WithDescription("the sign-in service did not sign in to the requested organization")
	}
	return nil
}
