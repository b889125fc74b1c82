package redis

import (
	"context"
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
//	{prefix}u:<id>            v1: hash: id email ev name pic ca ua ll, o = the identity it was
//	                          created for; v2: a record with the user's identities (users_format.go)
//	{prefix}ue:<lower email>  set of user IDs (index; readers re-check the email); not written
//	                          at v3, where users:idx (users_index.go) is the email index
//	{prefix}id:<iss>:<sub>    identity record; SET-if-absent is the "one user per identity" lock
//	{prefix}ui:<user>         set of "<iss>:<sub>" (index; readers re-check the owner); not
//	                          written at v3 for a v2 user, whose record lists its identities

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
	ident, raw, mode, err := s.claimOrRead(ctx, id, p, newUserID, now)
	if err != nil {
		return nil, false, err
	}
	userID := ident.UserID
	email := p.Email
	res, err := s.ensureIndexedUser(ctx, mode, suffix, userID, p, now, probe)
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
	u, _, err := userFromReply(userID, res[2:])
	if err != nil {
		return nil, false, err
	}
	if state == 1 && mode == "existing" {
		// We created the user of an identity linked earlier (the linker
		// crashed, or is still on its way), or of one erased meanwhile.
		if erased, err := s.erasedUnderUs(ctx, idKey, userID, suffix); err != nil || erased {
			return nil, false, errors.Join(err, errErasedMeanwhile)
		}
		// A v2 record was created listing the identity; v3 writes no ui: for it.
		if str(res, 2) == "h" || !s.formatV3() {
			if err := s.rdb.SAdd(ctx, s.key("ui", userID), suffix).Err(); err != nil {
				return nil, false, err
			}
		}
	}
	if state == 0 && email != "" {
		if err := s.refreshEmail(ctx, idKey, str(res, 1), u, ident, p); err != nil {
			return nil, false, err
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

// claimOrRead links the identity to newUserID if it is linked to no one
// (mode "new", raw the record written) or reads the link (mode "existing").
func (s *Store) claimOrRead(ctx context.Context, id grants.Identity, p grants.Profile, newUserID string, now time.Time) (grants.Identity, []byte, string, error) {
	ident := grants.LinkedIdentity(id, p, newUserID, now)
	raw, err := s.encodeIdentity(&ident)
	if err != nil {
		return ident, nil, "", err
	}
	res, err := s.runScript(ctx, claimIdentity, []string{s.identityKey(id.Issuer, id.Subject)}, raw)
	if err != nil || str(res, 0) != "exists" {
		return ident, raw, "new", err
	}
	cur, err := decodeIdentity(id.Issuer, id.Subject, []byte(str(res, 1)))
	if err != nil {
		return ident, nil, "", err
	}
	return *cur, raw, "existing", nil
}

// refreshEmail follows a returning user's profile refresh that gave email
// p.Email (the user was old): the email index, then the identity's copy.
func (s *Store) refreshEmail(ctx context.Context, idKey, old string, u *grants.User, ident grants.Identity, p grants.Profile) error {
	if lower(old) != lower(p.Email) {
		if err := s.moveEmailIndex(ctx, u.ID, old, p.Email); err != nil {
			return err
		}
		if !s.formatV3() { // at v3 moveEmailIndex moved the user list's entry
			if err := s.unindexOldEmail(ctx, u.ID, old, u.Email); err != nil {
				return err
			}
		}
	}
	if ident.Email == p.Email && ident.EmailVerified == p.EmailVerified {
		return nil
	}
	ident.Email, ident.EmailVerified = p.Email, p.EmailVerified
	raw, err := s.encodeIdentity(&ident)
	if err != nil {
		return err
	}
	if err := s.rdb.SetArgs(ctx, idKey, raw, redis.SetArgs{Mode: "XX"}).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	return nil
}

// ensureIndexedUser runs ensureUser on userID with the index entries the
// user needs sent before it (a new identity in the user's identity set, the
// email in the email index) and the user list's entry after it, in one
// round trip on one master (aroundScript). The entries are written whatever
// the script decides: every reader of these indexes re-checks the user.
//
// At v3 the user list's entry is the email index (UsersByEmail reads it),
// so it goes before instead, and neither ue: nor ui: is written: a compact
// record lists its identities itself. probe, when set, rides after them.
func (s *Store) ensureIndexedUser(ctx context.Context, mode, suffix, userID string, p grants.Profile, now time.Time, probe *awaitProbe) ([]any, error) {
	var before, after []redis.Cmder
	if mode == "new" && !s.formatV3() {
		before = append(before, redis.NewIntCmd(ctx, "sadd", s.key("ui", userID), suffix))
	}
	if p.Email != "" {
		// Indexed before the user carries it, so a reader never misses it.
		entry := redis.NewIntCmd(ctx, "zadd", s.usersIndexKey(), 0, grants.UserIndexKey(p.Email, userID))
		if s.formatV3() {
			before = append(before, entry)
		} else {
			before = append(before, redis.NewIntCmd(ctx, "sadd", s.key("ue", lower(p.Email)), userID))
			after = append(after, entry)
		}
	}
	record := ""
	if s.compactUsers() && nanoTime(now) {
		record = encodeUserCompact(p, suffix, now)
	}
	if probe != nil {
		after = append(after, probe.queue(ctx, s, userID))
	}
	return s.aroundScript(ctx, before, scriptCall{ensureUser, []string{s.key("u", userID)},
		[]any{mode, suffix, userID, p.Email, boolStr(p.EmailVerified), p.Name, p.Picture, fmtTime(now), record, userTime(now)}}, after)
}

// moveEmailIndex runs after a profile refresh that changed old to email (the
// new entry was added before). Index entries live in other slots than the
// user, so concurrent email changes are reconciled by re-reading: whoever
// removes an entry re-adds it if the user turns out to carry that email
// after all, and the new email is re-asserted last. The index is ue: below
// v3 and the user list at v3 (whose entry of the old email unindexOldEmail
// then finds gone); a ue: entry left from before v3 is dropped there too.
func (s *Store) moveEmailIndex(ctx context.Context, userID, old, email string) error {
	if email == "" {
		return nil
	}
	add := func(e string) error { return s.rdb.SAdd(ctx, s.key("ue", lower(e)), userID).Err() }
	rm := func(e string) error { return s.rdb.SRem(ctx, s.key("ue", lower(e)), userID).Err() }
	if s.formatV3() {
		add = func(e string) error {
			return s.rdb.ZAdd(ctx, s.usersIndexKey(), redis.Z{Member: grants.UserIndexKey(e, userID)}).Err()
		}
		rmUE := rm
		rm = func(e string) error {
			return errors.Join(rmUE(e), s.rdb.ZRem(ctx, s.usersIndexKey(), grants.UserIndexKey(e, userID)).Err())
		}
	}
	// The user list has an entry for a user without an email; ue: has none.
	if (old != "" || s.formatV3()) && lower(old) != lower(email) {
		if err := rm(old); err != nil {
			return err
		}
		cur, err := s.loadUser(ctx, userID)
		if err != nil {
			return err
		}
		if cur != nil && (cur.Email != "" || s.formatV3()) && lower(cur.Email) == lower(old) {
			if err := add(old); err != nil {
				return err
			}
		}
	}
	return add(email)
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
		raw, err := s.encodeIdentity(&ident)
		if err != nil {
			return err
		}
		suffix := identitySuffix(id.Issuer, id.Subject)
		// Index first: a stale entry is filtered by Identities, a missing one is not.
		if err := s.listIdentity(ctx, id.UserID, suffix); err != nil {
			return err
		}
		res, err := s.runScript(ctx, claimIdentity, []string{s.identityKey(id.Issuer, id.Subject)}, raw)
		if err != nil {
			return err
		}
		if str(res, 0) == "exists" {
			old, err := decodeIdentity(id.Issuer, id.Subject, []byte(str(res, 1)))
			if err != nil {
				return err
			}
			if old.UserID != id.UserID {
				s.unlistIdentity(context.WithoutCancel(ctx), id.UserID, suffix)
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
	u, _, err := s.loadUserRecord(ctx, id)
	return u, err
}

// loadUserRecord reads a user of either form with the identities a v2
// record lists (nil, nil for none).
func (s *Store) loadUserRecord(ctx context.Context, id string) (*grants.User, []string, error) {
	res, err := s.runScript(ctx, getUser, []string{s.key("u", id)})
	if err != nil {
		return nil, nil, err
	}
	return userFromReply(id, res)
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
// oldest first; none is not an error. The users are those of the ue: set
// (written below v3) and of the user list's entries for the email (its
// email index at v3), each re-checked.
func (s *Store) UsersByEmail(ctx context.Context, email string) ([]grants.User, error) {
	e := lower(email)
	if err := checkKeys("redisstore: users by email", e); err != nil {
		return nil, err
	}
	var set *redis.StringSliceCmd
	var listed *redis.StringSliceCmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		set = p.SMembers(ctx, s.key("ue", e))
		listed = p.ZRangeByLex(ctx, s.usersIndexKey(), &redis.ZRangeBy{Min: "[" + e + "\x00", Max: "[" + e + "\x00\xff"})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("redisstore: users by email: %w", err)
	}
	ids := set.Val()
	for _, m := range listed.Val() {
		if id := m[len(e)+1:]; !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
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
	if err == nil {
		if cur, err := decodeIdentityAt(suffix, []byte(raw)); err == nil && cur.UserID == userID {
			return false, nil
		}
	}
	if err := delUserIfOrigin.Run(context.WithoutCancel(ctx), s.rdb, []string{s.key("u", userID)}, suffix).Err(); err != nil {
		return true, err
	}
	return true, nil
}
