package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
	"github.com/usher-oidc/usher/internal/testkit"
	redisstore "github.com/usher-oidc/usher/store/redis"
)

// tripLog records usher's store round trips to Redis (tripHook; rate-limit
// checks left out), each as the commands it carried, so a failure shows them.
type tripLog struct {
	mu    sync.Mutex
	trips []string
}

func (h *tripLog) add(cmds []redis.Cmder) {
	if rateLimitTrip(cmds) {
		return
	}
	names := make([]string, 0, len(cmds))
	for _, c := range cmds {
		args := c.Args()
		name := fmt.Sprint(args[0])
		if len(args) > 1 {
			key := fmt.Sprint(args[1])
			if strings.EqualFold(name, "evalsha") && len(args) > 3 {
				key = fmt.Sprint(args[3])
			}
			name += " " + clip(key, 40)
		}
		names = append(names, name)
	}
	h.mu.Lock()
	h.trips = append(h.trips, strings.Join(names, " | "))
	h.mu.Unlock()
}

func (h *tripLog) take() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	t := h.trips
	h.trips = nil
	return t
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// TestLoginRedisRoundTrips (issue 14) holds the store round trips of a
// login on Redis to their ceilings: a complete sign-in (authorize →
// devidp → callback → code → tokens, a fresh cookie jar), a login
// answered from usher's own session (authorize → code → tokens) and a
// signed-out browser's silent renew (prompt=none through the upstream). Each is
// the fewest of a few logins, so that the store's background work (outbox,
// sweeper) cannot fail it; a login that needs more trips fails it, listing
// them. Rate-limit checks are not counted. At record_format v1, v3 (which
// writes no refresh-token lookup) and v4 (the upstream state kept with the
// auth request). The code exchange reads the user and grant with the code
// (broker/codes.go); /authorize reads the browser session first and runs
// the login step itself, handing it the session and the request it made
// (broker/authorize_inline.go), so no replica reads them again; a request
// the session answers at once is stored only inside its code's record
// (from v3: no auth request record written); the session's ID names its
// user, read in that same round trip (broker/browser.go: newSessionID).
func TestLoginRedisRoundTrips(t *testing.T) {
	for _, tc := range []struct {
		format string
		max    loginTrips
	}{
		{"v1", loginTrips{signIn: 10, session: 5, refresh: 3, signedOut: 5}},
		{"v3", loginTrips{signIn: 9, session: 4, refresh: 1, signedOut: 5}}, // no rth: lookup written: a refresh token is created and rotated in one round trip, the sealed token's rotation reads the user with it
		{"v4", loginTrips{signIn: 7, session: 4, refresh: 1, signedOut: 2}}, // the sign-in's upstream state kept with its auth request, created with it in one trip (broker/loginstate.go); an upstream error ends the request with the take
		{"v5", loginTrips{signIn: 7, session: 4, refresh: 1, signedOut: 2}},
		{"v6", loginTrips{signIn: 6, session: 2, refresh: 1, signedOut: 2}}, // sealed codes (broker/sealedcode.go): no code written (a stored request deleted with the session's save); the spend, its refresh token and the user read in one trip
	} {
		t.Run(tc.format, func(t *testing.T) { checkLoginRedisRoundTrips(t, tc.format, tc.max) })
	}
}

// signedOutSilentRenew is an SPA's silent renew in a browser signed in
// neither at usher nor upstream: /authorize with prompt=none goes upstream
// (an Auth0 session could sign the person in), devidp answers
// login_required to usher's callback, and usher to the client.
func signedOutSilentRenew(d *app.Dev) error {
	u, _, _ := authorizeURL(d, url.Values{"prompt": {"none"}})
	resp, _, err := newAgent(nil, d.SPAURL).send(http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || !strings.HasPrefix(loc.String(), d.SPAURL) || loc.Query().Get("error") != "login_required" {
		return fmt.Errorf("prompt=none signed out: %d %s, want a redirect to the SPA with login_required", resp.StatusCode, resp.Header.Get("Location"))
	}
	return nil
}

// loginTrips are the most store round trips a sign-in, a session-answered
// login, a refresh (a sealed token: its rotation with the user and grant
// read beside it; an unsealed one: the token read with them, then the
// rotation) and a signed-out silent renew may take.
type loginTrips struct{ signIn, session, refresh, signedOut int }

func checkLoginRedisRoundTrips(t *testing.T, format string, max loginTrips) {
	addr := testkit.StartRedis(t)
	d := startDev(t, app.DevOptions{Configure: func(c *config.Config) {
		c.Store.Driver = "redis"
		c.Store.Redis.URL = "redis://" + addr + "/0"
		c.Store.RecordFormat = format
		c.RateLimits.AuthorizePerMinute = 1 << 30
		idTokenAlg("ES256")(c) // login checks it
	}})
	rc, ok := d.App.Store.(interface{ Client() redis.UniversalClient })
	if !ok {
		t.Fatalf("store %T is not on Redis", d.App.Store)
	}
	signedIn := newAgent(t, d.SPAURL)
	code, verifier := signedIn.signIn(d, app.DevUserEmail, app.DevUserPassword, false) // untimed: keys, clients and the user exist
	current := exchangeCode(t, d, code, verifier).RefreshToken
	hook := &tripLog{}
	rc.Client().AddHook(tripHook(hook.add))
	session := newSessionClient(d, signedIn.client.Jar, 1)
	logins := []struct {
		name  string
		max   int
		login func() error
	}{
		{name: "sign-in", max: max.signIn, login: func() error {
			_, err := login(d, http.DefaultTransport)
			return err
		}},
		{name: "answered from usher's session", max: max.session, login: func() error { _, err := sessionLogin(d, session); return err }},
		{name: "silent renew of a signed-out browser (prompt=none)", max: max.signedOut, login: func() error { return signedOutSilentRenew(d) }},
		{name: "refresh", max: max.refresh, login: func() error {
			r := refresh(t, d, current)
			if r.RefreshToken == "" {
				return fmt.Errorf("refresh: %d %+v", r.status, r)
			}
			current = r.RefreshToken
			return nil
		}},
	}
	for _, l := range logins {
		var fewest []string
		for i := range 3 {
			hook.take()
			if err := l.login(); err != nil {
				t.Fatalf("%s: %v", l.name, err)
			}
			if trips := hook.take(); i == 0 || len(trips) < len(fewest) {
				fewest = trips
			}
		}
		t.Logf("%s: %d store round trips, %d script calls", l.name, len(fewest), strings.Count(strings.Join(fewest, "\n"), "evalsha"))
		fromV3 := slices.Index(redisstore.RecordFormats, format) >= slices.Index(redisstore.RecordFormats, redisstore.RecordFormatV3)
		if l.name == "answered from usher's session" && fromV3 && strings.Contains(strings.Join(fewest, "\n"), "ar:") {
			t.Errorf("%s: an auth request record written, want none (the code carries the request):\n%s", l.name, strings.Join(fewest, "\n"))
		}
		if len(fewest) > l.max {
			t.Errorf("%s: %d store round trips, want at most %d:\n%s", l.name, len(fewest), l.max, strings.Join(fewest, "\n"))
		}
	}
}
