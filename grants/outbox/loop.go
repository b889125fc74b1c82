package outbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"time"
)

// MaxBackoff caps every queue's retry delay.
const MaxBackoff = time.Hour

// Backoff is base doubled per attempt after the first, capped at MaxBackoff:
// the retry schedule of the mail, mirror and webhook queues.
func Backoff(base time.Duration, attempt int) time.Duration {
	d := base
	for i := 1; i < attempt && d < MaxBackoff; i++ {
		d *= 2
	}
	return min(d, MaxBackoff)
}

// WakeLoop is the drain loop the queue workers share: drain at once when
// woken (an enqueue in this process), when this process's earliest retry
// falls due, and otherwise every poll interval (jobs of other replicas).
type WakeLoop struct {
	poll time.Duration
	now  func() time.Time
	wake chan struct{}

	mu        sync.Mutex
	nextRetry time.Time
	// NotBefore, when set, returns an instant the loop must not wake before
	// (the mirror's rate-limit pause).
	NotBefore func() time.Time
}

func NewWakeLoop(poll time.Duration, now func() time.Time) *WakeLoop {
	return &WakeLoop{poll: poll, now: now, wake: make(chan struct{}, 1)}
}

// Poke wakes the loop without blocking.
func (l *WakeLoop) Poke() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// NoteRetry remembers a retry this process scheduled, so a short backoff is
// honoured without polling fast.
func (l *WakeLoop) NoteRetry(at time.Time) {
	l.mu.Lock()
	if l.nextRetry.IsZero() || at.Before(l.nextRetry) {
		l.nextRetry = at
	}
	l.mu.Unlock()
}

func (l *WakeLoop) nextWait() time.Duration {
	wait := l.poll
	now := l.now()
	l.mu.Lock()
	if !l.nextRetry.IsZero() {
		d := l.nextRetry.Sub(now)
		if d < wait {
			wait = max(d, 0)
		}
		if d <= l.poll {
			l.nextRetry = time.Time{} // this wait covers it
		}
	}
	l.mu.Unlock()
	if l.NotBefore != nil {
		if d := l.NotBefore().Sub(now); d > wait {
			wait = d
		}
	}
	return wait
}

// Run calls drain until ctx ends.
func (l *WakeLoop) Run(ctx context.Context, drain func(context.Context)) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.wake:
		case <-timer.C:
		}
		drain(ctx)
		if ctx.Err() != nil {
			return
		}
		timer.Reset(l.nextWait())
	}
}

// RandomHex is n random bytes in hex: job and message IDs.
func RandomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go ≥ 1.24)
	return hex.EncodeToString(b)
}

// ShortReason keeps an error message fit for an admin list column.
const maxReasonLen = 200

// ShortReason clips s to maxReasonLen bytes on a UTF-8 boundary.
func ShortReason(s string) string {
	if len(s) <= maxReasonLen {
		return s
	}
	cut := maxReasonLen
	for cut > 0 && s[cut]&0xC0 == 0x80 { // do not split a UTF-8 sequence
		cut--
	}
	return s[:cut] + "…"
}
