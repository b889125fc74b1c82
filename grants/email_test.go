package grants

import (
	"errors"
	"testing"
)

func TestEmailComparisonIsASCIIOnly(t *testing.T) {
	cases := []struct {
		a, b string
		same bool
	}{
		{"Ada@Example.COM", "ada@example.com", true},
		{" ada@example.com ", "ada@example.com", true},
		{"boſs@example.com", "boss@example.com", false},          // U+017F long s folds to s
		{"\u212Aate@example.com", "kate@example.com", false},     // Kelvin sign lowers to k
		{"admin@\u212Aexample.com", "admin@kexample.com", false}, // in the domain too
		{"\u0130nfo@example.com", "info@example.com", false},     // dotted capital I
		{"ｂoss@example.com", "boss@example.com", false},          // fullwidth (NFKC)
	}
	for _, c := range cases {
		if got := SameEmail(c.a, c.b); got != c.same {
			t.Errorf("SameEmail(%q, %q) = %v, want %v", c.a, c.b, got, c.same)
		}
	}
}

func TestEmailMatchesPolicies(t *testing.T) {
	cases := []struct {
		name, policy, invited, got string
		verified                   bool
		want                       error
	}{
		{"any", MatchAny, "a@example.com", "b@other.org", false, nil},
		{"exact", MatchExact, "Ada@example.com", "ada@EXAMPLE.com", true, nil},
		// The same address, not verified yet: curable, not "another address".
		{"exact unverified", MatchExact, "ada@example.com", "Ada@example.com", false, ErrEmailUnverified},
		{"exact other unverified", MatchExact, "ada@example.com", "eve@example.com", false, ErrEmailMismatch},
		{"exact long s", MatchExact, "boss@example.com", "boſs@example.com", true, ErrEmailMismatch},
		{"exact long s unverified", MatchExact, "boss@example.com", "boſs@example.com", false, ErrEmailMismatch},
		{"domain", MatchDomain, "a@example.com", "b@Example.com", true, nil},
		{"domain unverified", MatchDomain, "a@example.com", "b@example.com", false, ErrEmailUnverified},
		{"domain other unverified", MatchDomain, "a@example.com", "b@other.org", false, ErrEmailMismatch},
		{"domain kelvin", MatchDomain, "a@kexample.com", "b@\u212Aexample.com", true, ErrEmailMismatch},
		{"exact no email", MatchExact, "a@example.com", "", false, ErrEmailMismatch},
	}
	for _, c := range cases {
		err := EmailMatches(c.policy, c.invited, c.got, c.verified)
		if !errors.Is(err, c.want) || (err == nil) != (c.want == nil) {
			t.Errorf("%s: EmailMatches = %v, want %v", c.name, err, c.want)
		}
	}
}
