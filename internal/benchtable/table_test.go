package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// sample is the `go test -bench` output of one `make bench` run (e2e,
// store/bolt, store/redis; then the run-once benchmarks), the run the
// README's table comes from.
func sample(t *testing.T) ([]byte, results) {
	t.Helper()
	in, err := os.ReadFile("testdata/sample.txt")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	res, err := scan(bytes.NewReader(in), &out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), in) {
		t.Errorf("scan did not pass its input through unchanged:\n%s", out.String())
	}
	return in, res
}

func TestScanSample(t *testing.T) {
	_, res := sample(t)
	for _, c := range []struct {
		key, metric string
		want        float64
		procs       int
	}{
		{"e2e.BenchmarkClientCredentials/bolt", "responses/s", 10204, 2},
		{"e2e.BenchmarkTokenRefresh/redis/RS256", "rs256_signs/s/core", 1162, 2},
		{"e2e.BenchmarkTokenRefresh/bolt/ES256", "ratio_to_ceiling", 0.08594, 2},
		{"e2e.BenchmarkLogin/redis", "usher_p50_ms", 1.815, 2},
		{"e2e.BenchmarkLoginRedisRoundTrips", "store_round_trips/login", 24.02, 2},
		// Same benchmark name in two packages: told apart by the pkg: line.
		{"bolt.BenchmarkRotateRefreshToken", "ops/s", 8179, 2},
		{"redis.BenchmarkRotateRefreshToken", "ops/s", 15830, 2},
		// From the second go test run (-benchtime 1x), after a log block.
		{"redis.BenchmarkMemoryPerRecord", "user+grant_v3_B/record", 749.8, 2},
		{"e2e.BenchmarkProcessMemory", "rss_MiB", 39.60, 2},
		{"redis.BenchmarkMemoryPerInvitationAtScale", "invitation_v5_B/record", 597, 2},
	} {
		r, ok := res[c.key]
		if !ok {
			t.Errorf("%s: not parsed", c.key)
			continue
		}
		if got := r.metrics[c.metric]; got != c.want || r.procs != c.procs {
			t.Errorf("%s %s = %v (procs %d), want %v (procs %d)", c.key, c.metric, got, r.procs, c.want, c.procs)
		}
	}
	if len(res) != 34 {
		t.Errorf("parsed %d benchmark lines, want the sample's 34", len(res))
	}
}

func TestParseLine(t *testing.T) {
	for _, c := range []struct {
		name, in string
		ok       bool
		key      string
	}{
		{"plain", "BenchmarkX-8 \t 100 \t 12.5 ns/op \t 3 logins/s", true, "p.BenchmarkX"},
		{"sub-benchmark", "BenchmarkX/bolt/ES256-2 1 5 ns/op", true, "p.BenchmarkX/bolt/ES256"},
		{"no procs suffix", "BenchmarkX 1 5 ns/op", true, "p.BenchmarkX"},
		{"failure line", "--- FAIL: BenchmarkX/bolt-2", false, ""},
		{"log line", "    bench_test.go:12: BenchmarkX 1 2 3", false, ""},
		{"value not a number", "BenchmarkX-2 1 fast ns/op", false, ""},
		{"unit missing", "BenchmarkX-2 1 5 ns/op 7", false, ""},
		{"name alone", "BenchmarkX-2", false, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, ok := parseLine("p", strings.Fields(c.in))
			if ok != c.ok || r.key != c.key {
				t.Errorf("parseLine(%q) = %q, %v; want %q, %v", c.in, r.key, ok, c.key, c.ok)
			}
		})
	}
}

