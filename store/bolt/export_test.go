package bolt

import "time"

// SetRideDelay sets how long s's riders wait for a writer (committer.ride),
// for tests that must not see them commit alone.
func SetRideDelay(s *Store, d time.Duration) {
	s.group.mu.Lock()
	s.group.rideDelay = d
	s.group.mu.Unlock()
}
