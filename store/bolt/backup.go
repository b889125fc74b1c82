package bolt

import (
	"errors"
	"fmt"
	"io"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Backup writes a consistent snapshot of the main database file to w while
// the store stays in use (bbolt's Tx.WriteTo inside one read transaction):
// the bytes are a complete bbolt file as of one commit, which Open takes as
// its path to restore. It returns the number of bytes written.
//
// The flow file (<path>.flow) is deliberately not part of the backup: it
// holds only the short-lived sign-in flow records (auth requests and
// authorization codes, minutes-lived), which a restore does without; Open
// creates a fresh one next to the restored file, and a sign-in that was in
// flight starts again.
//
// The read transaction stays open until w has taken every byte. While it
// is open, writers go on committing, but one that must grow the file's
// memory map waits for it; a caller streaming to a slow reader should bound
// how long a write may stall.
func (s *Store) Backup(w io.Writer) (int64, error) {
	var n int64
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	if err != nil {
		return n, fmt.Errorf("boltstore: backup: %w", err)
	}
	return n, nil
}

// ErrNotABackup is wrapped by CheckBackup's answer for a file that is not a
// usher bbolt database.
var ErrNotABackup = errors.New("not a usher bbolt database")

// CheckBackup opens the bbolt file at path read-only (it never changes it,
// and takes only a shared lock) and checks that it is a usher database:
// every bucket the store keeps in its main file is there, and bbolt's
// consistency check finds no fault. It answers how many invitations the
// file holds.
func CheckBackup(path string) (invitations int, err error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		return 0, fmt.Errorf("boltstore: open %s read-only: %w: %w", path, ErrNotABackup, err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if tx.Bucket(name) == nil {
				return fmt.Errorf("%w: it has no %s bucket", ErrNotABackup, name)
			}
		}
		var first error
		for cerr := range tx.Check() { // drained: the check runs on until it closes the channel
			if first == nil {
				first = cerr
			}
		}
		if first != nil {
			return fmt.Errorf("%w: bbolt's consistency check: %w", ErrNotABackup, first)
		}
		invitations = tx.Bucket(bInvitations).Stats().KeyN
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("boltstore: check %s: %w", path, err)
	}
	return invitations, nil
}
