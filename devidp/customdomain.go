package devidp

// Custom domains, as Auth0 documents them:
//
//   - "Auth0 issues tokens with the iss claim of whichever domain you used
//     with the request" (https://auth0.com/docs/customize/custom-domains,
//     "Token issuance"): discovery, ID tokens and userinfo answer with the
//     issuer of the host the request came to, canonical or custom.
//   - A Management API token is only issued for the canonical domain's
//     audience https://TENANT.REGION.auth0.com/api/v2/; asking for
//     https://<custom domain>/api/v2/ is refused with access_denied "Service
//     not enabled within domain" (https://auth0.com/docs/customize/custom-domains/configure-features-to-use-custom-domains,
//     "APIs": the Management API audience keeps the canonical domain). The
//     token request itself may go to either name (managementToken checks
//     only the audience).
//
// On loopback the two names are two host names of the same listener, e.g.
// Issuer http://127.0.0.1:PORT/ (canonical) and CustomDomain
// http://localhost:PORT/ (custom): browsers and cookies treat them as
// different sites, as they would login.example.com and tenant.auth0.com.

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/zitadel/oidc/v3/pkg/op"
)

// parseCustomDomain checks Config.CustomDomain against the issuer: an
// absolute URL at the root, with a host other than the issuer's.
func parseCustomDomain(raw string, issuer *url.URL) (*url.URL, error) {
	if raw == "" {
		return nil, nil
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("devidp: CustomDomain %q must be an absolute http(s) URL with no path", raw)
	}
	if strings.EqualFold(u.Host, issuer.Host) {
		return nil, fmt.Errorf("devidp: CustomDomain %q has the issuer's host", raw)
	}
	u.Path = "/"
	return u, nil
}

// issuerFromHost is the provider's issuer: the custom domain's for requests
// to its host, the canonical Issuer for every other.
func (s *Server) issuerFromHost(insecure bool) (op.IssuerFromRequest, error) {
	if _, err := op.StaticIssuer(s.issuer)(insecure); err != nil {
		return nil, err
	}
	return func(r *http.Request) string { return s.issuerFor(r) }, nil
}

// issuerFor is the issuer a request sees (see the file comment).
func (s *Server) issuerFor(r *http.Request) string {
	if s.custom != nil && r != nil && strings.EqualFold(r.Host, s.custom.Host) {
		return s.custom.String()
	}
	return s.issuer
}

// CustomDomain returns the custom domain's issuer ("" when unset).
func (s *Server) CustomDomain() string {
	if s.custom == nil {
		return ""
	}
	return s.custom.String()
}
