package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usher-oidc/usher/app"
)

// overheadLogins is how many logins, one at a time, the usher-overhead
// figure is taken from: enough for a stable p50, about a second.
const overheadLogins = 100

// BenchmarkLogin (issue 14) measures a complete sign-in through usher:
// authorize → the upstream → usher's callback (its code exchange at the
// upstream) → code → tokens, a fresh cookie jar per login (neither usher's
// nor the upstream's session helps), ES256 ID tokens, on bolt and on Redis.
//
// The issue measures usher with the upstream excluded by an in-process stub
// OP: bolt and redis sign in through stubOP, which answers /authorize with a
// code at once and its token endpoint with one ES256 signature. The
// redis/devidp rows sign in through devidp's login form instead (a full OP:
// its own authorize request, login page, form post and callback, four
// browser requests where the stub takes one), signing ES256 and, as Auth0 signs, RS256: with RS256
// devidp's one RSA signature per login (about 1 ms of a core) costs more
// than all of usher's work.
//
// logins/s and p50_ms are taken with 4 logins in flight per core. Then
// usher_p50_ms: usher's own share of a login, from logins run one at a
// time. The upstream's handler is wrapped to sum the time spent inside it,
// and the browser's transport times each request to usher's host minus the
// upstream handler time that passed meanwhile (usher's back-channel calls
// to the upstream), so the figure is the time the browser waited on usher's
// handlers (loopback included, upstream excluded); one login at a time so
// that the upstream time that passes is this login's. upstream_p50_ms is
// the rest of the login's upstream handler time. The ceiling is usher's two
// ES256 signatures per login (ID and access token) on every core, at the
// go-jose rate measured in the same run.
func BenchmarkLogin(b *testing.B) {
	for _, store := range []string{"bolt", "redis"} {
		b.Run(store, func(b *testing.B) { benchmarkLogin(b, store, "stub") })
	}
	b.Run("redis/devidp_ES256", func(b *testing.B) { benchmarkLogin(b, "redis", "ES256") })
	b.Run("redis/devidp_RS256", func(b *testing.B) { benchmarkLogin(b, "redis", "RS256") })
}

// benchmarkLogin signs in through the stub OP when upstream is "stub", else
// through devidp signing with upstream as its algorithm.
func benchmarkLogin(b *testing.B, store, upstream string) {
	clock := &upstreamClock{}
	opts := app.DevOptions{Configure: idTokenAlg("ES256"), WrapIDP: clock.wrap, IDPSigningAlg: upstream}
	var stub *stubOP
	if upstream == "stub" {
		var err error
		if stub, err = newStubOP(app.DevUserEmail); err != nil {
			b.Fatal(err)
		}
		opts.IDPSigningAlg = "ES256" // devidp's discovery names the stub's algorithm
		opts.WrapIDP = func(h http.Handler) http.Handler { return clock.wrap(stub.wrap(h)) }
	}
	d := devOnWith(b, store, opts)
	if stub != nil {
		sub, ok := d.IDP.UserSub("Username-Password-Authentication", app.DevUserEmail)
		if !ok {
			b.Fatal("devidp has no dev user")
		}
		stub.answerAs(d.IDPURL, sub)
	}
	const perProc = 4
	workers := runtime.GOMAXPROCS(0) * perProc
	transport := &http.Transport{MaxIdleConnsPerHost: workers}
	if _, err := login(d, transport); err != nil { // untimed: keys, clients and the user exist
		b.Fatal(err)
	}
	es256 := es256SignsPerSecond(b)
	latencies, elapsed := timedParallel(b, d, perProc, "login", func() func() error {
		return func() error { _, err := login(d, transport); return err }
	})
	usher, upstreamTimes := loginOverhead(b, d, clock, transport)
	perSec := float64(b.N) / elapsed.Seconds()
	ceiling := es256 * float64(runtime.GOMAXPROCS(0)) / 2
	b.ReportMetric(perSec, "logins/s")
	b.ReportMetric(p50ms(latencies), "p50_ms")
	b.ReportMetric(p50ms(usher), "usher_p50_ms")
	b.ReportMetric(p50ms(upstreamTimes), "upstream_p50_ms")
	b.ReportMetric(es256, "es256_signs/s/core")
	b.ReportMetric(perSec/ceiling, "ratio_to_ceiling")
}

