package e2e

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
	"github.com/usher-oidc/usher/internal/testkit"
)

// roundTrips is a go-redis hook that counts round trips to Redis: one per
// command sent alone, one per pipeline or transaction however many commands
// it holds. Rate-limit checks (keys {rl:…}) are counted apart.
type roundTrips struct {
	store, rateLimit, commands atomic.Int64
}

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.count([]redis.Cmder{cmd})
		return next(ctx, cmd)
	}
}

func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.count(cmds)
		return next(ctx, cmds)
	}
}

func (h *roundTrips) count(cmds []redis.Cmder) {
	h.commands.Add(int64(len(cmds)))
	for _, c := range cmds {
		for _, a := range c.Args() {
			if s, ok := a.(string); ok && strings.Contains(s, "{rl:") {
				h.rateLimit.Add(1)
				return
			}
		}
	}
	h.store.Add(1)
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
		c.RateLimits.AuthorizePerMinute = 1 << 30
	}})
	client, ok := d.App.Store.(interface{ Client() redis.UniversalClient })
	if !ok {
		b.Fatalf("store %T is not on Redis", d.App.Store)
	}
	hook := &roundTrips{}
	client.Client().AddHook(hook)
	login := func() {
		a := newAgent(b, d.SPAURL)
		code, verifier := a.signIn(d, app.DevUserEmail, app.DevUserPassword, false)
		if tr := exchangeCode(b, d, code, verifier); tr.IDToken == "" {
			b.Fatalf("token exchange: %+v", tr)
		}
	}
	login() // untimed: keys, clients and the user exist
	hook.store.Store(0)
	hook.rateLimit.Store(0)
	hook.commands.Store(0)
	b.ResetTimer()
	for range b.N {
		login()
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(float64(hook.store.Load())/n, "store_round_trips/login")
	b.ReportMetric(float64(hook.rateLimit.Load())/n, "ratelimit_round_trips/login")
	b.ReportMetric(float64(hook.commands.Load())/n, "redis_commands/login")
}
