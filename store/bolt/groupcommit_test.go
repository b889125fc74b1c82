package bolt

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Concurrent writers share commits, each sees its own outcome: a failing
// or panicking writer gets its error (or its panic) and leaves the others'
// writes in, and
// a writer that comes later commits too (nothing is left queued).
func TestCommitterSharesCommits(t *testing.T) {
	for _, tc := range []struct {
		name string
		bad  func(tx *bolt.Tx) error
	}{
		{"failing member", func(tx *bolt.Tx) error { return errors.New("refused") }},
		{"panicking member", func(tx *bolt.Tx) error { panic("boom") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := openWithBucket(t)
			tx0 := lastTxID(db)
			c := &committer{db: db}
			const n = 64
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					if i == n/2 {
						// Run alone again, a panic reaches its own writer (as
						// with bbolt's Update) and only it.
						defer func() {
							if p := recover(); p != nil {
								errs[i] = fmt.Errorf("panicked: %v", p)
							}
						}()
						errs[i] = c.run(tc.bad)
						return
					}
					errs[i] = c.run(func(tx *bolt.Tx) error {
						return tx.Bucket([]byte("b")).Put(fmt.Appendf(nil, "k%02d", i), []byte("v"))
					})
				})
			}
			wg.Wait()
			if err := c.run(func(tx *bolt.Tx) error { return tx.Bucket([]byte("b")).Put([]byte("last"), nil) }); err != nil {
				t.Fatalf("a lone writer after the group: %v", err)
			}
			for i, err := range errs {
				if (i == n/2) != (err != nil) {
					t.Errorf("writer %d: err %v", i, err)
				}
			}
			var keys int
			_ = db.View(func(tx *bolt.Tx) error { keys = tx.Bucket([]byte("b")).Stats().KeyN; return nil })
			if keys != n {
				t.Errorf("%d keys written, want %d (63 writers and the lone one)", keys, n)
			}
			// Writers that arrive during a commit join the next: far fewer
			// commits than writers (the failing member adds its solo run).
			if commits := lastTxID(db) - tx0; commits >= n/2 {
				t.Errorf("%d commits for %d writers", commits, n+1)
			}
		})
	}
}

// openWithBucket opens a bbolt file with bucket "b".
func openWithBucket(t *testing.T) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "g.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("b")); return err }); err != nil {
		t.Fatal(err)
	}
	return db
}

// A rider goes with the next writer's commit (one commit for both, the
// writer's outcome its own); alone, it gets a commit of its own soon after;
// a failing rider is dropped, reported, and leaves the writer and the other
// riders committed; flush commits what is still queued.
func TestCommitterRiders(t *testing.T) {
	db := openWithBucket(t)
	dropped := make(chan error, 10)
	// No rider commits alone until the lone-rider part below.
	c := &committer{db: db, rideFailed: func(err error) { dropped <- err }, rideDelay: time.Hour}
	put := func(k string) func(*bolt.Tx) error {
		return func(tx *bolt.Tx) error { return tx.Bucket([]byte("b")).Put([]byte(k), []byte("v")) }
	}
	has := func(k string) bool {
		var v []byte
		_ = db.View(func(tx *bolt.Tx) error { v = tx.Bucket([]byte("b")).Get([]byte(k)); return nil })
		return v != nil
	}

	tx0 := lastTxID(db)
	ended := map[string]error{}
	var endedMu sync.Mutex
	end := func(k string) func(error) {
		return func(err error) { endedMu.Lock(); ended[k] = err; endedMu.Unlock() }
	}
	c.ride(put("rider-1"), end("rider-1"))
	c.ride(func(*bolt.Tx) error { return errors.New("no room") }, end("failing"))
	c.ride(put("rider-2"), end("rider-2"))
	if has("rider-1") {
		t.Fatal("a rider was written before any commit")
	}
	if err := c.run(put("writer")); err != nil {
		t.Fatalf("writer: %v", err)
	}
	for _, k := range []string{"writer", "rider-1", "rider-2"} {
		if !has(k) {
			t.Errorf("%s not written with the writer's commit", k)
		}
	}
	// Each rider heard how its commit ended by the time the writer's returned.
	endedMu.Lock()
	if len(ended) != 3 || ended["rider-1"] != nil || ended["rider-2"] != nil || ended["failing"] == nil {
		t.Errorf("riders' ends: %v; want rider-1 and rider-2 durable (nil), failing dropped", ended)
	}
	endedMu.Unlock()
	// The failing rider cost one rolled-back transaction, not a commit.
	if commits := lastTxID(db) - tx0; commits != 1 || len(dropped) != 1 {
		t.Errorf("%d commits for a writer and its riders, want 1; %d dropped riders reported, want 1", commits, len(dropped))
	}

	// Alone: its commit starts without a writer (the rider runs), and a
	// writer after it finds it written.
	c.mu.Lock()
	c.rideDelay = time.Millisecond
	c.mu.Unlock()
	ran := make(chan struct{})
	var once sync.Once
	c.ride(func(tx *bolt.Tx) error { once.Do(func() { close(ran) }); return put("alone")(tx) }, nil)
	select {
	case <-ran:
	case <-time.After(20 * time.Second):
		t.Fatal("a rider without a writer was never committed")
	}
	if err := c.run(put("after")); err != nil || !has("alone") {
		t.Errorf("the lone rider: written %v, the writer after it: %v", has("alone"), err)
	}

	c.ride(put("at-close"), nil) // flush: no timer needed
	if err := c.flush(); err != nil || !has("at-close") {
		t.Errorf("flush: %v, the rider written %v", err, has("at-close"))
	}
}
