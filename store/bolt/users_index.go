package bolt

import (
	"bytes"
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/usher-oidc/usher/grants"
)

// The admin's user list reads users_by_email (lower(email) sep userID, one
// entry per user, "" for none; putUser maintains it): a prefix search is a
// cursor Seek, a page the next Limit keys. Users stored before entries for
// users without an email existed get theirs at their next sign-in.

// ListUsers: see grants.UserStore.
func (s *Store) ListUsers(ctx context.Context, f grants.UserFilter) ([]grants.User, string, error) {
	prefix := []byte(lower(f.Query))
	start := prefix
	if f.Cursor != "" {
		after, err := grants.DecodeUserCursor(f.Cursor)
		if err != nil {
			return nil, "", fmt.Errorf("boltstore: list users: %w", err)
		}
		start = []byte(after)
	}
	limit := f.PageSize()
	users := []grants.User{}
	next := ""
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bUsersByEmail).Cursor()
		for k, _ := c.Seek(start); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			if f.Cursor != "" && bytes.Equal(k, start) {
				continue
			}
			if len(users) == limit {
				next = grants.EncodeUserCursor(string(userIndexKeyOf(users[limit-1])))
				return nil
			}
			id := k[bytes.LastIndexByte(k, sep)+1:]
			var u grants.User
			found, err := getJSON(tx.Bucket(bUsers), id, &u)
			if err != nil {
				return err
			}
			if found {
				users = append(users, u)
			}
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("boltstore: list users: %w", err)
	}
	return users, next, nil
}

func userIndexKeyOf(u grants.User) []byte { return compositeKey(lower(u.Email), u.ID) }

// SignOutUser: see grants.UserStore.
func (s *Store) SignOutUser(ctx context.Context, userID string, at time.Time, events ...grants.OutboxEvent) (*grants.Grant, error) {
	return s.changeGrant("sign out user", userID, func(g *grants.Grant) bool {
		t := at
		g.SignedOutAt = &t
		return true
	}, at, events)
}

// EraseUser: see grants.UserStore; one transaction.
func (s *Store) EraseUser(ctx context.Context, userID string, at time.Time, events ...grants.OutboxEvent) error {
	if err := checkKeys("boltstore: erase user", userID); err != nil {
		return err
	}
	err := s.batchRefusable(func(tx *bolt.Tx) (error, error) {
		var u grants.User
		found, err := getJSON(tx.Bucket(bUsers), []byte(userID), &u)
		if err != nil || !found {
			return grants.ErrNotFound, err
		}
		if err := tx.Bucket(bUsersByEmail).Delete(userIndexKeyOf(u)); err != nil {
			return nil, err
		}
		if err := tx.Bucket(bUsers).Delete([]byte(userID)); err != nil {
			return nil, err
		}
		byUser := tx.Bucket(bIdentsByUser)
		for _, k := range prefixKeys(byUser, append([]byte(userID), sep)) {
			if err := tx.Bucket(bIdentities).Delete(byUser.Get(k)); err != nil {
				return nil, err
			}
			if err := byUser.Delete(k); err != nil {
				return nil, err
			}
		}
		g, err := loadGrant(tx, userID)
		if err != nil {
			return nil, err
		}
		// What stays: the sign-out instant (it ends tokens still in
		// flight) and the events until every consumer has them.
		t := at
		g.Roles, g.Claims, g.Invitations = []string{}, map[string]any{}, []string{}
		g.SignedOutAt, g.UpdatedAt = &t, at
		g.Outbox = append(g.Outbox, events...)
		return nil, putGrant(tx, g)
	})
	if err != nil {
		return fmt.Errorf("boltstore: erase user %s: %w", userID, err)
	}
	return nil
}
