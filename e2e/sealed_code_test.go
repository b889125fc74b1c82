package e2e

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/devidp"
	"github.com/usher-oidc/usher/internal/testkit"
)

// A sign-in's code and a login the browser session answers get a sealed
// code (broker/sealedcode.go): nothing is stored until its exchange spends
// it. It must
// keep every promise of a stored code: one exchange, a replay revoking what
// the first issued, a wrong verifier spending it, an altered code refused,
// a sign-out everywhere before the exchange refused, and, on Redis, a code
// issued before Redis lost its data refused. Redis below record format v6
// keeps stored codes (older replicas could not exchange sealed ones).
func TestSealedCodes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, format string
		sealed       bool
	}{{"bolt", "", true}, {"redis v6", "v6", true}, {"redis v5", "v5", false}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d, addr := startDevOnRedis(t, tc.format)
			a := newAgent(t, d.SPAURL)
			// A sign-in through the upstream: its request was stored, and
			// its code is sealed all the same.
			code, verifier := a.signIn(d, app.DevUserEmail, app.DevUserPassword, false)
			if got := strings.HasPrefix(code, "s."); got != tc.sealed {
				t.Fatalf("sign-in: sealed code %v, want %v", got, tc.sealed)
			}
			if r := exchangeCode(t, d, code, verifier); r.AccessToken == "" {
				t.Fatalf("sign-in's code: %+v", r)
			}
			t.Logf("a sign-in's code: %d characters", len(code))
			code, verifier = sessionCode(t, d, a)
			if got := strings.HasPrefix(code, "s."); got != tc.sealed {
				t.Fatalf("sealed code %v, want %v (%.12s…)", got, tc.sealed, code)
			}
			first := exchangeCode(t, d, code, verifier)
			if first.status != http.StatusOK || first.AccessToken == "" || first.RefreshToken == "" {
				t.Fatalf("exchange: %+v", first)
			}
			if r := refresh(t, d, first.RefreshToken); r.AccessToken == "" {
				t.Fatalf("refresh with the exchange's token: %+v", r)
			}
			if !tc.sealed {
				return
			}
			checkSealedReplay(t, d, a, code, verifier, first)
			checkSealedRefusals(t, d, a)
			if addr != "" {
				checkSealedEpoch(t, d, a, addr)
			}
		})
	}
}

// checkSealedReplay: the replay is refused and revokes the first exchange's
// tokens (its refresh token was rotated once by then: the family goes).
func checkSealedReplay(t *testing.T, d *app.Dev, a *agent, code, verifier string, first tokenResponse) {
	t.Helper()
	// The same code written otherwise (base64 decoders skip line breaks)
	// is the same code: its replay too is refused.
	for _, variant := range []string{code[:len(code)/2] + "\n" + code[len(code)/2:], code[:10] + "\r\n" + code[10:]} {
		if r := exchangeCode(t, d, variant, verifier); r.AccessToken != "" {
			t.Fatalf("a sealed code written otherwise exchanged again: %q", variant)
		}
	}
	if r := exchangeCode(t, d, code, verifier); r.status != http.StatusBadRequest || r.Error != "invalid_grant" {
		t.Fatalf("replayed sealed code: %+v, want invalid_grant", r)
	}
	if s := userinfoStatus(t, d, first.AccessToken); s == http.StatusOK {
		t.Error("access token of a replayed sealed code still accepted by /userinfo")
	}
	if r := refresh(t, d, first.RefreshToken); r.Error != "invalid_grant" {
		t.Errorf("refresh token of a replayed sealed code still works: %+v", r)
	}
}

