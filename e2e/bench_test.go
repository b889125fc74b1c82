package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usher-oidc/usher/internal/testkit"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
)

// es256SignsPerSecond measures go-jose ES256 signing of a token-sized payload
// on one goroutine: the per-core ceiling every token response is bound by
// (a refresh response signs twice: ID token and access token).
func es256SignsPerSecond(b *testing.B) float64 {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	return signsPerSecond(b, jose.ES256, key)
}

// rs256SignsPerSecond: the same with RS256 and a 2048-bit key, as usher's
// RS256 ID tokens are signed.
func rs256SignsPerSecond(b *testing.B) float64 {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	return signsPerSecond(b, jose.RS256, key)
}

func signsPerSecond(b *testing.B, alg jose.SignatureAlgorithm, key any) float64 {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, nil)
	if err != nil {
		b.Fatal(err)
	}
	payload := []byte(`{"iss":"http://127.0.0.1:8080","sub":"usr_0123456789abcdef0123","aud":["demo"],"exp":1795700029,"iat":1795696429,"scope":"openid profile email offline_access","roles":["customer"],"crm_id":"C-42"}`)
	const n = 3000
	start := time.Now()
	for range n {
		if _, err := signer.Sign(payload); err != nil {
			b.Fatal(err)
		}
	}
	return n / time.Since(start).Seconds()
}

// BenchmarkTokenRefresh measures the refresh_token grant through usher's real
// HTTP stack on loopback, on bolt and Redis, with ES256 and with RS256 ID
// tokens (the access token is ES256 either way), next to the signing rates
// measured in the same run. ratio_to_ceiling is as issue 14 states its
// targets: with ES256 the 2-signature ceiling (every core signing ID and
// access token), with RS256 the 1-signature RS256 ceiling of every core.
func BenchmarkTokenRefresh(b *testing.B) {
	for _, store := range []string{"bolt", "redis"} {
		for _, alg := range []string{"ES256", "RS256"} {
			b.Run(store+"/"+alg, func(b *testing.B) { benchmarkTokenRefresh(b, store, alg) })
		}
	}
}

// devOn starts usher dev on the named store (redis: a private redis-server,
// record format v3).
func devOn(b *testing.B, store string) *app.Dev { return devOnWith(b, store, app.DevOptions{}) }

// devOnWith is devOn with opts; opts.Configure runs after devOn's settings.
func devOnWith(b *testing.B, store string, opts app.DevOptions) *app.Dev {
	var addr string
	if store == "redis" {
		addr = testkit.StartRedis(b)
	}
	more := opts.Configure
	opts.Configure = func(c *config.Config) {
		c.RateLimits.APIPerMinute = 1 << 30 // a benchmark is one very busy client
		c.RateLimits.AuthorizePerMinute = 1 << 30
		if addr != "" {
			c.Store.Driver = "redis"
			c.Store.Redis.URL = "redis://" + addr + "/0"
			c.Store.RecordFormat = "v6" // what a store runs once rolled out
		}
		if more != nil {
			more(c)
		}
	}
	return startDev(b, opts)
}

// idTokenAlg makes the dev SPA client's ID tokens alg-signed.
func idTokenAlg(alg string) func(*config.Config) {
	return func(c *config.Config) { c.Clients[0].IDTokenSignedResponseAlg = alg }
}

func benchmarkTokenRefresh(b *testing.B, store, alg string) {
	d := devOnWith(b, store, app.DevOptions{Configure: idTokenAlg(alg)})
	tokenURL := strings.TrimSuffix(d.IssuerURL, "/") + "/oauth/token"
	// One refresh family per parallel worker: a family is a chain.
	workers := runtime.GOMAXPROCS(0) * 32
	families := make(chan string, workers)
	for range workers {
		a := newAgent(b, d.SPAURL)
		code, verifier := a.signIn(d, app.DevUserEmail, app.DevUserPassword, false)
		tr := exchangeCode(b, d, code, verifier)
		if got := tokenAlg(tr.IDToken); got != alg {
			b.Fatalf("ID token alg %q, want %q", got, alg)
		}
		families <- tr.RefreshToken
	}
	es256, rs256 := es256SignsPerSecond(b), 0.0
	if alg == "RS256" { // slow (≈ 1 ms a signature): only where the figure needs it
		rs256 = rs256SignsPerSecond(b)
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	var failures atomic.Int64
	var mu sync.Mutex
	trips, writes := countRedisRoundTrips(d), countBoltWrites(d)
	b.SetParallelism(32) // many clients in flight, as under real load: bolt batches their writes into one fsync
	b.ResetTimer()
	trips.reset()
	writes.reset()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		mu.Lock()
		rt := <-families
		mu.Unlock()
		for pb.Next() {
			next, err := postRefresh(client, tokenURL, rt)
			if errors.Is(err, errRefreshRefused) {
				failures.Add(1)
				b.Error(err)
				return
			}
			if err != nil {
				failures.Add(1)
				continue
			}
			rt = next
		}
		families <- rt
	})
	elapsed := time.Since(start)
	b.StopTimer()
	trips.report(b, b.N, "refresh")
	writes.report(b, b.N, "refresh")
	perSec := float64(b.N) / elapsed.Seconds()
	ceiling := es256 * float64(runtime.GOMAXPROCS(0)) / 2
	if alg == "RS256" {
		ceiling = rs256 * float64(runtime.GOMAXPROCS(0))
	}
	b.ReportMetric(perSec, "responses/s")
	b.ReportMetric(es256, "es256_signs/s/core")
	if alg == "RS256" {
		b.ReportMetric(rs256, "rs256_signs/s/core")
	}
	b.ReportMetric(perSec/ceiling, "ratio_to_ceiling")
	if n := failures.Load(); n > 0 {
		b.Fatalf("%d failed refreshes", n)
	}
}

// errRefreshRefused: the token endpoint answered without a refresh token.
var errRefreshRefused = errors.New("refresh refused")

// postRefresh is the refresh benchmarks' load generator's request: the
// refresh grant for rt, answered with the next refresh token.
func postRefresh(client *http.Client, tokenURL, rt string) (string, error) {
	resp, err := client.PostForm(tokenURL, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {app.DevSPAClientID}})
	if err != nil {
		return "", err
	}
	var tr tokenResponse
	_ = json.NewDecoder(resp.Body).Decode(&tr)
	resp.Body.Close()
	if tr.RefreshToken == "" {
		return "", fmt.Errorf("%w: %d %s %s", errRefreshRefused, resp.StatusCode, tr.Error, tr.Description)
	}
	return tr.RefreshToken, nil
}