// A benchmark writing to stdout splits its result line: name first, figures
// after what it wrote.
func TestScanSplitLine(t *testing.T) {
	in := "pkg: example.com/m/e2e\nBenchmarkLogin/bolt-2   \nsome output\n     50\t  100 ns/op\t  321.5 logins/s\n"
	res, err := scan(strings.NewReader(in), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if got := res["e2e.BenchmarkLogin/bolt"].metrics["logins/s"]; got != 321.5 {
		t.Errorf("logins/s = %v, want 321.5 (results %v)", got, res)
	}
}

func TestBuildSample(t *testing.T) {
	_, res := sample(t)
	lines := build(res)
	byRow := map[string]line{}
	for _, l := range lines {
		byRow[l.path+"|"+l.backend] = l
	}
	for _, c := range []struct {
		row  string
		want line
	}{
		{"client_credentials, ES256 access token|bolt", line{figure: "10,204 responses/s", es256: "0.18"}},
		{"client_credentials, ES256 access token|Redis", line{figure: "5,814 responses/s", es256: "0.10", trips: "0.0 store + 0.0 rate-limit"}},
		{"refresh grant, RS256 ID token|Redis", line{figure: "694 responses/s", rs256: "0.30", trips: "7.0 store + 0.0 rate-limit"}},
		{"login through usher (stub upstream OP in process, ES256), ES256|Redis", line{figure: "462 logins/s", es256: "0.014", trips: "24.0 store + 1.0 rate-limit"}},
		{"login through usher and devidp's login form (devidp in process signing ES256), ES256|Redis", line{figure: "832 logins/s", es256: "0.032", trips: "7.0 store + 1.0 rate-limit; Redis CPU 321 µs"}},
		{"login through usher and devidp's login form, devidp signing RS256 as Auth0 does|Redis", line{figure: "605 logins/s", es256: "0.026", trips: "8.0 store + 1.0 rate-limit"}},
		{"harness floor: the session-login load generator against a bare /authorize and token endpoint (no store)|none", line{figure: "9,344 logins/s", es256: "0.32"}},
		{"harness floor: the refresh load generator against a bare handler signing two ES256 JWTs (no store)|none", line{figure: "11,439 responses/s", es256: "0.45"}},
		// Round trips on the throughput row only.
		{"login through usher: p50, 8 in flight|Redis", line{figure: "16.9 ms"}},
		{"refresh made alone, Redis behind a latency proxy (as on another host): p50|Redis", line{figure: "2.98 ms"}},
		{"that latency proxy's own round trip (a PING's median through it)|Redis", line{figure: "2.31 ms"}},
		{"login through usher: usher's own p50 (upstream excluded)|bolt", line{figure: "12.0 ms"}},
		{"Redis round trips per login (authorize → callback → token)|Redis", line{figure: "24.0 store round trips", trips: "24.0 store + 1.0 rate-limit"}},
		{"login answered from usher's session, RS256|bolt", line{figure: "737 logins/s", rs256: "0.32"}},
		{"refresh-token rotation in the store alone|Redis", line{figure: "15,830 rotations/s"}},
		{"Redis memory: pending invitation, record_format v1|Redis", line{figure: "1,466 B"}},
		{"Redis memory: pending invitation, record_format v2|Redis", line{figure: "1,082 B"}},
		{"redemption: throughput 200 in flight / 16 in flight|Redis", line{figure: "0.96 ×"}},
	} {
		got, ok := byRow[c.row]
		if !ok {
			t.Errorf("%s: no row", c.row)
			continue
		}
		if got.figure != c.want.figure || got.es256 != c.want.es256 || got.rs256 != c.want.rs256 || got.trips != c.want.trips {
			t.Errorf("%s: figure %q es256 %q rs256 %q trips %q; want %q %q %q %q", c.row,
				got.figure, got.es256, got.rs256, got.trips, c.want.figure, c.want.es256, c.want.rs256, c.want.trips)
		}
	}
	if len(lines) != len(rows) {
		t.Errorf("%d lines, want one per row (%d): the sample has every benchmark", len(lines), len(rows))
	}
	// A benchmark that did not run leaves no row.
	delete(res, "e2e.BenchmarkInvitationCreate/bolt")
	for _, l := range build(res) {
		if l.path == "invitation create (API, until its outbox events are handled)" && l.backend == "bolt" {
			t.Error("a row for a benchmark that did not run")
		}
	}
}

func TestReportOneTable(t *testing.T) {
	_, res := sample(t)
	var out bytes.Buffer
	if err := report(&out, res); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	if n := strings.Count(s, "| path | backend | figure |"); n != 1 {
		t.Errorf("%d table headers, want 1:\n%s", n, s)
	}
	if !strings.Contains(s, "ES256 signing (go-jose, one core), measured by the benchmarks in this run: 21,417–34,368 signatures/s.") {
		t.Errorf("no ES256 signing span:\n%s", s)
	}
	// Every table line has the header's seven columns.
	for _, l := range strings.Split(strings.TrimSpace(s[strings.Index(s, "| path"):]), "\n") {
		if n := strings.Count(l, "|"); n != 8 {
			t.Errorf("%d separators, want 8: %s", n, l)
		}
	}
}

// The Redis server's CPU per operation follows the round trips it cost.
func TestRoundTripsWithRedisCPU(t *testing.T) {
	for _, c := range []struct {
		m    map[string]float64
		want string
	}{
		{map[string]float64{"store_round_trips/refresh": 2, "ratelimit_round_trips/refresh": 0, "redis_cpu_us/refresh": 46.08}, "2.0 store + 0.0 rate-limit; Redis CPU 46.1 µs"},
		{map[string]float64{"store_round_trips/login": 8.02, "redis_cpu_us/login": 336.2}, "8.0 store; Redis CPU 336 µs"},
		{map[string]float64{"redis_cpu_us/login": 336.2}, ""},
		{map[string]float64{"responses/s": 5000}, ""},
	} {
		if got := roundTrips(c.m); got != c.want {
			t.Errorf("roundTrips(%v) = %q, want %q", c.m, got, c.want)
		}
	}
}

func TestNumber(t *testing.T) {
	for _, c := range []struct {
		v    float64
		want string
	}{
		{18062.4, "18,062"}, {1234567, "1,234,567"}, {100, "100"}, {99.94, "99.9"},
		{3.531, "3.53"}, {0.07047, "0.070"}, {0.2888, "0.29"}, {0.007071, "0.0071"}, {0, "0"}, {-1500, "-1,500"},
	} {
		if got := number(c.v); got != c.want {
			t.Errorf("number(%v) = %q, want %q", c.v, got, c.want)
		}
	}
}
