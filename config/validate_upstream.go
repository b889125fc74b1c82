package config

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/usher-oidc/usher/grants"
)

func (c *Config) checkUpstream(p *problems) {
	u := c.Upstream
	a := u.Auth0
	generic := u.Issuer != ""
	auth0 := a.Domain != ""
	switch {
	case !generic && !auth0:
		p.add("upstream", "required: set either upstream.issuer and upstream.client_id (any OIDC provider) or upstream.auth0.domain and upstream.auth0.client_id (Auth0)")
	case generic && auth0:
		p.add("upstream.auth0.domain", "set either upstream.issuer or upstream.auth0.domain, not both")
	case generic:
		checkGenericUpstream(p, u)
	case auth0:
		checkAuth0Upstream(p, u)
	}
	c.checkUpstreamClaims(p)
	for i, conn := range a.Connections {
		if strings.TrimSpace(conn) == "" {
			p.add(fmt.Sprintf("upstream.auth0.connections[%d]", i), "must not be empty")
		}
	}
	checkManagement(p, a.Management, auth0)
	c.checkDomainsAndAliases(p)
	checkUpstreamScopes(p, u.Scopes)
}

// checkGenericUpstream checks an upstream given by its issuer (any OIDC
// provider): it needs a client ID, and takes none of the Auth0 settings.
func checkGenericUpstream(p *problems, u Upstream) {
	a := u.Auth0
	checkBaseURL(p, "upstream.issuer", u.Issuer)
	if u.ClientID == "" {
		p.add("upstream.client_id", "required when upstream.issuer is set")
	}
	for _, f := range []struct {
		path string
		set  bool
	}{
		{"upstream.auth0.client_id", a.ClientID != ""},
		{"upstream.auth0.client_secret", a.ClientSecret != ""},
		{"upstream.auth0.connections", len(a.Connections) > 0},
	} {
		if f.set {
			p.add(f.path, "only applies with upstream.auth0.domain")
		}
	}
}

// checkAuth0Upstream checks an Auth0 upstream: its client is
// upstream.auth0's, not upstream's.
func checkAuth0Upstream(p *problems, u Upstream) {
	a := u.Auth0
	checkAuth0Domain(p, a.Domain)
	if a.ClientID == "" {
		p.add("upstream.auth0.client_id", "required when upstream.auth0.domain is set")
	}
	if u.ClientID != "" {
		p.add("upstream.client_id", "only applies with upstream.issuer; for Auth0 use upstream.auth0.client_id")
	}
	if u.ClientSecret != "" {
		p.add("upstream.client_secret", "only applies with upstream.issuer; for Auth0 use upstream.auth0.client_secret (USHER_UPSTREAM_AUTH0_CLIENT_SECRET)")
	}
}

// checkManagement checks upstream.auth0.management, the Management API
// mirror: Auth0 only, its client ID and secret together, and its budget.
func checkManagement(p *problems, m Management, auth0 bool) {
	if (m.ClientID != "" || m.ClientSecret != "" || m.CreateRoles) && !auth0 {
		p.add("upstream.auth0.management", "the Management API mirror requires upstream.auth0.domain")
	} else {
		if m.ClientID != "" && m.ClientSecret == "" {
			p.add("upstream.auth0.management.client_secret", "required when upstream.auth0.management.client_id is set (set USHER_UPSTREAM_AUTH0_MANAGEMENT_CLIENT_SECRET)")
		}
		if m.ClientID == "" && m.ClientSecret != "" {
			p.add("upstream.auth0.management.client_id", "required when upstream.auth0.management.client_secret is set")
		}
		if m.CreateRoles && m.ClientID == "" {
			p.add("upstream.auth0.management.create_roles", "requires upstream.auth0.management.client_id")
		}
	}
	// 0 is the default (as in a config built without Default).
	if r := m.RateLimit.PerSecond; !(r >= 0 && r <= 1000) { // also NaN
		p.add("upstream.auth0.management.rate_limit.per_second", "must be more than 0 and at most 1000, or 0 for the default %d (got %v)", DefaultManagementPerSecond, r)
	}
	if b := m.RateLimit.Burst; b < 0 || b > 1000 {
		p.add("upstream.auth0.management.rate_limit.burst", "must be between 1 and 1000, or 0 for the default %d (got %d)", DefaultManagementBurst, b)
	}
}

// checkUpstreamScopes checks the scopes usher asks the upstream for, openid
// among them.
func checkUpstreamScopes(p *problems, scopes []string) {
	hasOpenID := false
	for i, s := range scopes {
		if !scopeRe.MatchString(s) {
			p.add(fmt.Sprintf("upstream.scopes[%d]", i), "%q is not a valid scope", s)
		}
		if s == "openid" {
			hasOpenID = true
		}
	}
	if !hasOpenID {
		p.add("upstream.scopes", "must include openid")
	}
}

func checkAuth0Domain(p *problems, d string) { checkTenantHost(p, "upstream.auth0.domain", d) }

// checkDomainsAndAliases checks upstream.auth0.management.domain and
// upstream.issuer_aliases.
func (c *Config) checkDomainsAndAliases(p *problems) {
	u := c.Upstream
	if d := u.Auth0.Management.Domain; d != "" {
		if !u.IsAuth0() {
			p.add("upstream.auth0.management.domain", "only applies with upstream.auth0.domain")
		} else {
			checkTenantHost(p, "upstream.auth0.management.domain", d)
		}
	}
	for i, a := range u.IssuerAliases {
		checkBaseURL(p, fmt.Sprintf("upstream.issuer_aliases[%d]", i), a)
	}
}

func checkTenantHost(p *problems, path, d string) {
	raw := strings.TrimSpace(d)
	if strings.Contains(raw, "*") {
		p.add(path, "%q must not contain wildcards", d)
		return
	}
	full := raw
	if !hasHTTPScheme(raw) {
		if strings.Contains(raw, "://") {
			p.add(path, "%q: give the tenant host (tenant.eu.auth0.com), or an http(s):// URL", d)
			return
		}
		full = "https://" + raw
	}
	u, err := url.Parse(full)
	if err != nil || u.Host == "" || u.Hostname() == "" || (u.Path != "" && u.Path != "/") ||
		u.RawQuery != "" || strings.ContainsAny(full, "?#") || u.User != nil {
		p.add(path, "%q must be a tenant host such as tenant.eu.auth0.com (no path)", d)
		return
	}
	if strings.EqualFold(u.Scheme, "http") && !isLoopback(u.Hostname()) {
		p.add(path, "%q: plain http is allowed only for loopback hosts (127.0.0.1, ::1, localhost)", d)
	}
}

// checkUpstreamClaims: upstream-copied claim names follow the rule of every
// claim usher puts in tokens (grants.ValidateClaimName, no namespace: they
// keep their upstream names), and none is claimed twice.
func (c *Config) checkUpstreamClaims(p *problems) {
	u := c.Upstream
	seen := map[string]string{}
	if n := u.Auth0.UserIDClaim; n != "" {
		if err := grants.ValidateClaimName("", n); err != nil {
			p.add("upstream.auth0.user_id_claim", "%v", err)
		}
		seen[n] = "upstream.auth0.user_id_claim"
	}
	for i, n := range u.PassThroughClaims {
		path := fmt.Sprintf("upstream.pass_through_claims[%d]", i)
		if err := grants.ValidateClaimName("", n); err != nil {
			p.add(path, "%v", err)
			continue
		}
		if prev, dup := seen[n]; dup {
			p.add(path, "claim %q is already set by %s", n, prev)
			continue
		}
		seen[n] = path
	}
}
