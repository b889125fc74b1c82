package broker

import (
	"testing"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
)

// A verified token is remembered a minute at most, never past its expiry,
// and the cache stays bounded.
func TestVerifiedTokensExpireAndStayBounded(t *testing.T) {
	now := time.Unix(1_900_000_000, 0)
	var v verifiedTokens
	long := &oidc.AccessTokenClaims{TokenClaims: oidc.TokenClaims{Expiration: oidc.FromTime(now.Add(time.Hour))}}
	short := &oidc.AccessTokenClaims{TokenClaims: oidc.TokenClaims{Expiration: oidc.FromTime(now.Add(10 * time.Second))}}
	v.put("long", long, now)
	v.put("short", short, now)
	for _, tc := range []struct {
		token string
		after time.Duration
		want  *oidc.AccessTokenClaims
	}{
		{"long", 0, long},
		{"long", 59 * time.Second, long},
		{"long", verifiedTokenTTL, nil},
		{"short", 9 * time.Second, short},
		{"short", 10 * time.Second, nil},
		{"unknown", 0, nil},
	} {
		if got := v.get(tc.token, now.Add(tc.after)); got != tc.want {
			t.Errorf("%s after %s: %v, want %v", tc.token, tc.after, got, tc.want)
		}
	}
	for i := range maxVerifiedToken + 5 {
		v.put(string(rune(i))+"-t", long, now)
	}
	if n := len(v.entries); n > maxVerifiedToken {
		t.Fatalf("%d entries, bound %d", n, maxVerifiedToken)
	}
}
