package bolt

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

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
