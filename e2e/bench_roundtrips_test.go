package e2e

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
	"github.com/usher-oidc/usher/internal/testkit"
)

// tripHook is a go-redis hook that hands each round trip to Redis to its
// func: one per command sent alone, one per pipeline or transaction with
// all the commands it holds.
type tripHook func(cmds []redis.Cmder)

func (h tripHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h tripHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h([]redis.Cmder{cmd})
		return next(ctx, cmd)
	}
}

func (h tripHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h(cmds)
		return next(ctx, cmds)
	}
}

// rateLimitTrip: the round trip is a rate-limit check alone (every command
// names a key {rl:…}); one that carries a store read too (the admin API's
// token check with its limit) is a store trip.
func rateLimitTrip(cmds []redis.Cmder) bool {
	for _, c := range cmds {
		if !slices.ContainsFunc(c.Args(), func(a any) bool {
			s, ok := a.(string)
			return ok && strings.Contains(s, "{rl:")
		}) {
			return false
		}
	}
	return len(cmds) > 0
}

// roundTrips counts round trips to Redis (tripHook); rate-limit checks are
// counted apart. It also reads the Redis server's own CPU time (INFO cpu)
// at reset and report: the one Redis every replica shares is what bounds
// them together, so its CPU per operation is reported beside the trips.
type roundTrips struct {
	store, rateLimit, commands atomic.Int64
	rdb                        redis.UniversalClient
	cpu0                       float64
}

func (h *roundTrips) count(cmds []redis.Cmder) {
	h.commands.Add(int64(len(cmds)))
	if rateLimitTrip(cmds) {
		h.rateLimit.Add(1)
		return
	}
	h.store.Add(1)
}

// countRedisRoundTrips hooks a round-trip counter into d's store when it is
// on Redis; nil otherwise (reset and report do nothing then). The store's
// background work (outbox runner, sweeper) is counted too.
func countRedisRoundTrips(d *app.Dev) *roundTrips {
	c, ok := d.App.Store.(interface{ Client() redis.UniversalClient })
	if !ok {
		return nil
	}
	h := &roundTrips{rdb: c.Client()}
	c.Client().AddHook(tripHook(h.count))
	return h
}

// serverCPU is the Redis server's CPU time so far, in seconds (user and
// system, its main thread and the rest); 0 if INFO cannot be read.
func (h *roundTrips) serverCPU() float64 {
	info, err := h.rdb.Info(context.Background(), "cpu").Result()
	if err != nil {
		return 0
	}
	total := 0.0
	for line := range strings.Lines(info) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_user" || k == "used_cpu_sys") {
			f, _ := strconv.ParseFloat(v, 64)
			total += f
		}
	}
	return total
}

func (h *roundTrips) reset() {
	if h != nil {
		h.cpu0 = h.serverCPU() // before the counts start: INFO is no store trip
		h.store.Store(0)
		h.rateLimit.Store(0)
		h.commands.Store(0)
	}
}

// report reports the round trips counted since reset per op, n ops.
func (h *roundTrips) report(b *testing.B, n int, op string) {
	if h == nil || n == 0 {
		return
	}
	b.ReportMetric(float64(h.store.Load())/float64(n), "store_round_trips/"+op)
	b.ReportMetric(float64(h.rateLimit.Load())/float64(n), "ratelimit_round_trips/"+op)
	b.ReportMetric(float64(h.commands.Load())/float64(n), "redis_commands/"+op)
	if cpu := h.serverCPU(); cpu > 0 && h.cpu0 > 0 {
		b.ReportMetric((cpu-h.cpu0)*1e6/float64(n), "redis_cpu_us/"+op)
	}
}

// boltWrites counts store writes and durable bbolt commits (the main file's
// fsynced commits; the flow file's are not) from reset; nil off bolt.
type boltWrites struct {
	stats interface {
		WriteStats() (writes, commits uint64)
	}
	writes0, commits0 uint64
}

func countBoltWrites(d *app.Dev) *boltWrites {
	stats, ok := d.App.Store.(interface {
		WriteStats() (writes, commits uint64)
	})
	if !ok {
		return nil
	}
	return &boltWrites{stats: stats}
}

func (w *boltWrites) reset() {
	if w != nil {
		w.writes0, w.commits0 = w.stats.WriteStats()
	}
}

// report reports the writes and commits since reset per op (the sweeper
// may add a few).
func (w *boltWrites) report(b *testing.B, n int, op string) {
	if w == nil || n == 0 {
		return
	}
	writes, commits := w.stats.WriteStats()
	b.ReportMetric(float64(writes-w.writes0)/float64(n), "store_writes/"+op)
	b.ReportMetric(float64(commits-w.commits0)/float64(n), "durable_commits/"+op)
}

// BenchmarkLoginRedisRoundTrips counts, per complete sign-in through usher
// on Redis (authorize → devidp's login form → callback → code → tokens,
// a fresh cookie jar each time, so no usher or devidp session helps), the
// round trips usher makes to Redis: store round trips and rate-limit
// checks apart, and the commands they carry. A count, not a timing.
func BenchmarkLoginRedisRoundTrips(b *testing.B) {
	addr := testkit.StartRedis(b)
	d := startDev(b, app.DevOptions{Configure: func(c *config.Config) {
		c.Store.Driver = "redis"
		c.Store.Redis.URL = "redis://" + addr + "/0"
		c.Store.RecordFormat = "v6" // what a store runs once rolled out
		c.RateLimits.AuthorizePerMinute = 1 << 30
	}})
	hook := countRedisRoundTrips(d)
	if hook == nil {
		b.Fatalf("store %T is not on Redis", d.App.Store)
	}
	login := func() {
		a := newAgent(b, d.SPAURL)
		code, verifier := a.signIn(d, app.DevUserEmail, app.DevUserPassword, false)
		if tr := exchangeCode(b, d, code, verifier); tr.IDToken == "" {
			b.Fatalf("token exchange: %+v", tr)
		}
	}
	login() // untimed: keys, clients and the user exist
	hook.reset()
	b.ResetTimer()
	for range b.N {
		login()
	}
	b.StopTimer()
	hook.report(b, b.N, "login")
}
