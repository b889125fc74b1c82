package redis

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// gcra is one check of a rate limit by the generic cell rate algorithm: the
// key holds the limit's theoretical arrival time (TAT, µs); a request is
// allowed while TAT + interval - burst×interval <= now. Taking one (ARGV[3]
// '1') moves TAT on by one interval, and the key expires when TAT passes,
// so an idle key lives at most one period. now is Redis's own clock (TIME):
// every replica then measures against one clock, whatever their skew.
// A Budget passes a pause key too (KEYS[2], same slot): while it holds an
// instant still ahead (ms since the epoch) nothing is allowed; and a
// smaller burst for a caller that must leave a reserve to others (all
// callers move the same TAT).
// KEYS[1] {rl:<limit>:<key>} or {budget:…}, [KEYS[2] pause key]; ARGV:
// interval µs, burst, take ('1' or '0').
// Reply {1, 0} allowed (or would be), {0, retry-after µs} refused.
var gcra = redis.NewScript(`
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if KEYS[2] then
  local paused = tonumber(redis.call('GET', KEYS[2]) or '0') * 1000
  if paused > now then return {0, paused - now} end
end
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allowAt = tat + interval - tonumber(ARGV[2]) * interval
if now < allowAt then return {0, allowAt - now} end
if ARGV[3] == '1' then
  local next = tat + interval
  redis.call('SET', KEYS[1], string.format('%.0f', next), 'PX', string.format('%.0f', math.ceil((next - now) / 1000)))
end
return {1, 0}
`)

// RateLimiter is one rate limit that every usher replica on this Redis
// shares: perPeriod requests per period per key, all of them at once at
// most (a GCRA in one script per check). It implements broker.Limiter.
type RateLimiter struct {
	s        *Store
	name     string
	interval int64 // µs between two requests at the sustained rate
	burst    int
}

// RateLimiter returns the shared limit called name (part of its keys).
func (s *Store) RateLimiter(name string, perPeriod int, period time.Duration) *RateLimiter {
	perPeriod = max(perPeriod, 1)
	return &RateLimiter{s: s, name: name, interval: max(period.Microseconds()/int64(perPeriod), 1), burst: perPeriod}
}

// key is prefix{rl:<limit>:<key>}: one key per limit and key, alone in its slot.
func (l *RateLimiter) key(key string) string {
	return l.s.prefix + "{rl:" + esc(l.name) + ":" + esc(key) + "}"
}

// Allow takes one request of key; refused, it says how long until one is allowed.
func (l *RateLimiter) Allow(ctx context.Context, key string) (bool, time.Duration, error) {
	return l.check(ctx, key, "1")
}

// Blocked reports, without taking one, whether the next request of key would be refused.
func (l *RateLimiter) Blocked(ctx context.Context, key string) (bool, time.Duration, error) {
	ok, wait, err := l.check(ctx, key, "0")
	return !ok && err == nil, wait, err
}

func (l *RateLimiter) check(ctx context.Context, key, take string) (bool, time.Duration, error) {
	v, err := l.s.runScript(ctx, gcra, []string{l.key(key)}, l.interval, l.burst, take)
	return l.outcome(v, err)
}

// AllowUnlessRevoked is Allow for key and, in the same round trip,
// Store.TokenRevoked for an access token (familyID, jti): the admin API
// takes its client's request and checks its token with one trip to the
// store. The request is taken whether or not the token is revoked. err is
// the revocation check's failure; the limit's own is limitErr, so that a
// caller can let requests through a failing limit as it would with Allow.
func (l *RateLimiter) AllowUnlessRevoked(ctx context.Context, key, familyID, jti string) (ok bool, retryAfter time.Duration, limitErr error, revoked bool, err error) {
	if err := checkRevocationRead(familyID, jti); err != nil {
		return false, 0, nil, false, fmt.Errorf("redisstore: token revoked: %w", err)
	}
	var take *pipedScript
	var read revocationRead
	_, _ = l.s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error { // each reply read below
		take = scriptCall{gcra, []string{l.key(key)}, []any{l.interval, l.burst, "1"}}.queue(ctx, p)
		read = l.s.queueRevocation(ctx, p, familyID, jti)
		return nil
	})
	if err := read.err(); err != nil {
		return false, 0, nil, false, fmt.Errorf("redisstore: token revoked: %w", err)
	}
	ok, retryAfter, limitErr = l.outcome(take.reply(ctx, l.s.rdb))
	return ok, retryAfter, limitErr, read.revoked(l.s.now()), nil
}

// outcome reads gcra's reply: allowed, or how long until a request is.
func (l *RateLimiter) outcome(v []any, err error) (bool, time.Duration, error) {
	if err != nil {
		return false, 0, fmt.Errorf("redisstore: rate limit %s: %w", l.name, err)
	}
	if len(v) != 2 {
		return false, 0, fmt.Errorf("redisstore: rate limit %s: unexpected reply %v", l.name, v)
	}
	ok, _ := v[0].(int64)
	wait, _ := v[1].(int64)
	return ok == 1, time.Duration(wait) * time.Microsecond, nil
}
