package e2e

import (
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
	"github.com/usher-oidc/usher/internal/testkit"
)

// revokeClientToken revokes an access token of the funnel client (RFC 7009).
func revokeClientToken(t *testing.T, d *app.Dev, token string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, strings.TrimSuffix(d.IssuerURL, "/")+"/oauth/revoke",
		strings.NewReader(url.Values{"token": {token}, "token_type_hint": {"access_token"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(app.DevFunnelClientID, app.DevFunnelSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("revoking the API token: %d", resp.StatusCode)
	}
}

// Guessing invitation links from one address is cut off with 429 and
// Retry-After; so is an API client that floods the admin API, after
// exactly its burst, and a revoked API token is refused whatever its
// client's count: on bbolt, and on Redis, where the API's token check and
// its rate limit share one round trip (AllowUnlessRevoked).
func TestRateLimits(t *testing.T) {
	t.Parallel()
	for _, store := range []string{"bolt", "redis"} {
		t.Run(store, func(t *testing.T) {
			t.Parallel()
			var redisAddr string
			if store == "redis" {
				redisAddr = testkit.StartRedis(t)
			}
			// On Redis the revoked token's request took one of the burst
			// of 10 (its check and the limit are one trip); on bbolt a
			// refused token never reaches the limit.
			passing := map[string]int{"bolt": 10, "redis": 9}[store]
			testRateLimits(t, passing, startDev(t, app.DevOptions{Configure: func(c *config.Config) {
				c.RateLimits = config.RateLimits{InvitePerMinute: 100, FailedRedemptionsPerHour: 5, APIPerMinute: 10}
				if redisAddr != "" {
					c.Store.Driver, c.Store.Redis.URL = "redis", "redis://"+redisAddr+"/0"
				}
			}}))
		})
	}
}

func testRateLimits(t *testing.T, passing int, d *app.Dev) {
	base := strings.TrimSuffix(d.IssuerURL, "/")
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	statuses := []int{}
	for i := range 8 {
		tok := "inv_" + strings.Repeat(string(rune('A'+i)), 43)
		resp, err := client.Get(base + "/invite/" + tok)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		statuses = append(statuses, resp.StatusCode)
		if resp.StatusCode == http.StatusTooManyRequests {
			if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || s < 1 {
				t.Errorf("429 without a usable Retry-After: %q", resp.Header.Get("Retry-After"))
			}
		}
	}
	if statuses[0] != http.StatusNotFound || statuses[len(statuses)-1] != http.StatusTooManyRequests {
		t.Fatalf("guessed links: statuses %v, want 404s then 429", statuses)
	}

	revoked := funnelToken(t, d, "invitations:read")
	revokeClientToken(t, d, revoked)
	if r := apiCall(t, d, http.MethodGet, "/api/invitations", revoked, nil); r.status != http.StatusUnauthorized {
		t.Fatalf("a revoked API token: %d, want 401", r.status)
	}
	api := funnelToken(t, d, "invitations:read")
	var apiStatuses []int
	for range 12 {
		r := apiCall(t, d, http.MethodGet, "/api/invitations", api, nil)
		apiStatuses = append(apiStatuses, r.status)
		if r.status == http.StatusTooManyRequests && (r.header.Get("Retry-After") == "" || r.header.Get("Content-Type") != "application/problem+json") {
			t.Errorf("429 without Retry-After or problem: %v", r.header)
		}
	}
	for i, st := range apiStatuses {
		want := http.StatusOK
		if i >= passing {
			want = http.StatusTooManyRequests
		}
		if st != want {
			t.Fatalf("API statuses %v: request %d got %d, want %d 200s then 429s", apiStatuses, i+1, st, passing)
		}
	}
	if r := apiCall(t, d, http.MethodGet, "/api/invitations", revoked, nil); r.status != http.StatusUnauthorized {
		t.Errorf("a revoked API token over the limit: %d, want 401 (the token first)", r.status)
	}
	resp, err := http.Get(d.MetricsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	for _, series := range []string{`usher_rate_limited_total{limit="failed_redemptions"}`, `usher_rate_limited_total{limit="api"}`} {
		if !strings.Contains(string(raw), series) {
			t.Errorf("/metrics lacks %s", series)
		}
	}
}
