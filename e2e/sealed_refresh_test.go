package e2e

import (
	"net/url"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
	"github.com/usher-oidc/usher/internal/testkit"
)

// On Redis a refresh token carries its family's data sealed
// (broker/refreshseal.go), so a refresh rotates and reads the user in one
// store trip (TestLoginRedisRoundTrips counts it). What the seal must not
// change: the store still decides, and what a refresh refuses before the
// store is asked changes nothing in it. Each case below leaves the
// family's current token refreshing for its own client.
func TestSealedRefreshOnRedis(t *testing.T) {
	t.Parallel()
	const otherSPA = "other-spa"
	addr := testkit.StartRedis(t)
	d := startDev(t, app.DevOptions{Configure: func(c *config.Config) {
		onRedis(addr, "v6")(c)
		c.Clients = append(c.Clients, spaClient(otherSPA, "http://127.0.0.1:9/other"))
	}})
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = rdb.Close() })
	first := signInAs(t, d, newAgent(t, d.SPAURL), app.DevUserEmail, app.DevUserPassword, false)
	want := jwtClaims(t, first.AccessToken)
	sub, _ := want["sub"].(string)
	family, _ := sealedParts(t, first.RefreshToken, sub)
	t.Logf("a sealed refresh token: %d characters, %d without its seal", len(first.RefreshToken), strings.LastIndex(first.RefreshToken, "."))
	current := first.RefreshToken
	// refreshes: the family's current token still refreshes for its own
	// client, to the sign-in's claims; it moves current on.
	refreshes := func(t *testing.T, what string) {
		t.Helper()
		r := refresh(t, d, current)
		if r.AccessToken == "" || r.RefreshToken == "" {
			t.Fatalf("%s: the current token no longer refreshes: %d %+v", what, r.status, r)
		}
		sameClaims(t, jwtClaims(t, r.AccessToken), want, "sub", "roles", "scope")
		sealedParts(t, r.RefreshToken, sub)
		current = r.RefreshToken
	}
	refreshes(t, "the first refresh")

	t.Run("another client", func(t *testing.T) {
		r := postToken(t, d, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {current}, "client_id": {otherSPA}})
		if r.Error != "invalid_grant" || r.AccessToken != "" {
			t.Fatalf("another client's refresh: %d %+v, want invalid_grant", r.status, r)
		}
		refreshes(t, "after another client presented it")
	})
	t.Run("a wider scope", func(t *testing.T) {
		r := postToken(t, d, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {current},
			"client_id": {app.DevSPAClientID}, "scope": {"openid profile email offline_access invitations:write"}})
		if r.Error != "invalid_scope" || r.AccessToken != "" {
			t.Fatalf("a refresh asking a scope the sign-in had not: %d %+v, want invalid_scope", r.status, r)
		}
		refreshes(t, "after a refresh asking a wider scope")
	})
	t.Run("a changed or moved seal", func(t *testing.T) {
		other := signInAs(t, d, newAgent(t, d.SPAURL), app.DevUserEmail, app.DevUserPassword, false)
		_, otherSeal := sealedParts(t, other.RefreshToken, sub)
		body, _ := strings.CutSuffix(current, "."+lastPart(current))
		flipped := []byte(lastPart(current))
		flipped[len(flipped)/2] ^= 1
		for name, forged := range map[string]string{
			"another family's seal": body + "." + otherSeal,
			"a byte changed":        body + "." + string(flipped),
			"no seal":               body,
		} {
			if r := refresh(t, d, forged); r.Error != "invalid_grant" {
				t.Errorf("%s: %d %+v, want invalid_grant", name, r.status, r)
			}
		}
		refreshes(t, "after forged seals")
		if r := refresh(t, d, other.RefreshToken); r.AccessToken == "" {
			t.Errorf("the other family after its seal was moved: %d %+v", r.status, r)
		}
	})
	t.Run("a seal this replica cannot open", func(t *testing.T) {
		// As after the session secret rotated: the store holds the token
		// (renamed to the hash of a value whose seal no key opens), and the
		// refresh reads it first, as for an unsealed token.
		unopened := strings.TrimSuffix(current, lastPart(current)) + strings.Repeat("A", len(lastPart(current)))
		key := "usher:{f:" + family + "}:t:"
		if err := rdb.Rename(t.Context(), key+sha256Hex(current), key+sha256Hex(unopened)).Err(); err != nil {
			t.Fatal(err)
		}
		current = unopened
		refreshes(t, "a token whose seal does not open")
	})
	t.Run("reuse", func(t *testing.T) {
		rotated := current
		refreshes(t, "before the reuse")
		if r := refresh(t, d, rotated); r.Error != "invalid_grant" {
			t.Fatalf("a rotated sealed token presented again: %d %+v, want invalid_grant", r.status, r)
		}
		if r := refresh(t, d, current); r.Error != "invalid_grant" {
			t.Errorf("the family's newest token after a reuse: %d %+v, want invalid_grant", r.status, r)
		}
	})
	t.Run("signed out everywhere", func(t *testing.T) {
		// The refusal comes after the rotation stored a successor, so the
		// family is revoked too, not only refused by the sign-out's time.
		tr := signInAs(t, d, newAgent(t, d.SPAURL), app.DevUserEmail, app.DevUserPassword, false)
		fam, _ := sealedParts(t, tr.RefreshToken, sub)
		signOutEverywhere(t, d, funnelToken(t, d, "invitations:write invitations:read"), sub)
		if r := refresh(t, d, tr.RefreshToken); r.Error != "invalid_grant" {
			t.Fatalf("a refresh after a sign-out everywhere: %d %+v, want invalid_grant", r.status, r)
		}
		if n, err := rdb.Exists(t.Context(), "usher:{f:"+fam+"}:rev").Result(); err != nil || n != 1 {
			t.Errorf("the family's revocation marker after the refused refresh: %d, %v; want it set", n, err)
		}
	})
}

// sealedParts checks token is "rt_<family>.<subject>.<secret>.<seal>" for
// subject, and returns its family and seal.
func sealedParts(t *testing.T, token, subject string) (family, seal string) {
	t.Helper()
	parts := strings.Split(strings.TrimPrefix(token, "rt_"), ".")
	if !strings.HasPrefix(token, "rt_") || len(parts) != 4 || parts[1] != subject || parts[3] == "" {
		t.Fatalf("refresh token %q: want rt_<family>.%s.<secret>.<seal>", token, subject)
	}
	return parts[0], parts[3]
}

func lastPart(token string) string { return token[strings.LastIndex(token, ".")+1:] }
