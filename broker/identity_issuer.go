package broker

// Upstream identities are keyed by issuer + subject. An Auth0 tenant answers
// at its canonical domain (https://TENANT.REGION.auth0.com/) and at a custom
// domain (https://login.example.com/) with the same accounts and subjects,
// but "Auth0 issues tokens with the iss claim of whichever domain you used
// with the request" (https://auth0.com/docs/customize/custom-domains). So a
// switch of upstream.auth0.domain from one to the other would make every
// returning person a new usher user without grants. usher therefore stores
// and looks up identities under one stable issuer, Upstream.IdentityIssuer:
// the first of upstream.issuer_aliases, or for Auth0 the canonical domain's
// issuer (upstream.auth0.management.domain). Identities already stored under
// that issuer keep working unchanged.

// identityIssuer is the issuer an identity from iss is stored under. Only
// the configured issuer is mapped (ID tokens from any other do not verify);
// without IdentityIssuer it is iss itself.
func (u Upstream) identityIssuer(iss string) string {
	if u.IdentityIssuer != "" && iss == u.Issuer {
		return u.IdentityIssuer
	}
	return iss
}
