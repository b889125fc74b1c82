package auth0

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/usher-oidc/usher/grants/outbox"
)

// Pacing. Auth0 gives a tenant one Management API budget (a Free or
// non-production tenant: about 2 calls a second, small bursts), whatever
// the number of usher replicas calling it. So:
//
//   - every /api/v2 call first takes a permit from a Budget keyed by the
//     tenant domain: on Redis one GCRA shared by every replica, otherwise
//     one in this process (a bbolt file has one process anyway);
//   - a response that says the tenant is spent (X-RateLimit-Remaining: 0
//     with X-RateLimit-Reset, or a 429 with Retry-After / X-RateLimit-Reset)
//     pauses the whole budget until then, on every replica;
//   - priority: HasAccount (the login path) may take the whole burst; mirror
//     jobs take a permit only while more than LoginReserve permits are left.
//     Both move the same bucket, so however many jobs are queued, a
//     sign-in's lookup finds LoginReserve permits waiting (a burst of
//     lookups beyond that waits like everyone else).

// Budget is the tenant's Management API budget. Implementations are safe
// for concurrent use; *redis.Budget (store/redis) is the shared one.
type Budget interface {
	// Take takes one call permit of key (the tenant domain) when no pause
	// holds and more than reserve permits are left; refused, it says how
	// long to wait before asking again.
	Take(ctx context.Context, key string, reserve int) (ok bool, wait time.Duration, err error)
	// Pause refuses every Take of key until until (a later pause wins).
	Pause(ctx context.Context, key string, until time.Time) error
}

// NewLocalBudget is a Budget in this process's memory: perSecond calls a
// second per key, burst at once at most (the GCRA of the Redis budget).
func NewLocalBudget(perSecond float64, burst int, now func() time.Time) Budget {
	if now == nil {
		now = time.Now
	}
	interval := time.Second
	if perSecond > 0 {
		interval = max(time.Duration(float64(time.Second)/perSecond), time.Microsecond)
	}
	return &localBudget{now: now, interval: interval, burst: max(burst, 1),
		tat: make(map[string]time.Time), paused: make(map[string]time.Time)}
}

type localBudget struct {
	mu       sync.Mutex
	now      func() time.Time
	interval time.Duration
	burst    int
	tat      map[string]time.Time // theoretical arrival time per key
	paused   map[string]time.Time
}

func (b *localBudget) Take(_ context.Context, key string, reserve int) (bool, time.Duration, error) {
	reserve = min(max(reserve, 0), b.burst-1)
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	if p := b.paused[key]; now.Before(p) {
		return false, p.Sub(now), nil
	}
	tat := b.tat[key]
	if tat.Before(now) {
		tat = now
	}
	allowAt := tat.Add(b.interval - time.Duration(b.burst-reserve)*b.interval)
	if now.Before(allowAt) {
		return false, allowAt.Sub(now), nil
	}
	b.tat[key] = tat.Add(b.interval)
	return true, 0, nil
}

func (b *localBudget) Pause(_ context.Context, key string, until time.Time) error {
	b.mu.Lock()
	if until.After(b.paused[key]) {
		b.paused[key] = until
	}
	b.mu.Unlock()
	return nil
}

// errPaced: a call was not made, the budget asking to wait longer than the
// call may (its deadline, or maxPacedWait for a job).
type errPaced struct{ until time.Time }

func (e errPaced) Error() string {
	return "Auth0 Management API budget spent until " + e.until.UTC().Format(time.RFC3339)
}

// maxPacedWait is the longest a mirror job's call waits in line for a
// permit; past it the job goes back to the queue for when the budget allows.
const maxPacedWait = 10 * time.Second

// maxLookupWait is the longest HasAccount waits for a permit; past it the
// answer is ErrMirrorRateLimited (the login carries on without it).
const maxLookupWait = time.Second

// budgetTimeout bounds one Take or Pause; past it the call goes ahead
// unpaced (fail open, as the broker's own limiters).
const budgetTimeout = time.Second

// rateNote receives what the last 429 of one logical call asked for.
type rateNote struct {
	mu    sync.Mutex
	wait  time.Duration
	until time.Time
}

