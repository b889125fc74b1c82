package bolt

import (
	"errors"
	"fmt"
	"sync"

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
}

type groupCall struct {
	fn  func(*bolt.Tx) error
	err chan error
}

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

// commitNext commits the queued writers, then hands the next commit to a
// new goroutine if more queued meanwhile, so that no writer serves others
// for long after its own write is durable.
func (c *committer) commitNext() {
	c.mu.Lock()
	calls := c.pending
	if len(calls) > maxGroup {
		calls, c.pending = calls[:maxGroup:maxGroup], calls[maxGroup:]
	} else {
		c.pending = nil
	}
	c.mu.Unlock()
	commitGroup(c.db, calls)
	c.mu.Lock()
	more := len(c.pending) > 0
	c.busy = more
	c.mu.Unlock()
	if more {
		go c.commitNext()
	}
}

// commitGroup runs calls in one transaction; a failing one leaves it (to
// run alone) and the rest run again, as in bbolt's Batch.
func commitGroup(db *bolt.DB, calls []groupCall) {
	for len(calls) > 0 {
		failed := -1
		err := db.Update(func(tx *bolt.Tx) error {
			for i, c := range calls {
				if err := safelyCall(c.fn, tx); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		if failed >= 0 {
			calls[failed].err <- errTrySolo
			calls = append(calls[:failed:failed], calls[failed+1:]...)
			continue
		}
		for _, c := range calls {
			c.err <- err
		}
		return
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
