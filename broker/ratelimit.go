package broker

import (
	"context"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/usher-oidc/usher/broker/admin"
)

// RateLimits per key (client IP, API client). Zero values take the defaults.
// They hold per process unless Options.NewLimiter shares them (Redis).
type RateLimits struct {
	InvitePerMinute          int
	FailedRedemptionsPerHour int
	APIPerMinute             int
	// AuthorizePerMinute bounds the auth requests stored per client IP.
	AuthorizePerMinute int
}

// Limiter is one rate limit, counted per key (a client IP, an API client):
// at most perPeriod requests per period, all of them at once at most.
type Limiter interface {
	// Allow takes one request of key; refused, it says how long until the
	// next one would be allowed.
	Allow(ctx context.Context, key string) (ok bool, retryAfter time.Duration, err error)
	// Blocked reports, without taking one, whether the next request of key
	// would be refused, and for how long.
	Blocked(ctx context.Context, key string) (blocked bool, retryAfter time.Duration, err error)
}

// NewLimiter builds the limit called name ("invite", "failed_redemptions",
// "api", "authorize"): perPeriod requests per period per key.
type NewLimiter func(name string, perPeriod int, period time.Duration) Limiter

// limiterTimeout bounds one check of a shared limiter; past it the request
// goes through (fail open) rather than wait on the limiter's backend.
const limiterTimeout = time.Second

// keyedLimiter is a token bucket per key (client IP, API client), in this
// process's memory. Idle buckets are dropped so the map cannot grow without bound.
type keyedLimiter struct {
	mu      sync.Mutex
	now     func() time.Time
	every   rate.Limit
	burst   int
	buckets map[string]*bucket
	sweepAt time.Time
}

type bucket struct {
	l    *rate.Limiter
	seen time.Time
}

func newKeyedLimiter(perPeriod int, period time.Duration, now func() time.Time) *keyedLimiter {
	return &keyedLimiter{now: now, every: rate.Limit(float64(perPeriod) / period.Seconds()), burst: perPeriod, buckets: map[string]*bucket{}}
}

// Allow takes one token for key; when none is left it returns how long until one is.
func (k *keyedLimiter) Allow(_ context.Context, key string) (bool, time.Duration, error) {
	now := k.now()
	k.mu.Lock()
	defer k.mu.Unlock()
	if now.After(k.sweepAt) {
		for key, b := range k.buckets {
			if now.Sub(b.seen) > time.Hour {
				delete(k.buckets, key)
			}
		}
		k.sweepAt = now.Add(time.Minute)
	}
	b, ok := k.buckets[key]
	if !ok {
		b = &bucket{l: rate.NewLimiter(k.every, k.burst)}
		k.buckets[key] = b
	}
	b.seen = now
	r := b.l.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d, nil
	}
	return true, 0, nil
}

// Blocked reports whether key has no token left, without taking one.
func (k *keyedLimiter) Blocked(_ context.Context, key string) (bool, time.Duration, error) {
	now := k.now()
	k.mu.Lock()
	defer k.mu.Unlock()
	b, ok := k.buckets[key]
	if !ok || b.l.TokensAt(now) >= 1 {
		return false, 0, nil
	}
	need := 1 - b.l.TokensAt(now)
	return true, time.Duration(need / float64(k.every) * float64(time.Second)), nil
}

// revocationLimiter is a Limiter that also answers TokenRevoked for an
// access token in the round trip that takes the request
// (redisstore.RateLimiter): the admin API's token check and rate limit in
// one trip to the shared store instead of two.
type revocationLimiter interface {
	AllowUnlessRevoked(ctx context.Context, key, familyID, jti string) (ok bool, retryAfter time.Duration, limitErr error, revoked bool, err error)
}

