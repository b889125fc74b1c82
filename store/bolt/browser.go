package bolt

import (
	"bytes"
	"context"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/usher-oidc/usher/sessions"
	"github.com/usher-oidc/usher/store"
)

// Browser sessions live in the main file, durably (a new one written with
// the next commit, browser_ride.go), except transient ones
// (sessions.BrowserSession.Transient: only sign-ins in flight, no account),
// which live in the flow file beside the auth requests they point at, with
// its unsynced commits: a visitor's sign-in costs no fdatasync until it
// signs in. A session is in one file at a time; a save into one file
// removes it from the other.

func (s *Store) GetBrowserSession(ctx context.Context, id string) (*sessions.BrowserSession, error) {
	if err := checkKeys("boltstore: get browser session", id); err != nil {
		return nil, err
	}
	if bs, riding, err := s.ridingBrowserSession(id); err != nil || riding {
		if err == nil && expired(bs.ExpiresAt, s.now()) {
			err = sessions.ErrNotFound
		}
		if err != nil {
			return nil, fmt.Errorf("boltstore: get browser session: %w", err)
		}
		return bs, nil
	}
	var bs sessions.BrowserSession
	found := false
	read := func(tx *bolt.Tx) error {
		var err error
		found, err = getJSON(tx.Bucket(bBrowser), []byte(id), &bs)
		return err
	}
	err := s.db.View(read)
	if err == nil && !found {
		err = s.flow.View(func(tx *bolt.Tx) error {
			var err error
			found, err = getJSON(tx.Bucket(bBrowserFlow), []byte(id), &bs)
			bs.Transient = found
			return err
		})
	}
	if err != nil {
		return nil, fmt.Errorf("boltstore: get browser session: %w", err)
	}
	if !found || expired(bs.ExpiresAt, s.now()) {
		return nil, fmt.Errorf("boltstore: get browser session: %w", sessions.ErrNotFound)
	}
	return &bs, nil
}

// SaveBrowserSession creates or replaces the session.
func (s *Store) SaveBrowserSession(ctx context.Context, bs *sessions.BrowserSession) error {
	if err := checkBrowserSession("boltstore: save browser session", bs); err != nil {
		return err
	}
	if err := s.putBrowserSession(bs, ""); err != nil {
		return fmt.Errorf("boltstore: save browser session: %w", err)
	}
	return nil
}

// ReplaceBrowserSession: the new record in and the old one out, in one
// transaction of each file involved (one durable commit at most).
func (s *Store) ReplaceBrowserSession(ctx context.Context, bs *sessions.BrowserSession, oldID string) error {
	if err := checkBrowserSession("boltstore: replace browser session", bs); err != nil {
		return err
	}
	if err := checkKeys("boltstore: replace browser session", oldID); err != nil {
		return err
	}
	if err := s.putBrowserSession(bs, oldID); err != nil {
		return fmt.Errorf("boltstore: replace browser session: %w", err)
	}
	return nil
}

// putBrowserSession stores bs in its file and deletes bs.ID from the other
// one and oldID (if any) from both. A file is written only when it holds
// something to change: a transient session's save does not touch the
// main file (and so costs no fdatasync) unless that file holds the ID.
func (s *Store) putBrowserSession(bs *sessions.BrowserSession, oldID string) error {
	if err := s.unride(bs.ID, oldID); err != nil {
		return err
	}
	if !bs.Transient {
		fresh, err := s.newToMain(bs.ID, oldID)
		if err != nil {
			return err
		}
		if fresh { // a new signed-in session: its write rides (browser_ride.go)
			if err := s.dropBrowserSessions(bBrowserFlow, bs.ID, oldID); err != nil {
				return err
			}
			return s.rideNewSession(bs)
		}
	}
	into, intoBucket, otherBucket := s.mainWrite, bBrowser, bBrowserFlow
	if bs.Transient {
		into, intoBucket, otherBucket = s.flowWrite, bBrowserFlow, bBrowser
	}
	if err := s.dropBrowserSessions(otherBucket, bs.ID, oldID); err != nil {
		return err
	}
	return into(func(tx *bolt.Tx) error {
		if oldID != "" {
			if err := tx.Bucket(intoBucket).Delete([]byte(oldID)); err != nil {
				return err
			}
		}
		return putJSON(tx.Bucket(intoBucket), []byte(bs.ID), bs)
	})
}

// dropBrowserSessions deletes the IDs from bucket (bBrowser in the main
// file, bBrowserFlow in the flow file), writing only when one is there.
func (s *Store) dropBrowserSessions(bucket []byte, ids ...string) error {
	db, write := s.db, s.mainWrite
	if bytes.Equal(bucket, bBrowserFlow) {
		db, write = s.flow, s.flowWrite
	}
	var there [][]byte
	err := db.View(func(tx *bolt.Tx) error {
		for _, id := range ids {
			if id != "" && tx.Bucket(bucket).Get([]byte(id)) != nil {
				there = append(there, []byte(id))
			}
		}
		return nil
	})
	if err != nil || len(there) == 0 {
		return err
	}
	return write(func(tx *bolt.Tx) error {
		for _, id := range there {
			if err := tx.Bucket(bucket).Delete(id); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *Store) mainWrite(fn func(*bolt.Tx) error) error { return s.batch(fn) }

func (s *Store) flowWrite(fn func(*bolt.Tx) error) error {
	return s.flowUpdate(func(tx *bolt.Tx) (error, error) { return nil, fn(tx) })
}

func checkBrowserSession(op string, bs *sessions.BrowserSession) error {
	return store.CheckBrowserSession(op, bs, checkKeys)
}

// DeleteBrowserSession is idempotent.
func (s *Store) DeleteBrowserSession(ctx context.Context, id string) error {
	if err := checkKeys("boltstore: delete browser session", id); err != nil {
		return err
	}
	err := s.unride(id)
	if err == nil {
		err = s.dropBrowserSessions(bBrowserFlow, id)
	}
	if err == nil {
		err = s.dropBrowserSessions(bBrowser, id)
	}
	if err != nil {
		return fmt.Errorf("boltstore: delete browser session: %w", err)
	}
	return nil
}
