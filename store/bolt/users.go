package bolt

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/usher-oidc/usher/grants"
)

func identityKey(iss, sub string) []byte { return compositeKey(iss, sub) }

// putUser stores u and moves its email index entry if the email changed.
func putUser(tx *bolt.Tx, old, u *grants.User) error {
	// Every user has an entry, "" for no email: the admin's user list
	// reads this index (users_index.go).
	idx := tx.Bucket(bUsersByEmail)
	if old != nil && lower(old.Email) != lower(u.Email) {
		if err := idx.Delete(compositeKey(lower(old.Email), old.ID)); err != nil {
			return err
		}
	}
	if err := idx.Put(compositeKey(lower(u.Email), u.ID), nil); err != nil {
		return err
	}
	return putJSON(tx.Bucket(bUsers), []byte(u.ID), u)
}

// putIdentity stores the identity and its by-user index entry.
func putIdentity(tx *bolt.Tx, id *grants.Identity) error {
	key := identityKey(id.Issuer, id.Subject)
	if err := tx.Bucket(bIdentsByUser).Put(compositeKey(id.UserID, id.Issuer, id.Subject), key); err != nil {
		return err
	}
	return putJSON(tx.Bucket(bIdentities), key, id)
}

// ResolveIdentity refreshes the profile from the non-empty fields of p (the
// email and its verified flag go together) and sets LastLoginAt.
func (s *Store) ResolveIdentity(ctx context.Context, id grants.Identity, p grants.Profile, newUserID string, now time.Time) (*grants.User, bool, error) {
	if err := checkKeys("boltstore: resolve identity", id.Issuer, id.Subject, newUserID); err != nil {
		return nil, false, err
	}
	if u, ok, err := s.touchReturning(id, p, now); err != nil || ok {
		if err != nil {
			return nil, false, fmt.Errorf("boltstore: resolve identity: %w", err)
		}
		return u, false, nil
	}
	var (
		user    grants.User
		created bool
	)
	err := s.batchRefusable(func(tx *bolt.Tx) (error, error) {
		user, created = grants.User{}, false
		var ident grants.Identity
		found, err := getJSON(tx.Bucket(bIdentities), identityKey(id.Issuer, id.Subject), &ident)
		if err != nil {
			return nil, err
		}
		if !found {
			var refusal, err error
			if user, refusal, err = createForIdentity(tx, id, p, newUserID, now); refusal == nil && err == nil {
				created = true
			}
			return refusal, err
		}
		found, err = getJSON(tx.Bucket(bUsers), []byte(ident.UserID), &user)
		if err != nil {
			return nil, err
		}
		if !found {
			return fmt.Errorf("identity linked to missing user %s: %w", ident.UserID, grants.ErrNotFound), nil
		}
		old := user
		if refreshProfile(&user, &ident, p) {
			if err := putIdentity(tx, &ident); err != nil {
				return nil, err
			}
		}
		user.UpdatedAt, user.LastLoginAt = now, now
		return nil, putUser(tx, &old, &user)
	})
	if err != nil {
		return nil, false, fmt.Errorf("boltstore: resolve identity: %w", err)
	}
	return &user, created, nil
}

// createForIdentity makes the user newUserID of profile p for the new
// identity id (a refusal if that ID is taken).
func createForIdentity(tx *bolt.Tx, id grants.Identity, p grants.Profile, newUserID string, now time.Time) (user grants.User, refusal, err error) {
	if tx.Bucket(bUsers).Get([]byte(newUserID)) != nil {
		return user, fmt.Errorf("user %s exists: %w", newUserID, grants.ErrConflict), nil
	}
	user = grants.User{
		ID: newUserID, Email: p.Email, EmailVerified: p.EmailVerified,
		Name: p.Name, Picture: p.Picture,
		CreatedAt: now, UpdatedAt: now, LastLoginAt: now,
	}
	ident := grants.LinkedIdentity(id, p, newUserID, now)
	if err := putUser(tx, nil, &user); err != nil {
		return user, nil, err
	}
	return user, nil, putIdentity(tx, &ident)
}

// refreshProfile sets the non-empty fields of p on the user (the email and
// its verified flag go together, on the identity too) and says whether the
// identity changed.
func refreshProfile(user *grants.User, ident *grants.Identity, p grants.Profile) (identChanged bool) {
	if p.Email != "" {
		user.Email, user.EmailVerified = p.Email, p.EmailVerified
		if ident.Email != p.Email || ident.EmailVerified != p.EmailVerified {
			ident.Email, ident.EmailVerified = p.Email, p.EmailVerified
			identChanged = true
		}
	}
	if p.Name != "" {
		user.Name = p.Name
	}
	if p.Picture != "" {
		user.Picture = p.Picture
	}
	return identChanged
}

