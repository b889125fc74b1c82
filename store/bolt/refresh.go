package bolt

import (
	"bytes"
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/usher-oidc/usher/sessions"
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
