package bolt

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/usher-oidc/usher/sessions"
)

// Login states live inside their auth request's value in bAuthReqs, beside
// its fields (storedAuthRequest): every write of the request (create over an
// expired one, update, SaveCode completing it), its delete and the sweep
// write or drop the value whole, so the states go with their request with
// no bookkeeping of their own. GetAuthRequest decodes the value into an
// AuthRequest, which ignores them.

// storedAuthRequest is an auth request's value with its login states, keyed
// by the hex of their keys: JSON map keys must be UTF-8, a key need not be.
type storedAuthRequest struct {
	*sessions.AuthRequest
	LoginStates map[string]*sessions.LoginState `json:"login_states,omitempty"`
}

// liveAuthRequest reads the live auth request id with its login states;
// false when it is absent or expired.
func (s *Store) liveAuthRequest(b *bolt.Bucket, id string) (*storedAuthRequest, bool, error) {
	var rec storedAuthRequest
	found, err := getJSON(b, []byte(id), &rec)
	if err != nil || !found || rec.AuthRequest == nil || expired(rec.ExpiresAt, s.now()) {
		return nil, false, err
	}
	return &rec, true, nil
}

func (s *Store) SaveLoginState(ctx context.Context, arID, key string, ls *sessions.LoginState) error {
	const op = "boltstore: save login state"
	if ls == nil {
		return fmt.Errorf("%s: nil: %w", op, ErrInvalid)
	}
	if err := checkKeys(op, arID, key); err != nil {
		return err
	}
	err := s.flowUpdate(func(tx *bolt.Tx) (error, error) {
		b := tx.Bucket(bAuthReqs)
		rec, live, err := s.liveAuthRequest(b, arID)
		if err != nil || !live {
			return sessions.ErrNotFound, err
		}
		if len(rec.LoginStates) >= sessions.MaxLoginStates {
			rec.LoginStates = nil // a person retrying again and again keeps the newest
		}
		if rec.LoginStates == nil {
			rec.LoginStates = map[string]*sessions.LoginState{}
		}
		rec.LoginStates[hex.EncodeToString([]byte(key))] = ls
		return nil, putJSON(b, []byte(arID), rec)
	})
	if err != nil {
		return fmt.Errorf("%s for auth request %s: %w", op, arID, err)
	}
	return nil
}

// TakeLoginState reads and removes the state in one flow-file transaction,
// which bbolt serializes: of concurrent takes one finds it.
func (s *Store) TakeLoginState(ctx context.Context, arID, key string) (*sessions.AuthRequest, *sessions.LoginState, error) {
	const op = "boltstore: take login state"
	if err := checkKeys(op, arID, key); err != nil {
		return nil, nil, err
	}
	var (
		ar *sessions.AuthRequest
		ls *sessions.LoginState
	)
	err := s.flowUpdate(func(tx *bolt.Tx) (error, error) {
		ar, ls = nil, nil
		b := tx.Bucket(bAuthReqs)
		rec, live, err := s.liveAuthRequest(b, arID)
		if err != nil || !live {
			return sessions.ErrNotFound, err
		}
		ar = rec.AuthRequest
		k := hex.EncodeToString([]byte(key))
		if ls = rec.LoginStates[k]; ls == nil {
			return sessions.ErrNotFound, nil
		}
		delete(rec.LoginStates, k)
		return nil, putJSON(b, []byte(arID), rec)
	})
	if err != nil {
		// The request goes with ErrNotFound when it is live (no such state),
		// never with a failure.
		if !errors.Is(err, sessions.ErrNotFound) {
			ar = nil
		}
		return ar, nil, fmt.Errorf("%s for auth request %s: %w", op, arID, err)
	}
	return ar, ls, nil
}
