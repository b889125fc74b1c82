package e2e

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
)

// Guessing invitation links from one address is cut off with 429 and
// Retry-After; so is an API client that floods the admin API.
func TestRateLimits(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{Configure: func(c *config.Config) {
		c.RateLimits = config.RateLimits{InvitePerMinute: 100, FailedRedemptionsPerHour: 5, APIPerMinute: 10}
	}})
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

	api := funnelToken(t, d, "invitations:read")
	got429 := false
	for range 15 {
		r := apiCall(t, d, http.MethodGet, "/api/invitations", api, nil)
		if r.status == http.StatusTooManyRequests {
			got429 = r.header.Get("Retry-After") != "" && r.header.Get("Content-Type") == "application/problem+json"
			break
		}
	}
	if !got429 {
		t.Fatal("an API client over its limit was not answered 429 problem with Retry-After")
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
