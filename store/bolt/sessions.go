package bolt

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/usher-oidc/usher/sessions"
	"github.com/usher-oidc/usher/store"
)

// revocation is the value of a revoked family or access-token marker.
type revocation struct {
	Until time.Time `json:"until"`
}

// reuseRevocationMargin extends a family revocation caused by refresh-token
// reuse past the family's own expiry: access tokens minted by the last
// rotation outlive the refresh token by up to their lifetime, which the store
// does not know. Access tokens are expected to live well under a day.
const reuseRevocationMargin = 24 * time.Hour

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

// refreshExpired: a link is dead past its idle expiry or its family's absolute one.
func refreshExpired(expiresAt, familyExpiresAt, now time.Time) bool {
	return expired(expiresAt, now) || (!familyExpiresAt.IsZero() && expired(familyExpiresAt, now))
}

func latest(ts ...time.Time) time.Time {
	var l time.Time
	for _, t := range ts {
		if t.After(l) {
			l = t
		}
	}
	return l
}

func checkRefresh(what string, rt *sessions.RefreshToken) error {
	if rt == nil {
		return fmt.Errorf("%s: nil: %w", what, ErrInvalid)
	}
	if err := checkKeys(what, rt.Hash, rt.FamilyID); err != nil {
		return err
	}
	if err := checkNoNUL(what, rt.SessionID); err != nil {
		return err
	}
	if rt.ExpiresAt.IsZero() {
		return fmt.Errorf("%s: no expiry: %w", what, ErrInvalid)
	}
	return nil
}

// familyRevoked reports whether a live revocation marker exists for familyID.
func familyRevoked(tx *bolt.Tx, familyID string, now time.Time) (bool, error) {
	return markerLive(tx.Bucket(bRevFamily), familyID, now)
}

func markerLive(b *bolt.Bucket, key string, now time.Time) (bool, error) {
	var r revocation
	found, err := getJSON(b, []byte(key), &r)
	if err != nil || !found {
		return false, err
	}
	return !expired(r.Until, now), nil
}

// putMarker stores a revocation marker, never shortening an existing one.
func putMarker(b *bolt.Bucket, key string, until time.Time) error {
	var old revocation
	found, err := getJSON(b, []byte(key), &old)
	if err != nil {
		return err
	}
	if found && old.Until.After(until) {
		return nil
	}
	return putJSON(b, []byte(key), revocation{Until: until})
}

func (s *Store) CreateRefreshToken(ctx context.Context, rt *sessions.RefreshToken) error {
	if err := checkRefresh("boltstore: create refresh token", rt); err != nil {
		return err
	}
	err := s.batchRefusable(func(tx *bolt.Tx) (error, error) {
		b := tx.Bucket(bRefresh)
		var old sessions.RefreshToken
		found, err := getJSON(b, []byte(rt.Hash), &old)
		if err != nil {
			return nil, err
		}
		if found && !refreshExpired(old.ExpiresAt, old.FamilyExpiresAt, s.now()) {
			return sessions.ErrConflict, nil
		}
		if rt.SessionID != "" {
			// The session→family link is written with the token, atomically.
			link := revocation{Until: rt.FamilyExpiresAt}
			if err := putJSON(tx.Bucket(bSessionFams), compositeKey(rt.SessionID, rt.FamilyID), link); err != nil {
				return nil, err
			}
		}
		return nil, putJSON(b, []byte(rt.Hash), rt)
	})
	if err != nil {
		return fmt.Errorf("boltstore: create refresh token: %w", err)
	}
	return nil
}

// GetRefreshToken returns the record alongside ErrRevoked, for logging.
func (s *Store) GetRefreshToken(ctx context.Context, familyID, hash string) (*sessions.RefreshToken, error) {
	if err := checkKeys("boltstore: get refresh token", familyID, hash); err != nil {
		return nil, err
	}
	var (
		rt      sessions.RefreshToken
		found   bool
		revoked bool
	)
	now := s.now()
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		found, err = getJSON(tx.Bucket(bRefresh), []byte(hash), &rt)
		if err != nil || !found {
			return err
		}
		revoked, err = familyRevoked(tx, rt.FamilyID, now)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: get refresh token: %w", err)
	}
	if !found || rt.FamilyID != familyID || refreshExpired(rt.ExpiresAt, rt.FamilyExpiresAt, now) {
		return nil, fmt.Errorf("boltstore: get refresh token: %w", sessions.ErrNotFound)
	}
	if revoked {
		return &rt, fmt.Errorf("boltstore: get refresh token: family %s: %w", rt.FamilyID, sessions.ErrRevoked)
	}
	return &rt, nil
}

