// Package errs holds the sentinel errors every store backend shares, so that
// callers branch with errors.Is and never on an error's text.
//
// grants and sessions re-export these values (grants.ErrNotFound is
// errs.ErrNotFound, and so is sessions.ErrNotFound); the bbolt and Redis
// backends wrap them. The package is a leaf: it imports only the standard
// library, so grants and sessions can import it without importing each other
// or a backend.
package errs

import "errors"

var (
	// ErrNotFound: the record does not exist (or has expired).
	ErrNotFound = errors.New("not found")
	// ErrConflict: a create found a record already there, or a key the
	// record needs is held by another one.
	ErrConflict = errors.New("already exists")
	// ErrInvalid: the input to a store call is invalid (an empty ID, a
	// missing expiry, a bad cursor): a bug in the request, not a storage
	// failure.
	ErrInvalid = errors.New("invalid input")
	// ErrBadCursor: a list cursor that cannot be decoded or does not belong
	// to this listing. Backends wrap it together with ErrInvalid.
	ErrBadCursor = errors.New("bad list cursor")
	// ErrLeaseLost: a worker's lease on a job lapsed and another worker
	// claimed the job since; the stale worker must leave it alone.
	ErrLeaseLost = errors.New("job lease lost to another worker")
)
