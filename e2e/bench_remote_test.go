package e2e

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
	"github.com/usher-oidc/usher/internal/testkit"
)

// BenchmarkTokenRefreshRemoteRedis is a refresh made alone (one at a time,
// as one SPA makes it) with Redis behind a proxy that delays each
// direction, as a Redis on another host would: loopback hides what a store
// round trip costs there, and this shows it. It reports the refresh's
// median and the proxy's own round trip (a PING's median through it),
// against which the refresh's store round trips read.
func BenchmarkTokenRefreshRemoteRedis(b *testing.B) {
	var delay atomic.Int64
	delay.Store(int64(250 * time.Microsecond)) // per direction, as the soak's proxy sleeps it
	proxy := startLatencyProxy(b, testkit.StartRedis(b), &delay)
	d := startDev(b, app.DevOptions{Configure: func(c *config.Config) {
		onRedis(proxy.addr, "v6")(c)
		idTokenAlg("ES256")(c)
	}})
	a := newAgent(b, d.SPAURL)
	code, verifier := a.signIn(d, app.DevUserEmail, app.DevUserPassword, false)
	rt := exchangeCode(b, d, code, verifier).RefreshToken
	rtt := proxyRoundTrip(b, proxy.addr)
	tokenURL := strings.TrimSuffix(d.IssuerURL, "/") + "/oauth/token"
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	trips := countRedisRoundTrips(d)
	latencies := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	trips.reset()
	for range b.N {
		start := time.Now()
		next, err := postRefresh(client, tokenURL, rt)
		if err != nil {
			b.Fatal(err)
		}
		latencies = append(latencies, time.Since(start))
		rt = next
	}
	b.StopTimer()
	trips.report(b, b.N, "refresh")
	b.ReportMetric(p50ms(latencies), "p50_ms")
	b.ReportMetric(rtt, "redis_rtt_ms")
}

// proxyRoundTrip is the median of PINGs to the Redis at addr, in ms.
func proxyRoundTrip(b *testing.B, addr string) float64 {
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	var rtts []time.Duration
	for range 21 {
		start := time.Now()
		if err := rdb.Ping(context.Background()).Err(); err != nil {
			b.Fatal(err)
		}
		rtts = append(rtts, time.Since(start))
	}
	return p50ms(rtts)
}
