package auth0

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/usher-oidc/usher/broker/upstream"
	"github.com/usher-oidc/usher/broker/upstream/oidc"
)

// Options configure an Auth0 upstream.
type Options struct {
	// Issuer is the tenant's issuer at the domain usher signs in at,
	// https://TENANT/ (trailing slash included) or the custom domain's.
	Issuer       string
	ClientID     string
	ClientSecret string
	Scopes       []string
	HTTPClient   *http.Client
	// IdentityIssuer is the issuer identities are stored under when it
	// differs from Issuer (the canonical domain's behind a custom domain).
	IdentityIssuer string
	// PassThroughClaims are ID token claims (an Action's
	// https://example.com/plan, say) copied into usher's tokens; org_id and
	// org_name always are.
	PassThroughClaims []string
	// UserIDClaim names the claim carrying the Auth0 `sub` of the identity
	// that signed in ("" = none).
	UserIDClaim string
	// Mirror, when set, is the Management API: the upstream then is an
	// upstream.AccountFinder and an upstream.GrantMirror.
	Mirror *Mirror
}

// Upstream is an Auth0 tenant: the OIDC upstream with Auth0's conventions.
// It implements upstream.Upstream, upstream.Organizations and
// upstream.LogoutRedirector.
type Upstream struct {
	*oidc.Upstream
	userIDClaim string
}

var (
	_ upstream.Upstream           = (*Upstream)(nil)
	_ upstream.Organizations      = (*Upstream)(nil)
	_ upstream.LogoutRedirector   = (*Upstream)(nil)
	_ upstream.AccountFinder      = managed{}
	_ upstream.GrantMirror        = managed{}
	_ upstream.ConnectionResolver = managed{}
)

// hs256Advice names the Auth0 setting to change
// (https://auth0.com/docs/get-started/applications/change-application-signing-algorithms).
const hs256Advice = "the upstream signs ID tokens with HS256 (the client secret); usher accepts only asymmetric signatures, so every sign-in fails. " +
	"In Auth0: Applications → <app> → Settings → Advanced → OAuth → JSON Web Token Signature Algorithm: RS256"

// New builds the Auth0 upstream; it does not contact the tenant. With
// o.Mirror it also answers upstream.AccountFinder and upstream.GrantMirror.
func New(o Options) upstream.Upstream {
	u := NewUpstream(o)
	if o.Mirror != nil {
		return managed{u, o.Mirror}
	}
	return u
}

// NewUpstream is the Auth0 upstream without the Management API.
func NewUpstream(o Options) *Upstream {
	copied := slices.Clone(o.PassThroughClaims)
	for _, n := range []string{ClaimOrgID, ClaimOrgName} {
		if !slices.Contains(copied, n) {
			copied = append(copied, n)
		}
	}
	return &Upstream{
		Upstream: oidc.New(oidc.Options{
			Issuer: o.Issuer, ClientID: o.ClientID, ClientSecret: o.ClientSecret, Scopes: o.Scopes,
			HTTPClient: o.HTTPClient, IdentityIssuer: o.IdentityIssuer, CopiedClaims: copied,
			// Auth0 puts the scopes' claims in the ID token and rate-limits
			// /userinfo per user, so asking adds nothing and can fail.
			NoUserinfo:  true,
			Connection:  ConnectionOf,
			HS256Advice: hs256Advice,
		}),
		userIDClaim: o.UserIDClaim,
	}
}

// TokenClaims: the copied claims (pass-through, org_id, org_name) and the
// user ID claim.
func (u *Upstream) TokenClaims() upstream.TokenClaims {
	tc := u.Upstream.TokenClaims()
	tc.Subject = u.userIDClaim
	return tc
}

// LoginURL adds Auth0's parameters to the OIDC authorize URL: organization
// and invitation, and screen_hint=signup for r.Signup unless the app chose
// a screen.
func (u *Upstream) LoginURL(r upstream.LoginRequest) string {
	extra := map[string]string{"organization": r.Organization, "invitation": r.Invitation}
	if r.Signup && r.ScreenHint == "" {
		extra["screen_hint"] = "signup"
	}
	return u.AuthCodeURL(r, extra)
}

// ConnectionOf names the connection of an Auth0 `sub` as far as the sub
// tells ("" for a sub without a prefix): the middle part of
// strategy|connection|id (enterprise, custom social), else the prefix,
// Username-Password-Authentication for auth0|… (Auth0's default database
// connection: every database connection's subs are auth0|…). Where that is
// a guess (ConnectionAmbiguous), the Management API knows
// (Mirror.Connection).
func ConnectionOf(sub string) string {
	prefix, rest, ok := strings.Cut(sub, "|")
	if !ok {
		return ""
	}
	if conn, _, ok := strings.Cut(rest, "|"); ok && conn != "" {
		return conn
	}
	if prefix == "auth0" {
		return "Username-Password-Authentication"
	}
	return prefix
}

// enterpriseStrategies are the Auth0 strategies whose subs name the
// strategy, not the connection, when they have no middle part.
var enterpriseStrategies = map[string]bool{
	"samlp": true, "waad": true, "adfs": true, "ad": true, "auth0-adldap": true, "oidc": true,
	"okta": true, "google-apps": true, "pingfederate": true, "ip": true, "office365": true, "sharepoint": true,
}

// ConnectionAmbiguous: ConnectionOf(sub) is a guess, the sub being a
// database one (auth0|id) or an enterprise one without the connection
// (samlp|id). Social subs (google-oauth2|id…) name their connection.
func ConnectionAmbiguous(sub string) bool {
	prefix, rest, ok := strings.Cut(sub, "|")
	if !ok {
		return false
	}
	if conn, _, ok := strings.Cut(rest, "|"); ok && conn != "" {
		return false
	}
	return prefix == "auth0" || enterpriseStrategies[prefix]
}

// LogoutURL is the tenant's logout that returns to r.Done carrying r.State.
// A tenant with RP-initiated logout advertises its end_session_endpoint
// (the OIDC logout); otherwise, or when that is a /v2/logout, Auth0's
// /v2/logout, which has no state: it goes in returnTo's query (Auth0
// ignores the query when matching Allowed Logout URLs).
func (u *Upstream) LogoutURL(ctx context.Context, r upstream.LogoutRequest) string {
	if err := u.Ready(ctx); err != nil {
		return ""
	}
	ep := u.EndSessionEndpoint()
	if ep == "" {
		ep = strings.TrimSuffix(u.Issuer(), "/") + "/v2/logout"
	}
	if !strings.HasSuffix(ep, "/v2/logout") {
		return u.Upstream.LogoutURL(ctx, r)
	}
	q := url.Values{}
	q.Set("client_id", u.ClientID())
	q.Set("returnTo", r.Done+"?state="+url.QueryEscape(r.State))
	return oidc.WithQuery(ep, q)
}

// managed is the Auth0 upstream with the Management API.
type managed struct {
	*Upstream
	m *Mirror
}

func (m managed) HasAccount(ctx context.Context, email string) (bool, error) {
	return m.m.HasAccount(ctx, email)
}

// Connection asks the Management API for an ambiguous sub's connection
// (see Mirror.Connection); upstream.ErrConnectionKnown for the others.
func (m managed) Connection(ctx context.Context, sub string) (string, error) {
	if !ConnectionAmbiguous(sub) {
		return "", upstream.ErrConnectionKnown
	}
	return m.m.Connection(ctx, sub)
}

func (m managed) EnqueueRevocation(ctx context.Context, upstreamUserID, role, claimKey string) error {
	return m.m.EnqueueRevocation(ctx, upstreamUserID, role, claimKey)
}
