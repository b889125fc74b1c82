package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
)

// Users and identities.
//
//	{prefix}u:<id>            hash: id email ev name pic ca ua ll, o = the identity it was created for
//	{prefix}ue:<lower email>  set of user IDs (index; readers re-check the email)
//	{prefix}id:<iss>:<sub>    identity JSON; SET-if-absent is the "one user per identity" lock
//	{prefix}ui:<user>         set of "<iss>:<sub>" (index; readers re-check the owner)

func (s *Store) identityKey(iss, sub string) string {
	return s.prefix + "id:" + identitySuffix(iss, sub)
}

func identitySuffix(iss, sub string) string { return esc(iss) + ":" + esc(sub) }

func boolStr(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// userFromHash decodes a user hash (as returned by HGETALL).
func userFromHash(m map[string]string) (*grants.User, error) {
	u := &grants.User{ID: m["id"], Email: m["email"], EmailVerified: m["ev"] == "1", Name: m["name"], Picture: m["pic"]}
	var err error
	if u.CreatedAt, err = parseTime(m["ca"]); err == nil {
		if u.UpdatedAt, err = parseTime(m["ua"]); err == nil {
			u.LastLoginAt, err = parseTime(m["ll"])
		}
	}
	if err != nil {
		return nil, fmt.Errorf("decode user %s: %w", u.ID, err)
	}
	return u, nil
}

// ResolveIdentity: the identity key is claimed with a set-if-absent script,
// so of concurrent first sign-ins exactly one links the identity; every
// caller then runs ensureUser on the linked user ID, which creates the user
// if it is not there yet (exactly one caller sees created) and otherwise
// refreshes the profile from the non-empty fields of p. A crash between the
// two steps heals at the next sign-in (the user is created then).
func (s *Store) ResolveIdentity(ctx context.Context, id grants.Identity, p grants.Profile, newUserID string, now time.Time) (*grants.User, bool, error) {
	if err := checkKeys("redisstore: resolve identity", id.Issuer, id.Subject, newUserID); err != nil {
		return nil, false, err
	}
	return s.resolveIdentityProbing(ctx, id, p, newUserID, now, nil)
}

// resolveIdentityProbing is ResolveIdentity, also probing, when probe is
// not nil, the user's invitations awaiting verification (ResolveSignIn).
func (s *Store) resolveIdentityProbing(ctx context.Context, id grants.Identity, p grants.Profile, newUserID string, now time.Time, probe *awaitProbe) (*grants.User, bool, error) {
	u, created, err := s.resolveIdentity(ctx, id, p, newUserID, now, probe)
	if errors.Is(err, errErasedMeanwhile) {
		// The identity is gone with its user: this sign-in starts afresh,
		// as a new user without grants.
		u, created, err = s.resolveIdentity(ctx, id, p, newUserID, now, probe)
	}
	if err != nil {
		return nil, false, fmt.Errorf("redisstore: resolve identity: %w", err)
	}
	return u, created, nil
}

func (s *Store) resolveIdentity(ctx context.Context, id grants.Identity, p grants.Profile, newUserID string, now time.Time, probe *awaitProbe) (*grants.User, bool, error) {
	idKey := s.identityKey(id.Issuer, id.Subject)
	suffix := identitySuffix(id.Issuer, id.Subject)
	ident := id
	ident.UserID = newUserID
	if ident.Email == "" {
		ident.Email, ident.EmailVerified = p.Email, p.EmailVerified
	}
	if ident.CreatedAt.IsZero() {
		ident.CreatedAt = now
	}
	raw, err := json.Marshal(&ident)
	if err != nil {
		return nil, false, err
	}
	res, err := s.runScript(ctx, claimIdentity, []string{idKey}, raw)
	if err != nil {
		return nil, false, err
	}
	mode := "new"
	if str(res, 0) == "exists" {
		mode = "existing"
		if err := json.Unmarshal([]byte(str(res, 1)), &ident); err != nil {
			return nil, false, fmt.Errorf("decode identity: %w", err)
		}
	}
	userID := ident.UserID
	email := p.Email
	res, err = s.ensureIndexedUser(ctx, mode, suffix, userID, p, now, probe)
	if err != nil {
		return nil, false, err
	}
	state, _ := res[0].(int64)
	if state == -1 {
		// newUserID belongs to another user: undo the link (if still ours).
		s.release(ctx, idKey, string(raw))
		if err := s.rdb.SRem(context.WithoutCancel(ctx), s.key("ui", newUserID), suffix).Err(); err != nil {
			s.log.Warn("redisstore: releasing identity index", "err", err)
		}
		return nil, false, fmt.Errorf("user %s exists: %w", newUserID, grants.ErrConflict)
	}
	fields, _ := res[2].([]any)
	u, err := userFromHash(pairs(fields))
	if err != nil {
		return nil, false, err
	}
	if state == 1 && mode == "existing" {
		// We created the user of an identity linked earlier (the linker
		// crashed, or is still on its way), or of one erased meanwhile.
		if erased, err := s.erasedUnderUs(ctx, idKey, userID, suffix); err != nil || erased {
			return nil, false, errors.Join(err, errErasedMeanwhile)
		}
		if err := s.rdb.SAdd(ctx, s.key("ui", userID), suffix).Err(); err != nil {
			return nil, false, err
		}
	}
	if state == 0 && email != "" {
		if old := str(res, 1); lower(old) != lower(email) {
			if err := s.moveEmailIndex(ctx, userID, old, email); err != nil {
				return nil, false, err
			}
			if err := s.unindexOldEmail(ctx, userID, old, u.Email); err != nil {
				return nil, false, err
			}
		}
		if ident.Email != p.Email || ident.EmailVerified != p.EmailVerified {
			ident.Email, ident.EmailVerified = p.Email, p.EmailVerified
			if raw, err := json.Marshal(&ident); err == nil {
				if err := s.rdb.SetArgs(ctx, idKey, raw, redis.SetArgs{Mode: "XX"}).Err(); err != nil && !errors.Is(err, redis.Nil) {
					return nil, false, err
				}
			}
		}
	}
	if email == "" && state == 1 {
		// A new user without an email, listed under none (ensureIndexedUser
		// lists the users whose sign-in gives one; a returning user's entry
		// is there since it was created, or since the list's backfill).
		if err := s.indexUser(ctx, u); err != nil {
			return nil, false, err
		}
	}
	return u, state == 1, nil
}

// ensureIndexedUser runs ensureUser on userID with the index entries the
// user needs sent before it (a new identity in the user's identity set, the
// email in the email index) and the user list's entry after it, in one
// round trip on one master (aroundScript). The entries are written whatever
// the script decides: every reader of these indexes re-checks the user.
func (s *Store) ensureIndexedUser(ctx context.Context, mode, suffix, userID string, p grants.Profile, now time.Time, probe *awaitProbe) ([]any, error) {
	var before, after []redis.Cmder
	if mode == "new" {
		before = append(before, redis.NewIntCmd(ctx, "sadd", s.key("ui", userID), suffix))
	}
	if p.Email != "" {
		// Indexed before the user carries it, so a reader never misses it.
		before = append(before, redis.NewIntCmd(ctx, "sadd", s.key("ue", lower(p.Email)), userID))
		after = append(after, redis.NewIntCmd(ctx, "zadd", s.usersIndexKey(), 0, grants.UserIndexKey(p.Email, userID)))
	}
	if probe != nil {
		after = append(after, probe.queue(ctx, s, userID))
	}
	return s.aroundScript(ctx, before, scriptCall{ensureUser, []string{s.key("u", userID)},
		[]any{mode, suffix, userID, p.Email, boolStr(p.EmailVerified), p.Name, p.Picture, fmtTime(now)}}, after)
}

// moveEmailIndex runs after a profile refresh that changed old to email (the
// new entry was added before). Index entries live in other slots than the
// user, so concurrent email changes are reconciled by re-reading: whoever
// removes an entry re-adds it if the user turns out to carry that email
// after all, and the new email is re-asserted last.
func (s *Store) moveEmailIndex(ctx context.Context, userID, old, email string) error {
	if email == "" {
		return nil
	}
	if old != "" && lower(old) != lower(email) {
		if err := s.rdb.SRem(ctx, s.key("ue", lower(old)), userID).Err(); err != nil {
			return err
		}
		cur, err := s.rdb.HGet(ctx, s.key("u", userID), "email").Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		if cur != "" && lower(cur) == lower(old) {
			if err := s.rdb.SAdd(ctx, s.key("ue", lower(old)), userID).Err(); err != nil {
				return err
			}
		}
	}
	return s.rdb.SAdd(ctx, s.key("ue", lower(email)), userID).Err()
}

// LinkIdentity is idempotent for the same user; ErrConflict if the identity
// belongs to another user, ErrNotFound if the user does not exist.
func (s *Store) LinkIdentity(ctx context.Context, id grants.Identity) error {
	if err := checkKeys("redisstore: link identity", id.Issuer, id.Subject, id.UserID); err != nil {
		return err
	}
	err := func() error {
		if err := s.requireUser(ctx, id.UserID); err != nil {
			return err
		}
		ident := id
		if ident.CreatedAt.IsZero() {
			ident.CreatedAt = s.now()
		}
		raw, err := json.Marshal(&ident)
		if err != nil {
			return err
		}
		suffix := identitySuffix(id.Issuer, id.Subject)
		// Index first: a stale entry is filtered by Identities, a missing one is not.
		if err := s.rdb.SAdd(ctx, s.key("ui", id.UserID), suffix).Err(); err != nil {
			return err
		}
		res, err := s.runScript(ctx, claimIdentity, []string{s.identityKey(id.Issuer, id.Subject)}, raw)
		if err != nil {
			return err
		}
		if str(res, 0) == "exists" {
			var old grants.Identity
			if err := json.Unmarshal([]byte(str(res, 1)), &old); err != nil {
				return fmt.Errorf("decode identity: %w", err)
			}
			if old.UserID != id.UserID {
				_ = s.rdb.SRem(context.WithoutCancel(ctx), s.key("ui", id.UserID), suffix).Err()
				return fmt.Errorf("identity is linked to another user: %w", grants.ErrConflict)
			}
		}
		return nil
	}()
	if err != nil {
		return fmt.Errorf("redisstore: link identity: %w", err)
	}
	return nil
}

func (s *Store) loadUser(ctx context.Context, id string) (*grants.User, error) {
	m, err := s.rdb.HGetAll(ctx, s.key("u", id)).Result()
	if err != nil {
		return nil, err
	}
	if len(m) == 0 {
		return nil, nil
	}
	return userFromHash(m)
}

func (s *Store) GetUser(ctx context.Context, id string) (*grants.User, error) {
	if err := checkKeys("redisstore: get user", id); err != nil {
		return nil, err
	}
	u, err := s.loadUser(ctx, id)
	if err == nil && u == nil {
		err = grants.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("redisstore: get user %s: %w", id, err)
	}
	return u, nil
}

// UsersByEmail returns every user with that email (several may share one),
// oldest first; none is not an error.
func (s *Store) UsersByEmail(ctx context.Context, email string) ([]grants.User, error) {
	e := lower(email)
	if err := checkKeys("redisstore: users by email", e); err != nil {
		return nil, err
	}
	ids, err := s.rdb.SMembers(ctx, s.key("ue", e)).Result()
	if err != nil {
		return nil, fmt.Errorf("redisstore: users by email: %w", err)
	}
	users := []grants.User{}
	for _, id := range ids {
		u, err := s.loadUser(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("redisstore: users by email: %w", err)
		}
		if u != nil && lower(u.Email) == e {
			users = append(users, *u)
		}
	}
	slices.SortStableFunc(users, func(a, b grants.User) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return users, nil
}

// Identities returns the user's identities, oldest first; none is not an error.
func (s *Store) Identities(ctx context.Context, userID string) ([]grants.Identity, error) {
	if err := checkKeys("redisstore: identities", userID); err != nil {
		return nil, err
	}
	suffixes, err := s.rdb.SMembers(ctx, s.key("ui", userID)).Result()
	if err != nil {
		return nil, fmt.Errorf("redisstore: identities of %s: %w", userID, err)
	}
	ids := []grants.Identity{}
	for _, suf := range suffixes {
		raw, err := s.rdb.Get(ctx, s.prefix+"id:"+suf).Bytes()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("redisstore: identities of %s: %w", userID, err)
		}
		var id grants.Identity
		if err := json.Unmarshal(raw, &id); err != nil {
			return nil, fmt.Errorf("redisstore: identities of %s: decode: %w", userID, err)
		}
		if id.UserID == userID {
			ids = append(ids, id)
		}
	}
	slices.SortStableFunc(ids, func(a, b grants.Identity) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return ids, nil
}

func (s *Store) requireUser(ctx context.Context, userID string) error {
	n, err := s.rdb.Exists(ctx, s.key("u", userID)).Result()
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("user %s: %w", userID, grants.ErrNotFound)
	}
	return nil
}

// errErasedMeanwhile: the user resolveIdentity found through the identity
// was erased between the identity's lookup and the user's creation.
var errErasedMeanwhile = errors.New("the user was erased during the sign-in")

// erasedUnderUs reports whether the identity was erased after this sign-in
// read it and before it re-created the user hash (an erase removes the
// identities before the user hash, so a hash re-created after the erase
// removed it finds the identity gone); if so it deletes the hash it
// created, which would otherwise outlive the erase with the person's email.
func (s *Store) erasedUnderUs(ctx context.Context, idKey, userID, suffix string) (bool, error) {
	raw, err := s.rdb.Get(ctx, idKey).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return false, err
	}
	var cur grants.Identity
	if err == nil && json.Unmarshal([]byte(raw), &cur) == nil && cur.UserID == userID {
		return false, nil
	}
	if err := delUserIfOrigin.Run(context.WithoutCancel(ctx), s.rdb, []string{s.key("u", userID)}, suffix).Err(); err != nil {
		return true, err
	}
	return true, nil
}
