package bolt

import (
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// SetRideDelay sets how long s's riders wait for a writer (committer.ride),
// for tests that must not see them commit alone.
func SetRideDelay(s *Store, d time.Duration) {
	s.group.mu.Lock()
	s.group.rideDelay = d
	s.group.mu.Unlock()
}

// HoldRide queues a write that rides with the next commit and holds that
// commit open (the riders queued before it already written in its
// transaction) until release is called; started is closed once it does.
func HoldRide(s *Store) (started <-chan struct{}, release func()) {
	st, rel := make(chan struct{}), make(chan struct{})
	var once sync.Once
	s.group.ride(func(*bolt.Tx) error {
		once.Do(func() { close(st) })
		<-rel
		return nil
	}, nil)
	return st, func() { close(rel) }
}
