package bolt

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/usher-oidc/usher/sessions"
	"github.com/usher-oidc/usher/store"
)

func (s *Store) CreateAuthRequest(ctx context.Context, ar *sessions.AuthRequest) error {
	if ar == nil {
		return fmt.Errorf("boltstore: create auth request: nil: %w", ErrInvalid)
	}
	if err := checkKeys("boltstore: create auth request", ar.ID); err != nil {
		return err
	}
	if ar.ExpiresAt.IsZero() {
		return fmt.Errorf("boltstore: create auth request %s: no expiry: %w", ar.ID, ErrInvalid)
	}
	err := s.flowUpdate(func(tx *bolt.Tx) (error, error) {
		b := tx.Bucket(bAuthReqs)
		var old sessions.AuthRequest
		found, err := getJSON(b, []byte(ar.ID), &old)
		if err != nil {
			return nil, err
		}
		if found && !expired(old.ExpiresAt, s.now()) {
			return sessions.ErrConflict, nil
		}
		return nil, putJSON(b, []byte(ar.ID), ar)
	})
	if err != nil {
		return fmt.Errorf("boltstore: create auth request %s: %w", ar.ID, err)
	}
	return nil
}

func (s *Store) GetAuthRequest(ctx context.Context, id string) (*sessions.AuthRequest, error) {
	if err := checkKeys("boltstore: get auth request", id); err != nil {
		return nil, err
	}
	var ar sessions.AuthRequest
	found := false
	err := s.flow.View(func(tx *bolt.Tx) error {
		var err error
		found, err = getJSON(tx.Bucket(bAuthReqs), []byte(id), &ar)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: get auth request %s: %w", id, err)
	}
	if !found || expired(ar.ExpiresAt, s.now()) {
		return nil, fmt.Errorf("boltstore: get auth request %s: %w", id, sessions.ErrNotFound)
	}
	return &ar, nil
}

// replaceAuthRequest replaces a stored, unexpired auth request in tx
// (ErrNotFound as the refusal otherwise).
func (s *Store) replaceAuthRequest(tx *bolt.Tx, ar *sessions.AuthRequest) (refusal, err error) {
	b := tx.Bucket(bAuthReqs)
	var old sessions.AuthRequest
	found, err := getJSON(b, []byte(ar.ID), &old)
	if err != nil {
		return nil, err
	}
	if !found || expired(old.ExpiresAt, s.now()) {
		return sessions.ErrNotFound, nil
	}
	return nil, putJSON(b, []byte(ar.ID), ar)
}

func (s *Store) UpdateAuthRequest(ctx context.Context, ar *sessions.AuthRequest) error {
	if ar == nil {
		return fmt.Errorf("boltstore: update auth request: nil: %w", ErrInvalid)
	}
	if err := checkKeys("boltstore: update auth request", ar.ID); err != nil {
		return err
	}
	if ar.ExpiresAt.IsZero() {
		return fmt.Errorf("boltstore: update auth request %s: no expiry: %w", ar.ID, ErrInvalid)
	}
	err := s.flowUpdate(func(tx *bolt.Tx) (error, error) { return s.replaceAuthRequest(tx, ar) })
	if err != nil {
		return fmt.Errorf("boltstore: update auth request %s: %w", ar.ID, err)
	}
	return nil
}

// DeleteAuthRequest is idempotent: deleting a missing request is not an error.
func (s *Store) DeleteAuthRequest(ctx context.Context, id string) error {
	if err := checkKeys("boltstore: delete auth request", id); err != nil {
		return err
	}
	if err := s.flowUpdate(func(tx *bolt.Tx) (error, error) {
		return nil, tx.Bucket(bAuthReqs).Delete([]byte(id))
	}); err != nil {
		return fmt.Errorf("boltstore: delete auth request %s: %w", id, err)
	}
	return nil
}

// SaveCode refuses to overwrite a live code (ErrConflict): overwriting would
// clear Used and let a spent code be exchanged again.
func (s *Store) SaveCode(ctx context.Context, c *sessions.Code) error {
	if err := store.CheckCode("boltstore: save code", c, checkKeys); err != nil {
		return err
	}
	err := s.flowUpdate(func(tx *bolt.Tx) (error, error) {
		b := tx.Bucket(bCodes)
		var old sessions.Code
		found, err := getJSON(b, []byte(c.Hash), &old)
		if err != nil {
			return nil, err
		}
		if found && !expired(old.ExpiresAt, s.now()) {
			return sessions.ErrConflict, nil
		}
		if ar := c.StoredAuthRequest(); ar != nil && !c.AuthRequestNeverStored {
			if refusal, err := s.replaceAuthRequest(tx, ar); refusal != nil || err != nil {
				return refusal, err
			}
		}
		return nil, putJSON(b, []byte(c.Hash), c)
	})
	if err != nil {
		return fmt.Errorf("boltstore: save code: %w", err)
	}
	return nil
}

func (s *Store) ConsumeCode(ctx context.Context, hash string) (*sessions.Code, error) {
	if err := checkKeys("boltstore: consume code", hash); err != nil {
		return nil, err
	}
	var code sessions.Code
	err := s.flowUpdate(func(tx *bolt.Tx) (error, error) {
		code = sessions.Code{}
		b := tx.Bucket(bCodes)
		found, err := getJSON(b, []byte(hash), &code)
		if err != nil {
			return nil, err
		}
		switch {
		case !found || expired(code.ExpiresAt, s.now()):
			return sessions.ErrNotFound, nil
		case code.Used:
			return sessions.ErrCodeReplayed, nil
		}
		code.Used = true
		return nil, putJSON(b, []byte(hash), &code)
	})
	// A failure is never the bare sentinel: only a replay returns the code.
	switch err {
	case nil:
		return &code, nil
	case sessions.ErrCodeReplayed:
		return &code, fmt.Errorf("boltstore: consume code: %w", err)
	default:
		return nil, fmt.Errorf("boltstore: consume code: %w", err)
	}
}

func (s *Store) SigningKeys(ctx context.Context) ([]sessions.SigningKey, error) {
	var keys []sessions.SigningKey
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bSigningKeys).ForEach(func(k, v []byte) error {
			var key sessions.SigningKey
			if err := json.Unmarshal(v, &key); err != nil {
				return fmt.Errorf("decode %q: %w", k, err)
			}
			keys = append(keys, key)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: signing keys: %w", err)
	}
	slices.SortStableFunc(keys, func(a, b sessions.SigningKey) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return keys, nil
}

func (s *Store) AddSigningKey(ctx context.Context, k *sessions.SigningKey, onlyIfNone bool) error {
	if k == nil {
		return fmt.Errorf("boltstore: add signing key: nil: %w", ErrInvalid)
	}
	if err := checkKeys("boltstore: add signing key", k.ID); err != nil {
		return err
	}
	err := s.batchRefusable(func(tx *bolt.Tx) (error, error) {
		b := tx.Bucket(bSigningKeys)
		if onlyIfNone {
			if has, err := hasKeyOfAlg(b, k.Algorithm); err != nil || has {
				return sessions.ErrConflict, err
			}
		}
		if b.Get([]byte(k.ID)) != nil {
			return sessions.ErrConflict, nil
		}
		return nil, putJSON(b, []byte(k.ID), k)
	})
	if err != nil {
		return fmt.Errorf("boltstore: add signing key %s: %w", k.ID, err)
	}
	return nil
}

// hasKeyOfAlg: onlyIfNone is per algorithm, so the first RS256 key can join
// an existing ES256 one (a few keys: a scan is fine).
func hasKeyOfAlg(b *bolt.Bucket, alg string) (bool, error) {
	found := false
	err := b.ForEach(func(k, v []byte) error {
		var key sessions.SigningKey
		if err := json.Unmarshal(v, &key); err != nil {
			return fmt.Errorf("decode %q: %w", k, err)
		}
		found = found || key.Algorithm == alg
		return nil
	})
	return found, err
}

// DeleteSigningKey is idempotent.
func (s *Store) DeleteSigningKey(ctx context.Context, id string) error {
	if err := checkKeys("boltstore: delete signing key", id); err != nil {
		return err
	}
	if err := s.batch(func(tx *bolt.Tx) error {
		return tx.Bucket(bSigningKeys).Delete([]byte(id))
	}); err != nil {
		return fmt.Errorf("boltstore: delete signing key %s: %w", id, err)
	}
	return nil
}
