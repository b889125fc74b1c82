package redis

import (
	"context"
	"errors"
	"fmt"
)

// errLookupHeld: the lookup entry claimLookup was to claim belongs to a
// record that still holds it.
var errLookupHeld = errors.New("lookup entry held by another record")

// claimLookup points the lookup key (a token hash → its record) at the
// record claimIndex's args name, and reports whether this call created the
// entry. An entry left by another record that no longer holds the hash
// (held says whether it does: a stale entry, readers re-check) is dropped,
// unless it changed meanwhile, and the claim tried again; first is the
// reply of a claimIndex run already made (nil: none).
func (s *Store) claimLookup(ctx context.Context, key string, args, first []any, held func(other string) (bool, error)) (bool, error) {
	for i := range 3 {
		res := first
		if i > 0 || res == nil {
			var err error
			if res, err = s.runScript(ctx, claimIndex, []string{key}, args...); err != nil {
				return false, err
			}
		}
		switch str(res, 0) {
		case "created":
			return true, nil
		case "same":
			return false, nil
		}
		other := str(res, 1)
		still, err := held(other)
		if err != nil {
			return false, err
		}
		if still {
			return false, errLookupHeld
		}
		if _, err := s.runScript(ctx, delIfEq, []string{key}, other); err != nil {
			return false, err
		}
	}
	return false, fmt.Errorf("contended: %w", errLookupHeld)
}