// limit is one Limiter as the handlers use it: an error of the limiter (a
// shared one whose Redis is unreachable) lets the request through, with a
// warning in the log (at most one per limit every logEvery) and
// usher_rate_limit_errors_total counting every one.
type limit struct {
	name    string
	l       Limiter
	metrics *metrics
	log     *slog.Logger
	logged  atomic.Int64 // unix ns of the last warning
}

const limitLogEvery = 10 * time.Second

func (l *limit) allow(ctx context.Context, key string) (bool, time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, limiterTimeout)
	defer cancel()
	ok, wait, err := l.l.Allow(ctx, key)
	if err != nil {
		l.failOpen(err)
		return true, 0
	}
	return ok, wait
}

func (l *limit) blocked(ctx context.Context, key string) (bool, time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, limiterTimeout)
	defer cancel()
	blocked, wait, err := l.l.Blocked(ctx, key)
	if err != nil {
		l.failOpen(err)
		return false, 0
	}
	return blocked, wait
}

func (l *limit) failOpen(err error) {
	l.metrics.rateLimitErrors.WithLabelValues(l.name).Inc()
	now := time.Now().UnixNano()
	last := l.logged.Load()
	if now-last < int64(limitLogEvery) || !l.logged.CompareAndSwap(last, now) {
		return
	}
	l.log.Warn("rate limit unavailable: letting requests through", "limit", l.name, "err", err)
}

type limiters struct {
	invite, failedRedemption, api, authorize *limit
}

func newLimiters(o RateLimits, build NewLimiter, now func() time.Time, m *metrics, log *slog.Logger) *limiters {
	def := func(v, d int) int {
		if v <= 0 {
			return d
		}
		return v
	}
	if build == nil {
		build = func(_ string, perPeriod int, period time.Duration) Limiter {
			return newKeyedLimiter(perPeriod, period, now)
		}
	}
	mk := func(name string, perPeriod int, period time.Duration) *limit {
		return &limit{name: name, l: build(name, perPeriod, period), metrics: m, log: log}
	}
	return &limiters{
		invite:           mk("invite", def(o.InvitePerMinute, 30), time.Minute),
		failedRedemption: mk("failed_redemptions", def(o.FailedRedemptionsPerHour, 20), time.Hour),
		api:              mk("api", def(o.APIPerMinute, 600), time.Minute),
		authorize:        mk("authorize", def(o.AuthorizePerMinute, 60), time.Minute),
	}
}

// clientIP is the address withClientIP resolved (see ClientIP.resolve), or
// the TCP peer: a forwarding header counts only from a trusted proxy.
func clientIP(r *http.Request) string {
	if ip := clientIPFrom(r.Context()); ip != "" {
		return ip
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func retryAfter(d time.Duration) string {
	return strconv.Itoa(int(math.Ceil(max(d, time.Second).Seconds())))
}

// limitInvites guards /invite/* (guessing links) per client IP, and refuses
// an IP that has failed too many redemptions.
func (b *Broker) limitInvites(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if b.inviteAllowed(w, r) {
			next.ServeHTTP(w, r)
		}
	})
}

// inviteAllowed takes one invitation attempt of the client IP, or answers 429.
func (b *Broker) inviteAllowed(w http.ResponseWriter, r *http.Request) bool {
	ip := clientIP(r)
	if blocked, wait := b.limits.failedRedemption.blocked(r.Context(), ip); blocked {
		b.tooMany(w, r, "failed_redemptions", wait, false)
		return false
	}
	if ok, wait := b.limits.invite.allow(r.Context(), ip); !ok {
		b.tooMany(w, r, "invite", wait, false)
		return false
	}
	return true
}

func (b *Broker) tooMany(w http.ResponseWriter, r *http.Request, limit string, wait time.Duration, problem bool) {
	b.metrics.rateLimited.WithLabelValues(limit).Inc()
	if problem {
		admin.WriteTooMany(w, wait)
		return
	}
	w.Header().Set("Retry-After", retryAfter(wait))
	b.renderPage(w, r, http.StatusTooManyRequests, page{Key: "ratelimit.invite"})
}
