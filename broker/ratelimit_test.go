package broker_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/usher-oidc/usher/broker"
	oidcupstream "github.com/usher-oidc/usher/broker/upstream/oidc"
	boltstore "github.com/usher-oidc/usher/store/bolt"
)

// fakeLimiter answers every check with err, or refuses with wait.
type fakeLimiter struct {
	err  error
	wait time.Duration
}

func (f fakeLimiter) Allow(context.Context, string) (bool, time.Duration, error) {
	return f.err == nil && f.wait == 0, f.wait, f.err
}

func (f fakeLimiter) Blocked(context.Context, string) (bool, time.Duration, error) {
	return false, 0, f.err
}

func newLimitedBroker(t *testing.T, lim fakeLimiter) (http.Handler, *prometheus.Registry, *bytes.Buffer, map[string]string) {
	t.Helper()
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "rl.db"), boltstore.Options{SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	reg := prometheus.NewRegistry()
	var logs bytes.Buffer
	var mu sync.Mutex
	built := map[string]string{}
	b, err := broker.New(context.Background(), broker.Options{
		Issuer:        "http://127.0.0.1:9",
		Upstream:      oidcupstream.New(oidcupstream.Options{Issuer: "http://127.0.0.1:8/", ClientID: "x", ClientSecret: "y"}),
		Sessions:      st,
		Grants:        st,
		SessionSecret: bytes.Repeat([]byte{7}, 32),
		Logger:        slog.New(slog.NewTextHandler(&logs, nil)),
		Metrics:       reg,
		RateLimits:    broker.RateLimits{InvitePerMinute: 6},
		NewLimiter: func(name string, perPeriod int, period time.Duration) broker.Limiter {
			mu.Lock()
			defer mu.Unlock()
			built[name] = time.Duration(int64(period)/int64(perPeriod)).String() + " each, " + period.String()
			return lim
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.Handler(), reg, &logs, built
}

func counter(t *testing.T, reg *prometheus.Registry, name, limit string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "limit" && l.GetValue() == limit {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func getInvite(h http.Handler, i int) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, "/invite/inv_"+strings.Repeat(string(rune('A'+i)), 43), nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// A limiter given through Options.NewLimiter replaces the in-memory ones:
// it is built once per limit, by name, and its refusal is the 429.
func TestNewLimiterIsUsed(t *testing.T) {
	t.Parallel()
	h, reg, _, built := newLimitedBroker(t, fakeLimiter{wait: 7 * time.Second})
	want := map[string]string{"invite": "10s each, 1m0s", "failed_redemptions": "3m0s each, 1h0m0s",
		"api": "100ms each, 1m0s", "authorize": "1s each, 1m0s"}
	for k, v := range want {
		if built[k] != v {
			t.Errorf("limiter %q built as %q, want %q (all: %v)", k, built[k], v, built)
		}
	}
	rec := getInvite(h, 0)
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "7" {
		t.Fatalf("refused by the limiter: %d Retry-After %q", rec.Code, rec.Header().Get("Retry-After"))
	}
	if got := counter(t, reg, "usher_rate_limited_total", "invite"); got != 1 {
		t.Fatalf("usher_rate_limited_total{invite} = %v", got)
	}
}

// A limiter that fails (Redis unreachable) lets requests through: every
// failure is counted in usher_rate_limit_errors_total, and logged as a
// warning without flooding the log.
func TestLimiterErrorFailsOpen(t *testing.T) {
	t.Parallel()
	h, reg, logs, _ := newLimitedBroker(t, fakeLimiter{err: errors.New("dial tcp: connection refused")})
	for i := range 10 {
		if rec := getInvite(h, i); rec.Code != http.StatusNotFound {
			t.Fatalf("request %d with the limiter down: %d, want the page (404 for a guessed link)", i+1, rec.Code)
		}
	}
	if got := counter(t, reg, "usher_rate_limit_errors_total", "invite"); got != 10 {
		t.Errorf("usher_rate_limit_errors_total{invite} = %v, want 10", got)
	}
	// Each guess also checks and counts a failed redemption.
	if got := counter(t, reg, "usher_rate_limit_errors_total", "failed_redemptions"); got != 20 {
		t.Errorf("usher_rate_limit_errors_total{failed_redemptions} = %v, want 20", got)
	}
	if got := counter(t, reg, "usher_rate_limited_total", "invite"); got != 0 {
		t.Errorf("usher_rate_limited_total{invite} = %v, want 0", got)
	}
	if n := strings.Count(logs.String(), "rate limit unavailable"); n < 1 || n > 2 {
		t.Errorf("%d warnings for 30 failures, want one per limit:\n%s", n, logs)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "connection refused") {
		t.Errorf("warning lacks level or cause:\n%s", logs)
	}
}