func checkSealedRefusals(t *testing.T, d *app.Dev, a *agent) {
	t.Helper()
	// A wrong verifier spends the code: the right one no longer works.
	code, verifier := sessionCode(t, d, a)
	if r := exchangeCode(t, d, code, verifier+"x"); r.Error != "invalid_grant" {
		t.Fatalf("wrong verifier: %+v", r)
	}
	if r := exchangeCode(t, d, code, verifier); r.Error != "invalid_grant" {
		t.Errorf("a sealed code after a wrong verifier: %+v, want invalid_grant", r)
	}
	// An altered code opens nowhere.
	code, verifier = sessionCode(t, d, a)
	b := []byte(code)
	b[len(b)/2] ^= 1
	if r := exchangeCode(t, d, string(b), verifier); r.Error != "invalid_grant" {
		t.Errorf("altered sealed code: %+v", r)
	}
	// Signed out everywhere after the code was issued, before its exchange:
	// refused, and nothing the spend created survives.
	code, verifier = sessionCode(t, d, a)
	first := exchangeCode(t, d, code, verifier)
	sub, _ := jwtClaims(t, first.AccessToken)["sub"].(string)
	code, verifier = sessionCode(t, d, a)
	signOutEverywhere(t, d, funnelToken(t, d, "invitations:write invitations:read"), sub)
	if r := exchangeCode(t, d, code, verifier); r.Error != "invalid_grant" {
		t.Errorf("a sealed code issued before a sign-out everywhere: %+v", r)
	}
}

// checkSealedEpoch: Redis losing its data loses the spends, so a code
// issued before must not open; usher reads the new epoch and codes issued
// after work.
func checkSealedEpoch(t *testing.T, d *app.Dev, a *agent, addr string) {
	t.Helper()
	a.signIn(d, app.DevUserEmail, app.DevUserPassword, false) // signed out everywhere above
	code, verifier := sessionCode(t, d, a)
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = rdb.Close() })
	n, err := rdb.Del(t.Context(), "usher:code-epoch:1").Result()
	if err != nil || n != 1 {
		t.Fatalf("deleting the code epoch: %d, %v", n, err)
	}
	if r := exchangeCode(t, d, code, verifier); r.Error != "invalid_grant" {
		t.Fatalf("a code of the epoch before: %+v, want invalid_grant", r)
	}
	code, verifier = sessionCode(t, d, a)
	if r := exchangeCode(t, d, code, verifier); r.AccessToken == "" {
		t.Errorf("a code of the new epoch: %+v", r)
	}
}

// sessionCode is a code for the dev SPA from a's usher session (no
// upstream), with its PKCE verifier.
func sessionCode(t *testing.T, d *app.Dev, a *agent) (string, string) {
	t.Helper()
	u, verifier, state := authorizeURL(d, nil)
	resp, err := newSessionClient(d, a.client.Jar, 1).Get(u)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if loc == nil || loc.Query().Get("code") == "" || loc.Query().Get("state") != state {
		t.Fatalf("authorize from the session: %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	return loc.Query().Get("code"), verifier
}

// Three `usher serve` replicas on one Redis at v6 behind the round-robin
// proxy, so each request goes to the next replica: a sealed code made by
// one is exchanged at another, its replay at the other two is refused, and
// a login the session answers works the same.
func TestSealedCodesAcrossReplicas(t *testing.T) {
	t.Parallel()
	rs := newReplicaSet(t, "{authorize_per_minute: 1000}")
	rs.start(fmt.Sprintf(`{driver: redis, redis: {url: "redis://%s/0"}, record_format: v6}`, testkit.StartRedis(t)), 3)
	const email, password = "sealed@example.com", "sealed-password-123"
	if _, err := rs.idp.AddUser(devidp.User{Email: email, Password: password, EmailVerified: true}); err != nil {
		t.Fatal(err)
	}
	dev := rs.asDev()
	a := newAgent(t, rs.spaURL)
	code, verifier := a.signIn(dev, email, password, false)
	if !strings.HasPrefix(code, "s.") {
		t.Fatalf("a replica at v6 issued a stored code (%.12s…)", code)
	}
	if r := exchangeCode(t, dev, code, verifier); r.AccessToken == "" || r.RefreshToken == "" {
		t.Fatalf("exchange at another replica: %+v", r)
	}
	for i := range 2 {
		if r := exchangeCode(t, dev, code, verifier); r.Error != "invalid_grant" {
			t.Fatalf("replay %d at another replica: %+v, want invalid_grant", i+1, r)
		}
	}
	code, verifier = sessionCode(t, dev, a)
	if r := exchangeCode(t, dev, code, verifier); r.AccessToken == "" {
		t.Errorf("a session login's sealed code across replicas: %+v", r)
	}
}
