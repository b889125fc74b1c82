package e2e

import (
	"encoding/json"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usher-oidc/usher/app"
)

// BenchmarkClientCredentials measures the client_credentials grant (an ES256
// access token per response: one signature) through usher's HTTP stack on
// loopback, the load generator sharing the machine, next to the ES256
// 1-signature ceiling of all cores measured in the same run.
func BenchmarkClientCredentials(b *testing.B) {
	for _, store := range []string{"bolt", "redis"} {
		b.Run(store, func(b *testing.B) { benchmarkClientCredentials(b, store) })
	}
}

func benchmarkClientCredentials(b *testing.B, store string) {
	d := devOn(b, store)
	tokenURL := strings.TrimSuffix(d.IssuerURL, "/") + "/oauth/token"
	body := url.Values{"grant_type": {"client_credentials"}, "scope": {"invitations:write"}}.Encode()
	signRate := es256SignsPerSecond(b)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	var failures atomic.Int64
	trips := countRedisRoundTrips(d)
	b.SetParallelism(32)
	b.ResetTimer()
	trips.reset()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodPost, tokenURL, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.SetBasicAuth(app.DevFunnelClientID, app.DevFunnelSecret)
			resp, err := client.Do(req)
			if err != nil {
				failures.Add(1)
				continue
			}
			var tr tokenResponse
			_ = json.NewDecoder(resp.Body).Decode(&tr)
			resp.Body.Close()
			if tr.AccessToken == "" {
				failures.Add(1)
			}
		}
	})
	elapsed := time.Since(start)
	b.StopTimer()
	trips.report(b, b.N, "response")
	perSec := float64(b.N) / elapsed.Seconds()
	ceiling := signRate * float64(runtime.GOMAXPROCS(0))
	b.ReportMetric(perSec, "responses/s")
	b.ReportMetric(signRate, "es256_signs/s/core")
	b.ReportMetric(ceiling, "ceiling_responses/s")
	b.ReportMetric(perSec/ceiling, "ratio_to_ceiling")
	if n := failures.Load(); n > 0 {
		b.Fatalf("%d failed token requests", n)
	}
}
