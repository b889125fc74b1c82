package broker

import (
	"strings"
	"testing"
)

// A refresh token names its family and, when it can, its subject; a token
// without a subject (issued before tokens named it) still names its family,
// and the family is where a version that knows only that form looks for it
// (before the first dot).
func TestRefreshTokenParts(t *testing.T) {
	for _, tc := range []struct {
		name, token     string
		family, subject string
		ok              bool
	}{
		{"a new token", newRefreshToken("fam1", "usr_abc"), "fam1", "usr_abc", true},
		{"a sealed token (refreshseal.go)", newRefreshToken("fam1", "usr_abc") + ".c2VhbA==", "fam1", "usr_abc", true},
		{"an older version's token", "rt_fam1." + randomToken(32), "fam1", "", true},
		{"a subject with a dot is left out", newRefreshToken("fam1", "usr.dotted"), "fam1", "", true},
		{"no subject to name", newRefreshToken("fam1", ""), "fam1", "", true},
		{"no prefix", "fam1." + randomToken(32), "", "", false},
		{"no secret", "rt_fam1.", "", "", false},
		{"no family", "rt_." + randomToken(32), "", "", false},
		{"nothing after the subject", "rt_fam1.usr_abc.", "fam1", "", true},
	} {
		family, subject, ok := refreshTokenParts(tc.token)
		if family != tc.family || subject != tc.subject || ok != tc.ok {
			t.Errorf("%s: %q → (%q, %q, %v), want (%q, %q, %v)", tc.name, tc.token, family, subject, ok, tc.family, tc.subject, tc.ok)
		}
		if !tc.ok {
			continue
		}
		// The form every earlier version parses: the family before the first dot.
		if old, _, _ := strings.Cut(strings.TrimPrefix(tc.token, refreshTokenPrefix), "."); old != tc.family {
			t.Errorf("%s: an earlier version reads family %q, want %q", tc.name, old, tc.family)
		}
	}
}