func (s *Store) RotateRefreshToken(ctx context.Context, oldHash string, next *sessions.RefreshToken) error {
	if err := checkKeys("boltstore: rotate refresh token", oldHash); err != nil {
		return err
	}
	if err := checkRefresh("boltstore: rotate refresh token: next", next); err != nil {
		return err
	}
	if next.Hash == oldHash {
		return fmt.Errorf("boltstore: rotate refresh token: next has the old hash: %w", ErrInvalid)
	}
	err := s.batchRefusable(func(tx *bolt.Tx) (error, error) {
		now := s.now()
		b := tx.Bucket(bRefresh)
		var old sessions.RefreshToken
		found, err := getJSON(b, []byte(oldHash), &old)
		if err != nil {
			return nil, err
		}
		if !found || old.FamilyID != next.FamilyID || refreshExpired(old.ExpiresAt, old.FamilyExpiresAt, now) {
			return sessions.ErrNotFound, nil
		}
		revoked, err := familyRevoked(tx, old.FamilyID, now)
		if err != nil {
			return nil, err
		}
		if revoked {
			return sessions.ErrRevoked, nil
		}
		if old.RotatedAt != nil {
			// Reuse: someone holds a token that was already exchanged. The
			// revocation must commit, so this is a refusal, not a failure.
			until := latest(old.ExpiresAt, old.FamilyExpiresAt, now).Add(reuseRevocationMargin)
			if err := putMarker(tx.Bucket(bRevFamily), old.FamilyID, until); err != nil {
				return nil, err
			}
			return sessions.ErrRefreshReused, nil
		}
		if b.Get([]byte(next.Hash)) != nil {
			return sessions.ErrConflict, nil
		}
		old.RotatedAt = &now
		if err := putJSON(b, []byte(oldHash), &old); err != nil {
			return nil, err
		}
		return nil, putJSON(b, []byte(next.Hash), next)
	})
	if err != nil {
		return fmt.Errorf("boltstore: rotate refresh token: %w", err)
	}
	return nil
}

func (s *Store) RevokeFamily(ctx context.Context, familyID string, until time.Time) error {
	if err := checkKeys("boltstore: revoke family", familyID); err != nil {
		return err
	}
	if err := s.batch(func(tx *bolt.Tx) error {
		return putMarker(tx.Bucket(bRevFamily), familyID, until)
	}); err != nil {
		return fmt.Errorf("boltstore: revoke family %s: %w", familyID, err)
	}
	return nil
}

func (s *Store) RevokeSessionFamilies(ctx context.Context, sessionID string, until time.Time) error {
	if err := checkKeys("boltstore: revoke session families", sessionID); err != nil {
		return err
	}
	prefix := compositeKey(sessionID, "")
	err := s.batch(func(tx *bolt.Tx) error {
		links := tx.Bucket(bSessionFams)
		var done [][]byte
		c := links.Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			if err := putMarker(tx.Bucket(bRevFamily), string(k[len(prefix):]), until); err != nil {
				return err
			}
			done = append(done, bytes.Clone(k))
		}
		for _, k := range done {
			if err := links.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("boltstore: revoke session families: %w", err)
	}
	return nil
}

func (s *Store) RevokeAccessToken(ctx context.Context, jti string, until time.Time) error {
	if err := checkKeys("boltstore: revoke access token", jti); err != nil {
		return err
	}
	if err := s.batch(func(tx *bolt.Tx) error {
		return putMarker(tx.Bucket(bRevJTI), jti, until)
	}); err != nil {
		return fmt.Errorf("boltstore: revoke access token %s: %w", jti, err)
	}
	return nil
}

// TokenRevoked accepts an empty familyID or jti (not both) to check only the other.
func (s *Store) TokenRevoked(ctx context.Context, familyID, jti string) (bool, error) {
	if familyID == "" && jti == "" {
		return false, fmt.Errorf("boltstore: token revoked: no family and no jti: %w", ErrInvalid)
	}
	now := s.now()
	var revoked bool
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		if familyID != "" {
			if revoked, err = markerLive(tx.Bucket(bRevFamily), familyID, now); err != nil || revoked {
				return err
			}
		}
		if jti != "" {
			revoked, err = markerLive(tx.Bucket(bRevJTI), jti, now)
		}
		return err
	})
	if err != nil {
		return false, fmt.Errorf("boltstore: token revoked: %w", err)
	}
	return revoked, nil
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
