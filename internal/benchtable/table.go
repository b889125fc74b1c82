package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// row maps one benchmark figure to a line of the table.
type row struct {
	path, backend string
	bench         string // result key: package's last element + "." + name
	metric        string // the figure's unit in the benchmark's output
	unit          string // the figure's unit in the table
	// ceiling names the column ratio_to_ceiling (reported by the benchmark
	// against the ceiling it measured in the same run) goes to: ES256, RS256 or "".
	ceiling string
	target  string // issue 14's target for the row
}

// rows is the whole metric → row mapping, in the table's order.
var rows = []row{
	{"client_credentials, ES256 access token", "bolt", "e2e.BenchmarkClientCredentials/bolt", "responses/s", "responses/s", "ES256", "≥ 14,000/s (ES256 1-signature ceiling, 2 cores)"},
	{"client_credentials, ES256 access token", "Redis", "e2e.BenchmarkClientCredentials/redis", "responses/s", "responses/s", "ES256", "≥ 14,000/s (ES256 1-signature ceiling, 2 cores)"},
	{"refresh grant, ES256 ID + access token", "bolt", "e2e.BenchmarkTokenRefresh/bolt/ES256", "responses/s", "responses/s", "ES256", "≥ 4,500/s; ≥ 0.35 of the ES256 2-signature ceiling"},
	{"refresh grant, ES256 ID + access token", "Redis", "e2e.BenchmarkTokenRefresh/redis/ES256", "responses/s", "responses/s", "ES256", "≥ 6,000/s; ≥ 0.35 of the ES256 2-signature ceiling"},
	{"harness floor: the refresh load generator against a bare handler signing two ES256 JWTs (no store)", "none", "e2e.BenchmarkHTTPSigningFloor", "responses/s", "responses/s", "ES256", "(the most the harness allows a token endpoint)"},
	{"refresh grant, RS256 ID token", "bolt", "e2e.BenchmarkTokenRefresh/bolt/RS256", "responses/s", "responses/s", "RS256", "≥ 0.7 × RS256 1-signature ceiling"},
	{"refresh grant, RS256 ID token", "Redis", "e2e.BenchmarkTokenRefresh/redis/RS256", "responses/s", "responses/s", "RS256", "≥ 0.7 × RS256 1-signature ceiling"},
	{"refresh made alone, Redis behind a latency proxy (as on another host): p50", "Redis", "e2e.BenchmarkTokenRefreshRemoteRedis", "p50_ms", "ms", "", ""},
	{"that latency proxy's own round trip (a PING's median through it)", "Redis", "e2e.BenchmarkTokenRefreshRemoteRedis", "redis_rtt_ms", "ms", "", ""},
	{"login through usher (stub upstream OP in process, ES256), ES256", "bolt", "e2e.BenchmarkLogin/bolt", "logins/s", "logins/s", "ES256", "≥ 1,000/s"},
	{"login through usher (stub upstream OP in process, ES256), ES256", "Redis", "e2e.BenchmarkLogin/redis", "logins/s", "logins/s", "ES256", "≥ 1,000/s"},
	{"login through usher and devidp's login form (devidp in process signing ES256), ES256", "Redis", "e2e.BenchmarkLogin/redis/devidp_ES256", "logins/s", "logins/s", "ES256", ""},
	{"login through usher and devidp's login form, devidp signing RS256 as Auth0 does", "Redis", "e2e.BenchmarkLogin/redis/devidp_RS256", "logins/s", "logins/s", "ES256", ""},
	{"login through usher: p50, 8 in flight", "bolt", "e2e.BenchmarkLogin/bolt", "p50_ms", "ms", "", ""},
	{"login through usher: p50, 8 in flight", "Redis", "e2e.BenchmarkLogin/redis", "p50_ms", "ms", "", ""},
	{"login through usher: usher's own p50 (upstream excluded)", "bolt", "e2e.BenchmarkLogin/bolt", "usher_p50_ms", "ms", "", "< 3 ms"},
	{"login through usher: usher's own p50 (upstream excluded)", "Redis", "e2e.BenchmarkLogin/redis", "usher_p50_ms", "ms", "", "< 3 ms"},
	{"Redis round trips per login (authorize → callback → token)", "Redis", "e2e.BenchmarkLoginRedisRoundTrips", "store_round_trips/login", "store round trips", "", "≤ 8 store round trips; rate-limit checks apart"},
	{"login answered from usher's session, ES256", "bolt", "e2e.BenchmarkSessionLogin/bolt/ES256", "logins/s", "logins/s", "ES256", "≥ 3,000/s"},
	{"login answered from usher's session, ES256", "Redis", "e2e.BenchmarkSessionLogin/redis/ES256", "logins/s", "logins/s", "ES256", "≥ 3,000/s"},
	{"harness floor: the session-login load generator against a bare /authorize and token endpoint (no store)", "none", "e2e.BenchmarkSessionLoginFloor", "logins/s", "logins/s", "ES256", "(the most the harness allows a session-answered login)"},
	{"login answered from usher's session, RS256", "bolt", "e2e.BenchmarkSessionLogin/bolt/RS256", "logins/s", "logins/s", "RS256", "≥ 0.7 × RS256 1-signature ceiling"},
	{"login answered from usher's session, RS256", "Redis", "e2e.BenchmarkSessionLogin/redis/RS256", "logins/s", "logins/s", "RS256", "≥ 0.7 × RS256 1-signature ceiling"},
	{"invitation create (API, until its outbox events are handled)", "bolt", "e2e.BenchmarkInvitationCreate/bolt", "creates/s", "creates/s", "", "≥ 3,000/s"},
	{"invitation create (API, until its outbox events are handled)", "Redis", "e2e.BenchmarkInvitationCreate/redis", "creates/s", "creates/s", "", "≥ 5,000/s"},
	{"redemption (store, 8 in flight)", "bolt", "e2e.BenchmarkInvitationRedeem/bolt", "redemptions/s", "redemptions/s", "", ""},
	{"redemption (store, 8 in flight)", "Redis", "e2e.BenchmarkInvitationRedeem/redis", "redemptions/s", "redemptions/s", "", ""},
	{"redemption, 16 in flight: p99", "bolt", "e2e.BenchmarkInvitationRedeemConcurrency/bolt", "p99_ms_16", "ms", "", ""},
	{"redemption, 16 in flight: p99", "Redis", "e2e.BenchmarkInvitationRedeemConcurrency/redis", "p99_ms_16", "ms", "", "< 10 ms"},
	{"redemption: throughput 200 in flight / 16 in flight", "bolt", "e2e.BenchmarkInvitationRedeemConcurrency/bolt", "ratio_200/16", "×", "", "≥ 0.9 (no collapse), exactly once"},
	{"redemption: throughput 200 in flight / 16 in flight", "Redis", "e2e.BenchmarkInvitationRedeemConcurrency/redis", "ratio_200/16", "×", "", "≥ 0.9 (no collapse), exactly once"},
	{"refresh-token rotation in the store alone", "bolt", "bolt.BenchmarkRotateRefreshToken", "ops/s", "rotations/s", "", ""},
	{"refresh-token rotation in the store alone", "Redis", "redis.BenchmarkRotateRefreshToken", "ops/s", "rotations/s", "", ""},
	{"Redis memory: pending invitation, record_format v1", "Redis", "redis.BenchmarkMemoryPerRecord", "invitation_v1_B/record", "B", "", "≤ 600 B"},
	{"Redis memory: pending invitation, record_format v2", "Redis", "redis.BenchmarkMemoryPerRecord", "invitation_v2_B/record", "B", "", "≤ 600 B"},
	{"Redis memory: pending invitation, record_format v3", "Redis", "redis.BenchmarkMemoryPerRecord", "invitation_v3_B/record", "B", "", "≤ 600 B"},
	{"Redis memory: pending invitation, record_format v4", "Redis", "redis.BenchmarkMemoryPerRecord", "invitation_v4_B/record", "B", "", "≤ 600 B"},
	{"Redis memory: pending invitation, record_format v5", "Redis", "redis.BenchmarkMemoryPerRecord", "invitation_v5_B/record", "B", "", "≤ 600 B"},
	{"Redis memory: pending invitation with an ID as usher makes it (inv- and 16 characters), record_format v4", "Redis", "redis.BenchmarkMemoryPerRecord", "invitation_grants-id_v4_B/record", "B", "", "≤ 600 B"},
	{"Redis memory: pending invitation with an ID as usher makes it (inv- and 16 characters), record_format v5", "Redis", "redis.BenchmarkMemoryPerRecord", "invitation_grants-id_v5_B/record", "B", "", "≤ 600 B"},
	{"Redis memory: pending invitation at 100,000, record_format v4", "Redis", "redis.BenchmarkMemoryPerInvitationAtScale", "invitation_v4_B/record", "B", "", "≤ 600 B"},
	{"Redis memory: pending invitation at 100,000, record_format v5", "Redis", "redis.BenchmarkMemoryPerInvitationAtScale", "invitation_v5_B/record", "B", "", "≤ 600 B"},
	{"Redis memory: pending invitation with external_id, record_format v1", "Redis", "redis.BenchmarkMemoryPerRecord", "invitation+extid_v1_B/record", "B", "", ""},
	{"Redis memory: pending invitation with external_id, record_format v2", "Redis", "redis.BenchmarkMemoryPerRecord", "invitation+extid_v2_B/record", "B", "", ""},
	{"Redis memory: pending invitation with external_id, record_format v3", "Redis", "redis.BenchmarkMemoryPerRecord", "invitation+extid_v3_B/record", "B", "", ""},
	{"Redis memory: pending invitation with external_id, record_format v4", "Redis", "redis.BenchmarkMemoryPerRecord", "invitation+extid_v4_B/record", "B", "", ""},
	{"Redis memory: pending invitation with external_id, record_format v5", "Redis", "redis.BenchmarkMemoryPerRecord", "invitation+extid_v5_B/record", "B", "", ""},
	{"Redis memory: user with identity and grant, record_format v1", "Redis", "redis.BenchmarkMemoryPerRecord", "user+grant_v1_B/record", "B", "", "≤ 800 B"},
	{"Redis memory: user with identity and grant, record_format v3", "Redis", "redis.BenchmarkMemoryPerRecord", "user+grant_v3_B/record", "B", "", "≤ 800 B"},
	{"Redis memory: user with identity and grant, record_format v4", "Redis", "redis.BenchmarkMemoryPerRecord", "user+grant_v4_B/record", "B", "", "≤ 800 B"},
	{"Redis memory: refresh token, record_format v1", "Redis", "redis.BenchmarkMemoryPerRecord", "refresh_token_v1_B/record", "B", "", "≤ 400 B"},
	{"Redis memory: refresh token, record_format v2", "Redis", "redis.BenchmarkMemoryPerRecord", "refresh_token_v2_B/record", "B", "", "≤ 400 B"},
	{"Redis memory: refresh token, record_format v3", "Redis", "redis.BenchmarkMemoryPerRecord", "refresh_token_v3_B/record", "B", "", "≤ 400 B"},
	{"Redis memory: refresh token, record_format v4", "Redis", "redis.BenchmarkMemoryPerRecord", "refresh_token_v4_B/record", "B", "", "≤ 400 B"},
	{"Redis memory: browser session, record_format v1", "Redis", "redis.BenchmarkMemoryPerRecord", "browser_session_v1_B/record", "B", "", "≤ 400 B"},
	{"Redis memory: browser session, record_format v2", "Redis", "redis.BenchmarkMemoryPerRecord", "browser_session_v2_B/record", "B", "", "≤ 400 B"},
	{"Redis memory: browser session, record_format v4", "Redis", "redis.BenchmarkMemoryPerRecord", "browser_session_v4_B/record", "B", "", "≤ 400 B"},
	{"process RSS, 100,000 pending invitations + 10,000 sessions", "Redis", "e2e.BenchmarkProcessMemory", "rss_MiB", "MiB", "", "< 100 MiB"},
}

