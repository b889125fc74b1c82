package bolt

import (
	"encoding/json"
	"fmt"
	"sync"

	bolt "go.etcd.io/bbolt"

	"github.com/usher-oidc/usher/sessions"
)

// A browser session a sign-in creates costs no commit of its own: its
// write rides with the main file's next commit (committer.ride) — in a
// sign-in, the code exchange's moments later, which stores the refresh
// token and is durable — instead of a commit the callback waits on. Until
// then the session is kept in memory (ridingSessions), where every read
// finds it: a bbolt file is one process's, so every request sees it. A
// crash before that commit loses the session (the browser signs in again),
// as the flow file's sign-ins in flight are lost.
//
// Only a new session rides. Replacing a session the main file holds (an
// account switch), updating one there, and deleting one (sign-out) are
// durable as before; and a write to the ID of a session still riding
// first takes it off the ride and deletes the ID from the main file
// durably, in a commit after the ride's (which may be under way), so the
// ride cannot bring back what a later write changed or deleted; an update
// then rides in its turn, a delete is done.

// ridingSessions are the sessions waiting for their ride, by ID.
type ridingSessions struct {
	mu sync.Mutex
	m  map[string]*ridingSession
}

// ridingSession is one session's encoded record on its ride.
type ridingSession struct{ raw []byte }

// rideNewSession stores bs, a session new to the main file, with the next
// commit; reads find it at once.
func (s *Store) rideNewSession(bs *sessions.BrowserSession) error {
	raw, err := json.Marshal(bs)
	if err != nil {
		return fmt.Errorf("encode %q: %w", bs.ID, err)
	}
	entry, id := &ridingSession{raw: raw}, bs.ID
	s.riding.mu.Lock()
	if s.riding.m == nil {
		s.riding.m = map[string]*ridingSession{}
	}
	s.riding.m[id] = entry
	s.riding.mu.Unlock()
	s.writes.Add(1)
	s.group.ride(func(tx *bolt.Tx) error {
		if s.ridingEntry(id) != entry {
			return nil // taken off the ride: a later write decides
		}
		return tx.Bucket(bBrowser).Put([]byte(id), raw)
	}, func(error) {
		s.riding.mu.Lock()
		if s.riding.m[id] == entry {
			delete(s.riding.m, id) // in the main file now, or dropped (logged)
		}
		s.riding.mu.Unlock()
	})
	return nil
}

func (s *Store) ridingEntry(id string) *ridingSession {
	s.riding.mu.Lock()
	defer s.riding.mu.Unlock()
	return s.riding.m[id]
}

// ridingBrowserSession is the session id while it rides (nil, false if it
// does not).
func (s *Store) ridingBrowserSession(id string) (*sessions.BrowserSession, bool, error) {
	entry := s.ridingEntry(id)
	if entry == nil {
		return nil, false, nil
	}
	var bs sessions.BrowserSession
	if err := json.Unmarshal(entry.raw, &bs); err != nil {
		return nil, false, fmt.Errorf("decode %q: %w", id, err)
	}
	return &bs, true, nil
}

// unride takes the ids off their ride and, when one was riding, deletes
// them from the main file durably: its ride's commit may be under way, and
// this commit comes after it.
func (s *Store) unride(ids ...string) error {
	var were [][]byte
	s.riding.mu.Lock()
	for _, id := range ids {
		if _, ok := s.riding.m[id]; id != "" && ok {
			delete(s.riding.m, id)
			were = append(were, []byte(id))
		}
	}
	s.riding.mu.Unlock()
	if len(were) == 0 {
		return nil
	}
	return s.mainWrite(func(tx *bolt.Tx) error {
		for _, id := range were {
			if err := tx.Bucket(bBrowser).Delete(id); err != nil {
				return err
			}
		}
		return nil
	})
}

// newToMain: neither id nor oldID ("" for none) is in the main file.
func (s *Store) newToMain(id, oldID string) (bool, error) {
	fresh := true
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bBrowser)
		fresh = b.Get([]byte(id)) == nil && (oldID == "" || b.Get([]byte(oldID)) == nil)
		return nil
	})
	return fresh, err
}
