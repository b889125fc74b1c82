package e2e

import (
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/usher-oidc/usher/internal/testkit"
)

// On Redis the rate limits hold across replicas: with invite_per_minute: 6,
// six invitation-link requests from one address pass in all, not six per
// replica, and every later one is refused with 429 whichever replica serves it.
func TestReplicasShareRateLimits(t *testing.T) {
	t.Parallel()
	redisAddr := testkit.StartRedis(t)
	rs := startReplicasWith(t, "redis://"+redisAddr+"/0", "{invite_per_minute: 6, failed_redemptions_per_hour: 1000}")
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	var statuses []int
	refusedBy := map[int]bool{}
	for i := range 15 {
		tok := "inv_" + strings.Repeat(string(rune('A'+i)), 43)
		resp, err := client.Get(rs.proxyURL + "/invite/" + tok)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		statuses = append(statuses, resp.StatusCode)
		if i < 6 {
			continue
		}
		if resp.StatusCode != http.StatusTooManyRequests {
			continue
		}
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || s < 1 || s > 60 {
			t.Errorf("request %d: 429 with Retry-After %q, want 1..60 s", i+1, resp.Header.Get("Retry-After"))
		}
		rs.rr.mu.Lock()
		refusedBy[rs.rr.served[len(rs.rr.served)-1]] = true
		rs.rr.mu.Unlock()
	}
	for i, s := range statuses {
		want := http.StatusNotFound
		if i >= 6 {
			want = http.StatusTooManyRequests
		}
		if s != want {
			t.Fatalf("statuses through three replicas %v: request %d got %d, want six 404s then only 429s", statuses, i+1, s)
		}
	}
	if len(refusedBy) != 3 {
		t.Fatalf("429s came from replicas %v only, want all three", refusedBy)
	}
}
