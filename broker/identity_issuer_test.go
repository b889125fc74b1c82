package broker

import "testing"

func TestIdentityIssuer(t *testing.T) {
	t.Parallel()
	const custom, canonical = "https://login.example.com/", "https://tenant.eu.auth0.com/"
	for _, tc := range []struct {
		u        Upstream
		iss, key string
	}{
		{Upstream{Issuer: custom}, custom, custom},
		{Upstream{Issuer: custom, IdentityIssuer: canonical}, custom, canonical},
		{Upstream{Issuer: canonical, IdentityIssuer: canonical}, canonical, canonical},
		{Upstream{Issuer: custom, IdentityIssuer: canonical}, "https://other.example/", "https://other.example/"},
	} {
		if got := tc.u.identityIssuer(tc.iss); got != tc.key {
			t.Errorf("%+v: identityIssuer(%q) = %q, want %q", tc.u, tc.iss, got, tc.key)
		}
	}
}
