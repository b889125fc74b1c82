package grants

import (
	"context"
	"sync"
	"time"
)

// maxBackoff caps every queue's retry delay.
const maxBackoff = time.Hour

// backoff is base doubled per attempt after the first, capped at maxBackoff:
// the retry schedule of the mail, mirror and webhook queues.
func backoff(base time.Duration, attempt int) time.Duration {
	d := base
	for i := 1; i < attempt && d < maxBackoff; i++ {
		d *= 2
	}
	return min(d, maxBackoff)
}

// wakeLoop is the drain loop the queue workers share: drain at once when
// woken (an enqueue in this process), when this process's earliest retry
// falls due, and otherwise every poll interval (jobs of other replicas).
type wakeLoop struct {
	poll time.Duration
	now  func() time.Time
	wake chan struct{}

	mu        sync.Mutex
	nextRetry time.Time
	// notBefore, when set, returns an instant the loop must not wake before
	// (the mirror's rate-limit pause).
	notBefore func() time.Time
}

func newWakeLoop(poll time.Duration, now func() time.Time) *wakeLoop {
	return &wakeLoop{poll: poll, now: now, wake: make(chan struct{}, 1)}
}

// poke wakes the loop without blocking.
func (l *wakeLoop) poke() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// noteRetry remembers a retry this process scheduled, so a short backoff is
// honoured without polling fast.
func (l *wakeLoop) noteRetry(at time.Time) {
	l.mu.Lock()
	if l.nextRetry.IsZero() || at.Before(l.nextRetry) {
		l.nextRetry = at
	}
	l.mu.Unlock()
}

func (l *wakeLoop) nextWait() time.Duration {
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
	if l.notBefore != nil {
		if d := l.notBefore().Sub(now); d > wait {
			wait = d
		}
	}
	return wait
}

// run calls drain until ctx ends.
func (l *wakeLoop) run(ctx context.Context, drain func(context.Context)) {
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
