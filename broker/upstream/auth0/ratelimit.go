package auth0

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/usher-oidc/usher/grants/outbox"
)

// rateNote receives what the last 429 of one logical call asked for.
type rateNote struct {
	mu    sync.Mutex
	wait  time.Duration
	until time.Time
}

type rateNoteKey struct{}

// rateLimitNoter sits under go-auth0's own retries, so it sees every
// attempt; it writes a 429's Retry-After / X-RateLimit-Reset into the
// call's rateNote (go-auth0's error keeps only the status code).
type rateLimitNoter struct {
	base http.RoundTripper
	now  func() time.Time
}

func (t *rateLimitNoter) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err == nil && resp.StatusCode == http.StatusTooManyRequests {
		if n, ok := req.Context().Value(rateNoteKey{}).(*rateNote); ok {
			now := t.now()
			wait := retryAfter(resp.Header, now)
			n.mu.Lock()
			n.wait, n.until = wait, now.Add(wait)
			n.mu.Unlock()
		}
	}
	return resp, err
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
	if v := h.Get("X-RateLimit-Reset"); v != "" {
		if epoch, err := strconv.ParseInt(v, 10, 64); err == nil {
			wait = max(wait, time.Unix(epoch, 0).Sub(now))
		}
	}
	return min(max(wait, 0), outbox.MaxBackoff)
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

func (m *Mirror) notePause(n *rateNote) {
	n.mu.Lock()
	until := n.until
	n.mu.Unlock()
	if !until.IsZero() {
		m.pause(until)
	}
}
