package bolt

import (
	"errors"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// committer shares commits among concurrent writers (group commit): a
// writer that finds no commit under way commits at once with what is
// queued; writers arriving meanwhile queue, and the next commit, started as
// soon as that one is durable, takes them all. bbolt's own Batch instead
// closes a batch after a fixed delay (MaxBatchDelay), so under load each
// commit carried the few writers of that delay while the rest waited behind
// it in batches of their own: about one fsync per create. The contract is
// Batch's: fn may run more than once (a failing member re-runs alone, the
// rest together again).
type committer struct {
	db      *bolt.DB
	mu      sync.Mutex
	pending []groupCall
	busy    bool // a commit is under way or about to start
	// riders wait for the next commit without holding anyone up (ride);
	// rideTimer starts one for them when no writer does; rideFailed hears
	// of a rider that could not be written (nil: dropped silently).
	riders     []groupCall
	rideTimer  *time.Timer
	rideFailed func(error)
	rideDelay  time.Duration // 0: rideDelay
}

// groupCall is one writer's fn; err is nil for a rider (nobody waits),
// whose done (if any) hears how its commit ended: nil once durable, else
// why it was dropped.
type groupCall struct {
	fn   func(*bolt.Tx) error
	err  chan error
	done func(error)
}

// rideDelay is how long a rider waits for a writer to take it along before
// a commit starts for it alone.
const rideDelay = 50 * time.Millisecond

// maxGroup bounds the writers in one transaction (bbolt's MaxBatchSize).
const maxGroup = 1000

// errTrySolo tells a writer its fn failed in a shared transaction and is to
// run alone (the others ran again without it). Never returned to callers.
var errTrySolo = errors.New("boltstore: run alone")

func (c *committer) run(fn func(*bolt.Tx) error) error {
	call := groupCall{fn: fn, err: make(chan error, 1)}
	c.mu.Lock()
	c.pending = append(c.pending, call)
	lead := !c.busy
	c.busy = true
	c.mu.Unlock()
	if lead {
		c.commitNext()
	}
	err := <-call.err
	if errors.Is(err, errTrySolo) {
		err = c.db.Update(fn)
	}
	return err
}

// ride queues fn for the next commit and returns at once: for a write whose
// loss in a crash costs nothing that matters (a returning user's last
// sign-in time), so that it goes with a durable write that follows (the
// sign-in's session, moments later) instead of costing a commit that
// someone waits on. If no writer comes within rideDelay, a commit starts
// for it. fn may run more than once, as with run; a rider that fails is
// dropped (rideFailed hears why) and the rest commit without it. done, if
// not nil, hears how the rider's commit ended (nil: durable).
func (c *committer) ride(fn func(*bolt.Tx) error, done func(error)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.riders = append(c.riders, groupCall{fn: fn, done: done})
	if c.rideTimer == nil {
		c.rideTimer = time.AfterFunc(c.delay(), c.rideAlone)
	}
}

// rideAlone starts a commit for the riders no writer took along; if one is
// under way, the riders go with the commit after it.
func (c *committer) rideAlone() {
	c.mu.Lock()
	c.rideTimer = nil
	if len(c.riders) == 0 {
		c.mu.Unlock()
		return
	}
	if c.busy {
		c.rideTimer = time.AfterFunc(c.delay(), c.rideAlone)
		c.mu.Unlock()
		return
	}
	c.busy = true
	c.mu.Unlock()
	c.commitNext()
}

func (c *committer) delay() time.Duration {
	if c.rideDelay > 0 {
		return c.rideDelay
	}
	return rideDelay
}

// flush commits the riders still queued, before the file closes.
func (c *committer) flush() error {
	c.mu.Lock()
	n := len(c.riders)
	if c.rideTimer != nil {
		c.rideTimer.Stop()
		c.rideTimer = nil
	}
	c.mu.Unlock()
	if n == 0 {
		return nil
	}
	return c.run(func(*bolt.Tx) error { return nil })
}

// commitNext commits the queued writers (and the riders, first), then hands
// the next commit to a new goroutine if more queued meanwhile, so that no
// writer serves others for long after its own write is durable.
func (c *committer) commitNext() {
	c.mu.Lock()
	calls := c.pending
	if len(calls) > maxGroup {
		calls, c.pending = calls[:maxGroup:maxGroup], calls[maxGroup:]
	} else {
		c.pending = nil
	}
	if len(c.riders) > 0 {
		calls = append(c.riders, calls...)
		c.riders = nil
		if c.rideTimer != nil { // the next rider waits its own rideDelay
			c.rideTimer.Stop()
			c.rideTimer = nil
		}
	}
	c.mu.Unlock()
	c.commitGroup(calls)
	c.mu.Lock()
	more := len(c.pending) > 0
	c.busy = more
	c.mu.Unlock()
	if more {
		go c.commitNext()
	}
}

// commitGroup runs calls in one transaction; a failing one leaves it (to
// run alone, or dropped if a rider) and the rest run again, as in bbolt's
// Batch.
func (c *committer) commitGroup(calls []groupCall) {
	for len(calls) > 0 {
		failed := -1
		var failure error
		err := c.db.Update(func(tx *bolt.Tx) error {
			for i, call := range calls {
				if err := safelyCall(call.fn, tx); err != nil {
					failed, failure = i, err
					return err
				}
			}
			return nil
		})
		if failed >= 0 {
			if calls[failed].err == nil {
				c.dropRider(calls[failed], failure)
			} else {
				calls[failed].err <- errTrySolo
			}
			calls = append(calls[:failed:failed], calls[failed+1:]...)
			continue
		}
		for _, call := range calls {
			switch {
			case call.err != nil:
				call.err <- err
			case err != nil:
				c.dropRider(call, err)
			case call.done != nil:
				call.done(nil)
			}
		}
		return
	}
}

func (c *committer) dropRider(call groupCall, err error) {
	if c.rideFailed != nil {
		c.rideFailed(err)
	}
	if call.done != nil {
		call.done(err)
	}
}

// safelyCall turns a panic in fn into an error, so one writer's panic does
// not take the others' commit (or the committer) down.
func safelyCall(fn func(*bolt.Tx) error, tx *bolt.Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("boltstore: write panicked: %v", p)
		}
	}()
	return fn(tx)
}
