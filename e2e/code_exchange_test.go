package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"reflect"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/app"
)

// On Redis the code exchange reads the user and grant in the round trip
// that consumes the code, as the code names its subject (broker/codes.go).
// What that must not change: a code issued by an older version, which
// names none, still exchanges for the same claims; and a sign-out
// everywhere between the code's issue and its exchange still refuses it.
func TestCodeExchangeOnRedis(t *testing.T) {
	t.Parallel()
	d, addr := startDevOnRedis(t, "v3")
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = rdb.Close() })
	a := newAgent(t, d.SPAURL)
	code, verifier := a.signIn(d, app.DevUserEmail, app.DevUserPassword, false)
	fresh := exchangeCode(t, d, code, verifier)
	if fresh.AccessToken == "" {
		t.Fatalf("a code naming its subject: %d %+v", fresh.status, fresh)
	}
	want := jwtClaims(t, fresh.AccessToken)

	// An older version's code: the same record under a code that names no subject.
	code, verifier = a.signIn(d, app.DevUserEmail, app.DevUserPassword, false)
	const legacy = "code-of-an-older-version"
	if err := rdb.Rename(t.Context(), "usher:c:"+sha256Hex(code), "usher:c:"+sha256Hex(legacy)).Err(); err != nil {
		t.Fatal(err)
	}
	old := exchangeCode(t, d, legacy, verifier)
	if old.AccessToken == "" {
		t.Fatalf("an older version's code: %d %+v", old.status, old)
	}
	sameClaims(t, jwtClaims(t, old.AccessToken), want, "sub", "roles")

	// Signed out everywhere after the code was issued, before its exchange.
	code, verifier = a.signIn(d, app.DevUserEmail, app.DevUserPassword, false)
	api := funnelToken(t, d, "invitations:write invitations:read")
	sub, _ := want["sub"].(string)
	signOutEverywhere(t, d, api, sub)
	if r := exchangeCode(t, d, code, verifier); r.Error != "invalid_grant" {
		t.Errorf("a code issued before a sign-out everywhere: %d %+v", r.status, r)
	}
}

// The same for refresh tokens: a token names its subject, and on Redis a
// refresh reads the user and grant with the token. A token issued by an
// older version ("rt_<family>.<secret>") still refreshes, to the same
// claims; a sign-out everywhere still ends both forms.
func TestRefreshTokenFormsOnRedis(t *testing.T) {
	t.Parallel()
	d, addr := startDevOnRedis(t, "v4")
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = rdb.Close() })
	tr := signInAs(t, d, newAgent(t, d.SPAURL), app.DevUserEmail, app.DevUserPassword, false)
	want := jwtClaims(t, tr.AccessToken)
	sub, _ := want["sub"].(string)
	family, _, _ := strings.Cut(strings.TrimPrefix(tr.RefreshToken, "rt_"), ".")
	if !strings.HasPrefix(tr.RefreshToken, "rt_"+family+"."+sub+".") {
		t.Fatalf("refresh token %q does not name its subject %q", tr.RefreshToken, sub)
	}
	fresh := refresh(t, d, tr.RefreshToken)
	if fresh.AccessToken == "" {
		t.Fatalf("refresh with a token naming its subject: %d %+v", fresh.status, fresh)
	}

	// An older version's token: the current link under a value without the subject.
	legacy := "rt_" + family + ".token-of-an-older-version"
	if err := rdb.Rename(t.Context(), "usher:{f:"+family+"}:t:"+sha256Hex(fresh.RefreshToken), "usher:{f:"+family+"}:t:"+sha256Hex(legacy)).Err(); err != nil {
		t.Fatal(err)
	}
	old := refresh(t, d, legacy)
	if old.AccessToken == "" {
		t.Fatalf("refresh with an older version's token: %d %+v", old.status, old)
	}
	sameClaims(t, jwtClaims(t, old.AccessToken), want, "sub", "roles")

	api := funnelToken(t, d, "invitations:write invitations:read")
	signOutEverywhere(t, d, api, sub)
	if r := refresh(t, d, old.RefreshToken); r.Error != "invalid_grant" {
		t.Errorf("refresh after a sign-out everywhere: %d %+v", r.status, r)
	}
}

// sameClaims: got carries claims as want does.
func sameClaims(t *testing.T, got, want map[string]any, claims ...string) {
	t.Helper()
	for _, claim := range claims {
		if !reflect.DeepEqual(got[claim], want[claim]) {
			t.Errorf("%s: %v, want %v", claim, got[claim], want[claim])
		}
	}
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
