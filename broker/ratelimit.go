package broker

import (
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// RateLimits per replica. Zero values take the defaults.
type RateLimits struct {
	InvitePerMinute          int
	FailedRedemptionsPerHour int
	APIPerMinute             int
	// AuthorizePerMinute bounds the auth requests stored per client IP.
	AuthorizePerMinute int
}

// keyedLimiter is a token bucket per key (client IP, API client). Idle
// buckets are dropped so the map cannot grow without bound.
type keyedLimiter struct {
	mu      sync.Mutex
	every   rate.Limit
	burst   int
	buckets map[string]*bucket
	sweepAt time.Time
}

type bucket struct {
	l    *rate.Limiter
	seen time.Time
}

func newKeyedLimiter(perPeriod int, period time.Duration) *keyedLimiter {
	return &keyedLimiter{every: rate.Limit(float64(perPeriod) / period.Seconds()), burst: perPeriod, buckets: map[string]*bucket{}}
}

// allow takes one token for key; when none is left it returns how long until one is.
func (k *keyedLimiter) allow(key string, now time.Time) (bool, time.Duration) {
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
		return false, d
	}
	return true, 0
}

// blocked reports whether key has no token left, without taking one.
func (k *keyedLimiter) blocked(key string, now time.Time) (bool, time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	b, ok := k.buckets[key]
	if !ok || b.l.TokensAt(now) >= 1 {
		return false, 0
	}
	need := 1 - b.l.TokensAt(now)
	return true, time.Duration(need / float64(k.every) * float64(time.Second))
}

type limiters struct {
	invite, failedRedemption, api, authorize *keyedLimiter
}

func newLimiters(o RateLimits) *limiters {
	def := func(v, d int) int {
		if v <= 0 {
			return d
		}
		return v
	}
	return &limiters{
		invite:           newKeyedLimiter(def(o.InvitePerMinute, 30), time.Minute),
		failedRedemption: newKeyedLimiter(def(o.FailedRedemptionsPerHour, 20), time.Hour),
		api:              newKeyedLimiter(def(o.APIPerMinute, 600), time.Minute),
		authorize:        newKeyedLimiter(def(o.AuthorizePerMinute, 60), time.Minute),
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
	now := b.now()
	if blocked, wait := b.limits.failedRedemption.blocked(ip, now); blocked {
		b.tooMany(w, "failed_redemptions", wait, false)
		return false
	}
	if ok, wait := b.limits.invite.allow(ip, now); !ok {
		b.tooMany(w, "invite", wait, false)
		return false
	}
	return true
}

func (b *Broker) tooMany(w http.ResponseWriter, limit string, wait time.Duration, problem bool) {
	b.metrics.rateLimited.WithLabelValues(limit).Inc()
	w.Header().Set("Retry-After", retryAfter(wait))
	if problem {
		writeProblem(w, http.StatusTooManyRequests, "rate-limited", "Too many requests",
			"This client sent too many requests; retry after "+retryAfter(wait)+" seconds.")
		return
	}
	renderPage(w, http.StatusTooManyRequests, page{Title: "Too many attempts",
		Message: "Too many invitation attempts came from your network. Wait a few minutes and try again."})
}
