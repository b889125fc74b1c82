package config

import (
	"strings"
	"testing"
)

// upstream.auth0.user_id_claim defaults to auth0_user_id, "" turns it off;
// upstream-copied claim names follow the claim-name rule (org_id is allowed).
func TestUpstreamClaimsConfig(t *testing.T) {
	c, err := Parse([]byte(doc{}.String()), envOf(baseEnv()))
	if err != nil {
		t.Fatal(err)
	}
	if c.Upstream.Auth0.UserIDClaim != DefaultUserIDClaim {
		t.Fatalf("default user_id_claim = %q", c.Upstream.Auth0.UserIDClaim)
	}
	off := doc{upstream: "upstream:\n  pass_through_claims: [\"https://example.com/plan\", org_id]\n  auth0:\n    domain: tenant.eu.auth0.com\n    client_id: abc\n    user_id_claim: \"\"\n"}
	c, err = Parse([]byte(off.String()), envOf(baseEnv()))
	if err != nil {
		t.Fatal(err)
	}
	if c.Upstream.Auth0.UserIDClaim != "" || len(c.Upstream.PassThroughClaims) != 2 {
		t.Fatalf("user_id_claim %q, pass_through_claims %v", c.Upstream.Auth0.UserIDClaim, c.Upstream.PassThroughClaims)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"  pass_through_claims: [sub]\n", "upstream.pass_through_claims[0]"},
		{"  pass_through_claims: [\"\u017fub\"]\n", "upstream.pass_through_claims[0]"},
		{"  pass_through_claims: [roles]\n", "upstream.pass_through_claims[0]"},
		{"  pass_through_claims: [auth0_user_id]\n", "already set by upstream.auth0.user_id_claim"},
		{"  auth0:\n    domain: tenant.eu.auth0.com\n    client_id: abc\n    user_id_claim: email\n", "upstream.auth0.user_id_claim"},
	} {
		y := "upstream:\n" + tc.yaml
		if !strings.Contains(tc.yaml, "auth0:") {
			y += "  auth0:\n    domain: tenant.eu.auth0.com\n    client_id: abc\n"
		}
		_, err := Parse([]byte(doc{upstream: y}.String()), envOf(baseEnv()))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want %q", tc.yaml, err, tc.want)
		}
	}
}