// touchReturning serves the sign-in of a known identity whose profile is
// unchanged, the common case, without a durable commit of its own: the
// user's sign-in times are the only change, and they ride with the next
// commit (committer.ride), the sign-in's session save moments later. A
// crash before it loses only that timestamp. ok is false when the identity
// is new or the profile changed: ResolveIdentity then writes as it always
// did, durably.
func (s *Store) touchReturning(id grants.Identity, p grants.Profile, now time.Time) (*grants.User, bool, error) {
	var user grants.User
	same := false
	err := s.db.View(func(tx *bolt.Tx) error {
		var ident grants.Identity
		found, err := getJSON(tx.Bucket(bIdentities), identityKey(id.Issuer, id.Subject), &ident)
		if err != nil || !found {
			return err
		}
		if found, err = getJSON(tx.Bucket(bUsers), []byte(ident.UserID), &user); err != nil || !found {
			return err
		}
		old := user
		same = !refreshProfile(&user, &ident, p) && user == old
		return nil
	})
	if err != nil || !same {
		return nil, false, err
	}
	s.writes.Add(1)
	userID := user.ID
	s.group.ride(func(tx *bolt.Tx) error {
		var u grants.User
		found, err := getJSON(tx.Bucket(bUsers), []byte(userID), &u)
		if err != nil || !found { // erased since: nothing to touch
			return err
		}
		if !now.After(u.LastLoginAt) {
			return nil // a later sign-in got there first
		}
		old := u
		u.UpdatedAt, u.LastLoginAt = now, now
		return putUser(tx, &old, &u)
	}, nil)
	user.UpdatedAt, user.LastLoginAt = now, now
	return &user, true, nil
}

// LinkIdentity is idempotent for the same user; ErrConflict if the identity
// belongs to another user, ErrNotFound if the user does not exist.
func (s *Store) LinkIdentity(ctx context.Context, id grants.Identity) error {
	if err := checkKeys("boltstore: link identity", id.Issuer, id.Subject, id.UserID); err != nil {
		return err
	}
	err := s.batchRefusable(func(tx *bolt.Tx) (error, error) {
		if tx.Bucket(bUsers).Get([]byte(id.UserID)) == nil {
			return fmt.Errorf("user %s: %w", id.UserID, grants.ErrNotFound), nil
		}
		var old grants.Identity
		found, err := getJSON(tx.Bucket(bIdentities), identityKey(id.Issuer, id.Subject), &old)
		if err != nil {
			return nil, err
		}
		if found {
			if old.UserID != id.UserID {
				return fmt.Errorf("identity is linked to another user: %w", grants.ErrConflict), nil
			}
			return nil, nil
		}
		ident := id
		if ident.CreatedAt.IsZero() {
			ident.CreatedAt = s.now()
		}
		return nil, putIdentity(tx, &ident)
	})
	if err != nil {
		return fmt.Errorf("boltstore: link identity: %w", err)
	}
	return nil
}

func (s *Store) GetUser(ctx context.Context, id string) (*grants.User, error) {
	if err := checkKeys("boltstore: get user", id); err != nil {
		return nil, err
	}
	var u grants.User
	found := false
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		found, err = getJSON(tx.Bucket(bUsers), []byte(id), &u)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: get user %s: %w", id, err)
	}
	if !found {
		return nil, fmt.Errorf("boltstore: get user %s: %w", id, grants.ErrNotFound)
	}
	return &u, nil
}