// line is one built row of the table.
type line struct {
	path, backend, figure, es256, rs256, trips, target string
}

// build turns a run's results into the table's lines; rows whose benchmark
// did not run are left out.
func build(res results) []line {
	var out []line
	for _, r := range rows {
		b, ok := res[r.bench]
		v, has := b.metrics[r.metric]
		if !ok || !has {
			continue
		}
		l := line{path: r.path, backend: r.backend, figure: number(v) + " " + r.unit, target: r.target}
		if ratio, ok := b.metrics["ratio_to_ceiling"]; ok {
			switch r.ceiling {
			case "ES256":
				l.es256 = number(ratio)
			case "RS256":
				l.rs256 = number(ratio)
			}
		}
		// Round trips belong to the operation: shown on its throughput row
		// (and the round-trip row itself), not on its latency rows.
		if strings.HasSuffix(r.metric, "/s") || strings.HasPrefix(r.metric, "store_round_trips/") {
			l.trips = roundTrips(b.metrics)
		}
		out = append(out, l)
	}
	return out
}

// roundTrips reads store_round_trips/<op> and ratelimit_round_trips/<op>
// (benchmarks on Redis count them with a go-redis hook), and the Redis
// server's CPU per op where measured (redis_cpu_us/<op>); "" if none.
func roundTrips(m map[string]float64) string {
	var store, rl, cpu string
	for unit, v := range m {
		switch {
		case strings.HasPrefix(unit, "store_round_trips/"):
			store = strconv.FormatFloat(v, 'f', 1, 64) + " store"
		case strings.HasPrefix(unit, "ratelimit_round_trips/"):
			rl = strconv.FormatFloat(v, 'f', 1, 64) + " rate-limit"
		case strings.HasPrefix(unit, "redis_cpu_us/"):
			cpu = "; Redis CPU " + number(v) + " µs"
		}
	}
	trips := strings.Join(slices.DeleteFunc([]string{store, rl}, func(s string) bool { return s == "" }), " + ")
	if trips == "" {
		return ""
	}
	return trips + cpu
}

// write prints the lines as one Markdown table.
func write(w io.Writer, lines []line) error {
	var sb strings.Builder
	sb.WriteString("| path | backend | figure | ratio to ES256 ceiling | ratio to RS256 ceiling | Redis round trips / op; Redis server CPU / op | target (issue 14) |\n")
	sb.WriteString("|---|---|---|---|---|---|---|\n")
	for _, l := range lines {
		fmt.Fprintf(&sb, "| %s | %s | %s | %s | %s | %s | %s |\n", l.path, l.backend, l.figure, dash(l.es256), dash(l.rs256), dash(l.trips), dash(l.target))
	}
	_, err := io.WriteString(w, sb.String())
	return err
}

func dash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

// number prints a figure for reading: integers with thousands separators
// from 100 up, below 1 two significant digits (ratios).
func number(v float64) string {
	switch a := math.Abs(v); {
	case a >= 100:
		return thousands(int64(math.Round(v)))
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	case a == 0:
		return "0"
	default:
		return strconv.FormatFloat(v, 'f', max(2, 1-int(math.Floor(math.Log10(a)))), 64)
	}
}

func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	if neg {
		return "-" + s
	}
	return s
}
