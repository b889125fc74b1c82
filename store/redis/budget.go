package redis

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// budgetPause moves the pause key (ms since the epoch) to ARGV[1] unless it
// already holds a later instant; the key expires at that instant (PXAT).
var budgetPause = redis.NewScript(`
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > cur then redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[1]) end
return 0
`)

// Budget is a call budget that every usher replica on this Redis shares,
// per key (an upstream tenant): perSecond calls a second, burst of them at
// once at most, and a pause ("no calls before …") every replica honours.
type Budget struct {
	s        *Store
	name     string
	interval int64 // µs between two calls at the sustained rate
	burst    int
}

// Budget returns the shared budget called name (part of its keys).
func (s *Store) Budget(name string, perSecond float64, burst int) *Budget {
	interval := int64(1e6)
	if perSecond > 0 {
		interval = max(int64(math.Round(1e6/perSecond)), 1)
	}
	return &Budget{s: s, name: name, interval: interval, burst: max(burst, 1)}
}

func (b *Budget) keys(key string) []string {
	k := b.s.prefix + "{budget:" + esc(b.name) + ":" + esc(key) + "}"
	return []string{k, k + ":paused"}
}

// Take takes one call permit of key when no pause holds and more than
// reserve permits are left (reserve is capped at burst-1); refused, it says
// how long to wait before asking again.
func (b *Budget) Take(ctx context.Context, key string, reserve int) (bool, time.Duration, error) {
	reserve = min(max(reserve, 0), b.burst-1)
	// The rate limit's script with the pause key and a burst less the
	// reserve: it allows only while more than reserve permits are left.
	v, err := b.s.runScript(ctx, gcra, b.keys(key), b.interval, b.burst-reserve, "1")
	if err != nil {
		return false, 0, fmt.Errorf("redisstore: budget %s: %w", b.name, err)
	}
	if len(v) != 2 {
		return false, 0, fmt.Errorf("redisstore: budget %s: unexpected reply %v", b.name, v)
	}
	ok, _ := v[0].(int64)
	wait, _ := v[1].(int64)
	return ok == 1, time.Duration(wait) * time.Microsecond, nil
}

// Pause refuses every Take of key until until (a later pause wins).
func (b *Budget) Pause(ctx context.Context, key string, until time.Time) error {
	ms := until.UnixMilli()
	if ms <= 0 {
		return nil
	}
	if _, err := b.s.runScript(ctx, budgetPause, b.keys(key)[1:], strconv.FormatInt(ms, 10)); err != nil {
		return fmt.Errorf("redisstore: budget %s: pause: %w", b.name, err)
	}
	return nil
}