// UsersByEmail returns every user with that email (several may share one),
// oldest first; none is not an error.
func (s *Store) UsersByEmail(ctx context.Context, email string) ([]grants.User, error) {
	e := lower(email)
	if err := checkKeys("boltstore: users by email", e); err != nil {
		return nil, err
	}
	users := []grants.User{}
	err := s.db.View(func(tx *bolt.Tx) error {
		prefix := append([]byte(e), sep)
		for _, k := range prefixKeys(tx.Bucket(bUsersByEmail), prefix) {
			var u grants.User
			found, err := getJSON(tx.Bucket(bUsers), k[len(prefix):], &u)
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
		return nil, fmt.Errorf("boltstore: users by email: %w", err)
	}
	slices.SortStableFunc(users, func(a, b grants.User) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return users, nil
}

// Identities returns the user's identities, oldest first; none is not an error.
func (s *Store) Identities(ctx context.Context, userID string) ([]grants.Identity, error) {
	if err := checkKeys("boltstore: identities", userID); err != nil {
		return nil, err
	}
	ids := []grants.Identity{}
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bIdentsByUser).Cursor()
		prefix := append([]byte(userID), sep)
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			var id grants.Identity
			found, err := getJSON(tx.Bucket(bIdentities), v, &id)
			if err != nil {
				return err
			}
			if found && id.UserID == userID {
				ids = append(ids, id)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: identities of %s: %w", userID, err)
	}
	slices.SortStableFunc(ids, func(a, b grants.Identity) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return ids, nil
}

// loadGrant returns the stored grant or an empty one, never nil slices/maps.
// grantRecord is a grant as bolt stores it: the grant and the events of its
// changes not yet acknowledged (grants.Grant keeps those out of its JSON).
type grantRecord struct {
	grants.Grant
	Outbox []grants.OutboxEvent `json:"outbox,omitempty"`
}

func loadGrant(tx *bolt.Tx, userID string) (*grants.Grant, error) {
	rec := &grantRecord{}
	if _, err := getJSON(tx.Bucket(bGrants), []byte(userID), rec); err != nil {
		return nil, err
	}
	g := &rec.Grant
	g.UserID, g.Outbox = userID, rec.Outbox
	g.FillEmpty()
	return g, nil
}

func addRoles(have, add []string) []string {
	for _, r := range add {
		if r != "" && !slices.Contains(have, r) {
			have = append(have, r)
		}
	}
	return have
}

func (s *Store) GetGrant(ctx context.Context, userID string) (*grants.Grant, error) {
	if err := checkKeys("boltstore: get grant", userID); err != nil {
		return nil, err
	}
	var g *grants.Grant
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		g, err = loadGrant(tx, userID)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: get grant of %s: %w", userID, err)
	}
	return g, nil
}

// putGrant stores g with its events and keeps its outbox index entry in
// step, in the caller's transaction.
func putGrant(tx *bolt.Tx, g *grants.Grant) error {
	if err := indexOutboxEntry(tx, grants.UserOutboxID(g.UserID), len(g.Outbox) > 0); err != nil {
		return err
	}
	return putJSON(tx.Bucket(bGrants), []byte(g.UserID), grantRecord{Grant: *g, Outbox: g.Outbox})
}

// changeGrant applies change to the user's grant and stores it, with
// events, if change reports a modification.
func (s *Store) changeGrant(what, userID string, change func(g *grants.Grant) bool, now time.Time, events []grants.OutboxEvent) (*grants.Grant, error) {
	if err := checkKeys("boltstore: "+what, userID); err != nil {
		return nil, err
	}
	var g *grants.Grant
	err := s.batch(func(tx *bolt.Tx) error {
		var err error
		if g, err = loadGrant(tx, userID); err != nil {
			return err
		}
		if !change(g) {
			return nil
		}
		g.UpdatedAt = now
		g.Outbox = append(g.Outbox, events...)
		return putGrant(tx, g)
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: %s of %s: %w", what, userID, err)
	}
	return g, nil
}

func (s *Store) AddRoles(ctx context.Context, userID string, roles []string, now time.Time, events ...grants.OutboxEvent) (*grants.Grant, error) {
	return s.changeGrant("add roles", userID, func(g *grants.Grant) bool {
		n := len(g.Roles)
		g.Roles = addRoles(g.Roles, roles)
		return len(g.Roles) != n
	}, now, events)
}

func (s *Store) RemoveGrantRole(ctx context.Context, userID, role string, now time.Time, events ...grants.OutboxEvent) (*grants.Grant, error) {
	if role == "" {
		return nil, fmt.Errorf("boltstore: remove grant role: empty role: %w", ErrInvalid)
	}
	return s.changeGrant("remove grant role", userID, func(g *grants.Grant) bool {
		n := len(g.Roles)
		g.Roles = slices.DeleteFunc(g.Roles, func(r string) bool { return r == role })
		return len(g.Roles) != n
	}, now, events)
}

func (s *Store) RemoveGrantClaim(ctx context.Context, userID, key string, now time.Time, events ...grants.OutboxEvent) (*grants.Grant, error) {
	if key == "" {
		return nil, fmt.Errorf("boltstore: remove grant claim: empty key: %w", ErrInvalid)
	}
	return s.changeGrant("remove grant claim", userID, func(g *grants.Grant) bool {
		_, ok := g.Claims[key]
		delete(g.Claims, key)
		return ok
	}, now, events)
}

func (s *Store) SetGrantClaim(ctx context.Context, userID, key string, value any, now time.Time, events ...grants.OutboxEvent) (*grants.Grant, error) {
	if key == "" {
		return nil, fmt.Errorf("boltstore: set grant claim: empty key: %w", ErrInvalid)
	}
	return s.changeGrant("set grant claim", userID, func(g *grants.Grant) bool {
		g.Claims[key] = value
		return true
	}, now, events)
}
