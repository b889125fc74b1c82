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
	return s.claimEntry(ctx, lookupEntry{key: key}, args, first, held)
}

// lookupEntry is where a lookup entry lives: a key of its own, or a field
// of a hash shared with other entries (inHash), whose value is the ID
// packed when short (idpack.go).
type lookupEntry struct {
	key, field    string
	inHash, short bool
}

// value is what e holds for id.
func (e lookupEntry) value(id string) string {
	if p, ok := packID(id); e.short && ok {
		return p
	}
	return id
}

// id is the ID a value of e names.
func (e lookupEntry) id(v string) string {
	if e.short {
		return unpackID(v)
	}
	return v
}

// claimCall is the script that claims e for args (claimIndex's; a field
// takes only the value, args[0]).
func (e lookupEntry) claimCall(args []any) scriptCall {
	if e.inHash {
		return scriptCall{claimField, []string{e.key}, []any{e.field, args[0]}}
	}
	return scriptCall{claimIndex, []string{e.key}, args}
}

// dropCall is the script that removes e if it still holds value.
func (e lookupEntry) dropCall(value string) scriptCall {
	if e.inHash {
		return scriptCall{delFieldIfEq, []string{e.key}, []any{e.field, value}}
	}
	return scriptCall{delIfEq, []string{e.key}, []any{value}}
}

// claimEntry is claimLookup for an entry of either form.
func (s *Store) claimEntry(ctx context.Context, e lookupEntry, args, first []any, held func(other string) (bool, error)) (bool, error) {
	claim := e.claimCall(args)
	for i := range 3 {
		res := first
		if i > 0 || res == nil {
			var err error
			if res, err = s.runScript(ctx, claim.sc, claim.keys, claim.args...); err != nil {
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
		drop := e.dropCall(other)
		if _, err := s.runScript(ctx, drop.sc, drop.keys, drop.args...); err != nil {
			return false, err
		}
	}
	return false, fmt.Errorf("contended: %w", errLookupHeld)
}

// releaseEntry removes e if it still holds value (as e holds it), best effort (a leftover
// entry is stale: readers re-check).
func (s *Store) releaseEntry(ctx context.Context, e lookupEntry, value string) {
	drop := e.dropCall(e.value(value))
	if _, err := s.runScript(context.WithoutCancel(ctx), drop.sc, drop.keys, drop.args...); err != nil {
		s.log.Warn("redisstore: releasing index entry", "key", e.key, "err", err)
	}
}
