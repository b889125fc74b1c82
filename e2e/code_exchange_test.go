package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"reflect"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
	"github.com/usher-oidc/usher/internal/testkit"
)

// On Redis the code exchange reads the user and grant in the round trip
// that consumes the code, as the code names its subject (broker/codes.go).
// What that must not change: a code issued by an older version, which
// names none, still exchanges for the same claims; and a sign-out
// everywhere between the code's issue and its exchange still refuses it.
func TestCodeExchangeOnRedis(t *testing.T) {
	t.Parallel()
	addr := testkit.StartRedis(t)
	d := startDev(t, app.DevOptions{Configure: func(c *config.Config) {
		c.Store.Driver = "redis"
		c.Store.Redis.URL = "redis://" + addr + "/0"
		c.Store.RecordFormat = "v3"
	}})
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
	got := jwtClaims(t, old.AccessToken)
	for _, claim := range []string{"sub", "roles"} {
		if !reflect.DeepEqual(got[claim], want[claim]) {
			t.Errorf("%s: %v, want %v", claim, got[claim], want[claim])
		}
	}

	// Signed out everywhere after the code was issued, before its exchange.
	code, verifier = a.signIn(d, app.DevUserEmail, app.DevUserPassword, false)
	api := funnelToken(t, d, "invitations:write invitations:read")
	sub, _ := want["sub"].(string)
	if res := apiCall(t, d, http.MethodPost, "/api/users/"+url.PathEscape(sub)+"/sign-out", api, nil); res.status != http.StatusNoContent {
		t.Fatalf("sign out everywhere: %d %s", res.status, res.raw)
	}
	if r := exchangeCode(t, d, code, verifier); r.Error != "invalid_grant" {
		t.Errorf("a code issued before a sign-out everywhere: %d %+v", r.status, r)
	}
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
