package bolt

import (
	"context"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/usher-oidc/usher/grants"
)

// RelinkIdentity: see grants.Store.
func (s *Store) RelinkIdentity(ctx context.Context, id grants.Identity, fromUserID string) error {
	if err := checkKeys("boltstore: relink identity", id.Issuer, id.Subject, id.UserID, fromUserID); err != nil {
		return err
	}
	err := s.batchRefusable(func(tx *bolt.Tx) (error, error) {
		if tx.Bucket(bUsers).Get([]byte(id.UserID)) == nil {
			return fmt.Errorf("user %s: %w", id.UserID, grants.ErrNotFound), nil
		}
		var old grants.Identity
		found, err := getJSON(tx.Bucket(bIdentities), identityKey(id.Issuer, id.Subject), &old)
		switch {
		case err != nil:
			return nil, err
		case !found:
			return fmt.Errorf("identity: %w", grants.ErrNotFound), nil
		case old.UserID != fromUserID:
			return fmt.Errorf("identity is linked to another user: %w", grants.ErrConflict), nil
		}
		if err := tx.Bucket(bIdentsByUser).Delete(compositeKey(old.UserID, old.Issuer, old.Subject)); err != nil {
			return nil, err
		}
		ident := id
		ident.CreatedAt = old.CreatedAt
		return nil, putIdentity(tx, &ident)
	})
	if err != nil {
		return fmt.Errorf("boltstore: relink identity: %w", err)
	}
	return nil
}
