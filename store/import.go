package store

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/sessions"
)

// ImportViaStore imports the kinds every backend stores exactly through its
// ordinary Store methods (idempotency keys, jobs), so the backends share
// one implementation. handled is false for any other kind.
func ImportViaStore(ctx context.Context, st grants.Store, kind Kind, rec json.RawMessage) (handled, created bool, err error) {
	switch kind {
	case Idempotency:
		var r grants.IdempotencyRecord
		if err := json.Unmarshal(rec, &r); err != nil {
			return true, false, err
		}
		existing, err := st.ReserveIdempotencyKey(ctx, &r)
		if existing != nil {
			return true, false, nil
		}
		if err != nil {
			return true, false, err
		}
		if r.Status != 0 {
			return true, true, st.CompleteIdempotencyKey(ctx, r.Key, r.Status, r.Response)
		}
		return true, true, nil
	case Jobs:
		var j grants.Job
		if err := json.Unmarshal(rec, &j); err != nil {
			return true, false, err
		}
		created, err := Absent(st.EnqueueJob(ctx, &j))
		return true, created, err
	}
	return false, false, nil
}

// Absent turns a create's "already there" into (false, nil): the import is
// create-if-absent, so a rerun copies nothing twice.
func Absent(err error) (created bool, _ error) {
	if errors.Is(err, sessions.ErrConflict) || errors.Is(err, grants.ErrConflict) {
		return false, nil
	}
	return err == nil, err
}