// loginOverhead runs overheadLogins logins one at a time and returns, per
// login, the time spent in usher's handlers and in the upstream's.
func loginOverhead(b *testing.B, d *app.Dev, clock *upstreamClock, transport http.RoundTripper) (usher, upstream []time.Duration) {
	for range overheadLogins {
		timer := &usherTimer{next: transport, host: hostOf(d.IssuerURL), clock: clock}
		up0 := clock.nanos.Load()
		if _, err := login(d, timer); err != nil {
			b.Fatal(err)
		}
		usher = append(usher, timer.usher)
		upstream = append(upstream, time.Duration(clock.nanos.Load()-up0))
	}
	return usher, upstream
}

// login signs the dev user in with a fresh cookie jar and exchanges the code,
// checking the ID token is ES256. Errors, not b.Fatal: RunParallel calls it.
func login(d *app.Dev, transport http.RoundTripper) (tokenResponse, error) {
	a := newAgent(nil, d.SPAURL) // no t: trySignIn and tryPostToken return their errors
	a.client.Transport = transport
	code, verifier, err := a.trySignIn(d, app.DevUserEmail, app.DevUserPassword, false)
	if err != nil {
		return tokenResponse{}, err
	}
	tr, err := tryPostToken(a.client, d, codeForm(d, code, verifier))
	if err != nil {
		return tr, err
	}
	if tr.IDToken == "" || tr.AccessToken == "" {
		return tr, fmt.Errorf("token exchange: %d %s %s", tr.status, tr.Error, tr.Description)
	}
	if alg := tokenAlg(tr.IDToken); alg != "ES256" {
		return tr, fmt.Errorf("ID token signed with %q, want ES256", alg)
	}
	return tr, nil
}

func p50ms(d []time.Duration) float64 {
	if len(d) == 0 {
		return 0
	}
	d = slices.Clone(d)
	slices.Sort(d)
	return ms(d[len(d)/2])
}

func hostOf(u string) string {
	p, _ := url.Parse(u)
	return p.Host
}

// upstreamClock sums the time spent inside devidp's handlers.
type upstreamClock struct{ nanos atomic.Int64 }

func (c *upstreamClock) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t0 := time.Now()
		h.ServeHTTP(w, r)
		c.nanos.Add(int64(time.Since(t0)))
	})
}

// usherTimer is the browser's transport: it sums the time of its requests to
// usher's host, less the devidp handler time that passed meanwhile (usher's
// calls to the upstream). Meaningful with one login in flight.
type usherTimer struct {
	next  http.RoundTripper
	host  string
	clock *upstreamClock
	usher time.Duration
}

func (t *usherTimer) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host != t.host {
		return t.next.RoundTrip(req)
	}
	up0, t0 := t.clock.nanos.Load(), time.Now()
	resp, err := t.next.RoundTrip(req)
	t.usher += time.Since(t0) - time.Duration(t.clock.nanos.Load()-up0)
	return resp, err
}

// timedParallel runs an operation b.N times in parallel (perProc goroutines
// per core; newOp makes each goroutine's operation), and returns the
// latency of each that succeeded and the time the run took. Redis round
// trips and bbolt writes are counted over the run and reported per what;
// a failed operation fails the benchmark once the run is over.
func timedParallel(b *testing.B, d *app.Dev, perProc int, what string, newOp func() func() error) ([]time.Duration, time.Duration) {
	trips, writes := countRedisRoundTrips(d), countBoltWrites(d)
	latencies, elapsed, failures := runTimed(b, perProc, what, newOp, func() {
		trips.reset()
		writes.reset()
	})
	trips.report(b, b.N, what)
	writes.report(b, b.N, what)
	if failures > 0 {
		b.Fatalf("%d failed: %s", failures, what)
	}
	return latencies, elapsed
}

// runTimed is timedParallel's run without a usher to count the store of
// (the harness floors): started is called as the clock starts; the first
// failure is reported as an error, the count returned.
func runTimed(b *testing.B, perProc int, what string, newOp func() func() error, started func()) ([]time.Duration, time.Duration, int64) {
	var failures atomic.Int64
	var mu sync.Mutex
	var latencies []time.Duration
	b.SetParallelism(perProc)
	b.ResetTimer()
	started()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		op := newOp()
		var mine []time.Duration
		for pb.Next() {
			t0 := time.Now()
			if err := op(); err != nil {
				if failures.Add(1) == 1 {
					b.Errorf("%s: %v", what, err)
				}
				continue
			}
			mine = append(mine, time.Since(t0))
		}
		mu.Lock()
		latencies = append(latencies, mine...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	b.StopTimer()
	return latencies, elapsed, failures.Load()
}