type rateNoteKey struct{}

// pacer sits under go-auth0's own retries, so it sees every attempt: it
// takes a permit for each /api/v2 request (leaving reserve permits to
// others), and pauses the budget from what each response says. A 429's
// wait also goes into the call's rateNote (go-auth0's error keeps only the
// status code).
type pacer struct {
	base    http.RoundTripper
	m       *Mirror
	reserve int
	maxWait time.Duration // besides the request's deadline; 0 = only that
}

func (t *pacer) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.HasPrefix(req.URL.Path, "/api/v2/") {
		if err := t.m.take(req.Context(), t.reserve, t.maxWait); err != nil {
			return nil, err
		}
	}
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	now := t.m.o.Now()
	var until time.Time
	if resp.StatusCode == http.StatusTooManyRequests {
		wait := retryAfter(resp.Header, now)
		until = now.Add(wait)
		if n, ok := req.Context().Value(rateNoteKey{}).(*rateNote); ok {
			n.mu.Lock()
			n.wait, n.until = wait, until
			n.mu.Unlock()
		}
	} else if strings.TrimSpace(resp.Header.Get("X-RateLimit-Remaining")) == "0" {
		until = now.Add(resetIn(resp.Header, now))
	}
	if until.After(now) {
		t.m.pauseAll(req.Context(), until)
	}
	return resp, nil
}

// take waits for a permit: until the budget gives one, or fails with
// errPaced when the wait would pass ctx's deadline or maxWait.
func (m *Mirror) take(ctx context.Context, reserve int, maxWait time.Duration) error {
	for {
		now := m.o.Now()
		wait := m.pausedUntil().Sub(now) // this replica saw the pause itself
		if wait <= 0 {
			bctx, cancel := context.WithTimeout(ctx, budgetTimeout)
			ok, w, err := m.budget.Take(bctx, m.o.Domain, reserve)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				m.log.Warn("auth0 management budget unavailable; calling unpaced", "error", err)
				return nil
			}
			if ok {
				return nil
			}
			wait = w
		}
		until := now.Add(wait)
		if dl, ok := ctx.Deadline(); ok && until.After(dl) || maxWait > 0 && wait > maxWait {
			return errPaced{until}
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
	}
}

// pauseAll pauses this replica and the shared budget until until.
func (m *Mirror) pauseAll(ctx context.Context, until time.Time) {
	m.pause(until)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), budgetTimeout)
	defer cancel()
	if err := m.budget.Pause(ctx, m.o.Domain, until); err != nil {
		m.log.Warn("auth0 management budget: could not share a pause", "until", until, "error", err)
	}
}

// retryAfter reads how long a 429 asks to wait: Retry-After (seconds or an
// HTTP date) or X-RateLimit-Reset (epoch seconds), whichever is later.
func retryAfter(h http.Header, now time.Time) time.Duration {
	var wait time.Duration
	if v := strings.TrimSpace(h.Get("Retry-After")); v != "" {
		if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
			wait = time.Duration(secs) * time.Second
		} else if at, err := http.ParseTime(v); err == nil {
			wait = at.Sub(now)
		}
	}
	return min(max(wait, resetIn(h, now), 0), outbox.MaxBackoff)
}

// resetIn is how long until X-RateLimit-Reset (epoch seconds); 0 without one.
func resetIn(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("X-RateLimit-Reset"))
	epoch, err := strconv.ParseInt(v, 10, 64)
	if v == "" || err != nil {
		return 0
	}
	return min(max(time.Unix(epoch, 0).Sub(now), 0), outbox.MaxBackoff)
}

func (m *Mirror) pause(until time.Time) {
	m.mu.Lock()
	if until.After(m.pauseUntil) {
		m.pauseUntil = until
	}
	m.mu.Unlock()
}

func (m *Mirror) pausedUntil() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pauseUntil
}

// pacedUntil is when a call refused by the budget may be made, if err says so.
func pacedUntil(err error) (time.Time, bool) {
	var p errPaced
	if errors.As(err, &p) {
		return p.until, true
	}
	return time.Time{}, false
}
