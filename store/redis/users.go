package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
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
	u, created, err := s.resolveIdentity(ctx, id, p, newUserID, now)
	if errors.Is(err, errErasedMeanwhile) {
		// The identity is gone with its user: this sign-in starts afresh,
		// as a new user without grants.
		u, created, err = s.resolveIdentity(ctx, id, p, newUserID, now)
	}
	if err != nil {
		return nil, false, fmt.Errorf("redisstore: resolve identity: %w", err)
	}
	return u, created, nil
}

func (s *Store) resolveIdentity(ctx context.Context, id grants.Identity, p grants.Profile, newUserID string, now time.Time) (*grants.User, bool, error) {
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
	res, err = s.ensureIndexedUser(ctx, mode, suffix, userID, p, now)
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
	if email == "" {
		// Listed under the email it had, or none (ensureIndexedUser lists
		// the users whose sign-in gives one).
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
func (s *Store) ensureIndexedUser(ctx context.Context, mode, suffix, userID string, p grants.Profile, now time.Time) ([]any, error) {
	var before, after []redis.Cmder
	if mode == "new" {
		before = append(before, redis.NewIntCmd(ctx, "sadd", s.key("ui", userID), suffix))
	}
	if p.Email != "" {
		// Indexed before the user carries it, so a reader never misses it.
		before = append(before, redis.NewIntCmd(ctx, "sadd", s.key("ue", lower(p.Email)), userID))
		after = append(after, redis.NewIntCmd(ctx, "zadd", s.usersIndexKey(), 0, grants.UserIndexKey(p.Email, userID)))
	}
	return s.aroundScript(ctx, before, ensureUser, []string{s.key("u", userID)},
		[]any{mode, suffix, userID, p.Email, boolStr(p.EmailVerified), p.Name, p.Picture, fmtTime(now)}, after)
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

// --- grants ---
//
//	{prefix}{g:<user>}    hash: 'c:'<claim> → raw JSON value, 'u' → updated_at
//	{prefix}{g:<user>}:r  list of roles, in the order first granted
//	{prefix}{g:<user>}:i  list of redeemed invitation IDs (the merge's idempotency record)
//	{prefix}{g:<user>}:p  hash invitation ID → unix ms: redemptions whose merge may not have run

func (s *Store) grantKeys(userID string) []string {
	g := s.tagged("g", userID)
	return []string{g, g + ":r", g + ":i", g + ":p"}
}

// grantOp runs grantApply and decodes the grant and the pending merges.
func (s *Store) grantOp(ctx context.Context, userID string, args ...any) (*grants.Grant, map[string]string, error) {
	return s.grantOpRecording(ctx, userID, nil, args...)
}

// grantOpRecording is grantOp with events stored with the change (if the op
// changes the grant); the outbox index entry is made due first, as every
// index entry is added before the record that needs it.
func (s *Store) grantOpRecording(ctx context.Context, userID string, events []grants.OutboxEvent, args ...any) (*grants.Grant, map[string]string, error) {
	var lines strings.Builder
	for _, e := range events {
		raw, err := json.Marshal(e)
		if err != nil {
			return nil, nil, err
		}
		if e.ID == "" || strings.ContainsAny(e.ID, "\t\n") {
			return nil, nil, fmt.Errorf("event id %q: %w", e.ID, ErrInvalid)
		}
		lines.WriteString(e.ID + "\t" + string(raw) + "\n") // JSON holds no raw newline
	}
	if len(events) > 0 {
		if err := s.rdb.ZAdd(ctx, s.outboxKey(), redis.Z{Score: 0, Member: grants.UserOutboxID(userID)}).Err(); err != nil {
			return nil, nil, err
		}
	}
	full := append([]any{args[0], lines.String()}, args[1:]...)
	if len(events) > 0 {
		// Due again after the write, as for invitations (markOutboxAgain): a
		// runner that claimed the entry between the mark above and the
		// script read no events and dropped it.
		defer func() {
			if err := s.rdb.ZAdd(context.WithoutCancel(ctx), s.outboxKey(), redis.Z{Score: 0, Member: grants.UserOutboxID(userID)}).Err(); err != nil {
				s.log.Error("redisstore: marking a grant's events due after its write", "user_id", userID, "err", err)
			}
		}()
	}
	res, err := s.runScript(ctx, grantApply, s.grantKeys(userID), full...)
	if err != nil {
		return nil, nil, err
	}
	return grantFromReply(userID, res)
}

// grantFromReply decodes grantApply's reply: the grant and its pending
// merges (invitation ID → entry).
func grantFromReply(userID string, res []any) (*grants.Grant, map[string]string, error) {
	var err error
	if len(res) != 4 {
		return nil, nil, fmt.Errorf("unexpected grant reply %v", res)
	}
	h, _ := res[0].([]any)
	fields := pairs(h)
	g := &grants.Grant{UserID: userID, Roles: strs(res[1]), Claims: map[string]any{}, Invitations: strs(res[2])}
	for k, v := range fields {
		switch {
		case k == "u":
			if g.UpdatedAt, err = parseTime(v); err != nil {
				return nil, nil, fmt.Errorf("decode grant updated_at: %w", err)
			}
		case k == "so":
			t, err := parseTime(v)
			if err != nil {
				return nil, nil, fmt.Errorf("decode grant signed_out_at: %w", err)
			}
			g.SignedOutAt = &t
		case strings.HasPrefix(k, "c:"):
			var x any
			if err := json.Unmarshal([]byte(v), &x); err != nil {
				return nil, nil, fmt.Errorf("decode claim %s: %w", k[2:], err)
			}
			g.Claims[k[2:]] = x
		case strings.HasPrefix(k, "o:"):
			var e grants.OutboxEvent
			if err := json.Unmarshal([]byte(v), &e); err != nil {
				return nil, nil, fmt.Errorf("decode grant event %s: %w", k[2:], err)
			}
			g.Outbox = append(g.Outbox, e)
		}
	}
	// A hash has no order: events go in the order they happened.
	slices.SortStableFunc(g.Outbox, func(a, b grants.OutboxEvent) int {
		if c := a.At.Compare(b.At); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	p, _ := res[3].([]any)
	return g, pairs(p), nil
}

// mergeArgs are grantApply's arguments for merging inv into a grant: its
// roles, then the claims the redemption offers (grants.RedemptionClaims);
// the script adds a claim only when the grant does not hold it (HSETNX),
// which is grants.Grant.MergeRedemption's rule.
func mergeArgs(inv *grants.Invitation, extra map[string]any, at time.Time) ([]any, error) {
	args := []any{"merge", fmtTime(at), inv.ID, len(inv.Roles)}
	for _, r := range inv.Roles {
		args = append(args, r)
	}
	claims := grants.RedemptionClaims(inv, extra)
	for _, k := range slices.Sorted(maps.Keys(claims)) {
		raw, err := json.Marshal(claims[k])
		if err != nil {
			return nil, fmt.Errorf("encode claim %s: %w", k, err)
		}
		args = append(args, k, raw)
	}
	return args, nil
}

// pendingValue is a pending-merge entry: when it was written and the
// redemption's own claims, which exist nowhere else until the merge ran.
func pendingValue(at time.Time, extra map[string]any) (string, error) {
	v := strconv.FormatInt(at.UnixMilli(), 10)
	if len(extra) == 0 {
		return v, nil
	}
	raw, err := json.Marshal(extra)
	if err != nil {
		return "", fmt.Errorf("encode redemption claims: %w", err)
	}
	return v + "|" + string(raw), nil
}

func parsePending(v string) (time.Time, map[string]any) {
	ms, rest, _ := strings.Cut(v, "|")
	n, _ := strconv.ParseInt(ms, 10, 64)
	var extra map[string]any
	if rest != "" {
		_ = json.Unmarshal([]byte(rest), &extra)
	}
	return time.UnixMilli(n), extra
}

// pendingMergeAge is how long GetGrant leaves a pending merge of a still
// pending invitation alone (the redemption may be in flight).
const pendingMergeAge = 10 * time.Minute

// GetGrant returns an empty grant (not ErrNotFound) for a user with none. It
// also finishes redemptions whose grant merge did not run (see RedeemInvitation).
func (s *Store) GetGrant(ctx context.Context, userID string) (*grants.Grant, error) {
	if err := checkKeys("redisstore: get grant", userID); err != nil {
		return nil, err
	}
	g, pending, err := s.grantOp(ctx, userID, "get", "", "", 0)
	if err == nil && len(pending) > 0 {
		g, err = s.healGrant(ctx, userID, g, pending)
	}
	if err != nil {
		return nil, fmt.Errorf("redisstore: get grant of %s: %w", userID, err)
	}
	return g, nil
}

// healGrant applies the merge of every pending invitation this user
// redeemed, and forgets pending entries of redemptions that did not happen.
func (s *Store) healGrant(ctx context.Context, userID string, g *grants.Grant, pending map[string]string) (*grants.Grant, error) {
	for invID, v := range pending {
		since, extra := parsePending(v)
		inv, _, err := s.loadInvitation(ctx, invID)
		if err != nil {
			return nil, err
		}
		switch {
		case inv != nil && inv.Status == grants.StatusRedeemed && inv.RedeemedBy == userID:
			at := s.now()
			if inv.RedeemedAt != nil {
				at = *inv.RedeemedAt
			}
			args, err := mergeArgs(inv, extra, at)
			if err != nil {
				return nil, err
			}
			if g, _, err = s.grantOp(ctx, userID, args...); err != nil {
				return nil, err
			}
			s.log.Info("redisstore: applied an unfinished redemption's grant", "invitation_id", invID, "user_id", userID)
		case inv != nil && inv.Status == grants.StatusPending && s.now().Before(since.Add(pendingMergeAge)):
			// Possibly in flight: leave it.
		default:
			if g, _, err = s.grantOp(ctx, userID, "unpend", "", invID, 0); err != nil {
				return nil, err
			}
		}
	}
	return g, nil
}

func (s *Store) changeGrant(ctx context.Context, what, userID string, events []grants.OutboxEvent, args ...any) (*grants.Grant, error) {
	if err := checkKeys("redisstore: "+what, userID); err != nil {
		return nil, err
	}
	g, _, err := s.grantOpRecording(ctx, userID, events, args...)
	if err != nil {
		return nil, fmt.Errorf("redisstore: %s of %s: %w", what, userID, err)
	}
	return g, nil
}

func (s *Store) AddRoles(ctx context.Context, userID string, roles []string, now time.Time, events ...grants.OutboxEvent) (*grants.Grant, error) {
	args := []any{"add", fmtTime(now), "", len(roles)}
	for _, r := range roles {
		args = append(args, r)
	}
	return s.changeGrant(ctx, "add roles", userID, events, args...)
}

func (s *Store) RemoveGrantRole(ctx context.Context, userID, role string, now time.Time, events ...grants.OutboxEvent) (*grants.Grant, error) {
	if role == "" {
		return nil, fmt.Errorf("redisstore: remove grant role: empty role: %w", ErrInvalid)
	}
	return s.changeGrant(ctx, "remove grant role", userID, events, "rmrole", fmtTime(now), role, 0)
}

func (s *Store) RemoveGrantClaim(ctx context.Context, userID, key string, now time.Time, events ...grants.OutboxEvent) (*grants.Grant, error) {
	if key == "" {
		return nil, fmt.Errorf("redisstore: remove grant claim: empty key: %w", ErrInvalid)
	}
	return s.changeGrant(ctx, "remove grant claim", userID, events, "rmclaim", fmtTime(now), key, 0)
}

func (s *Store) SetGrantClaim(ctx context.Context, userID, key string, value any, now time.Time, events ...grants.OutboxEvent) (*grants.Grant, error) {
	if key == "" {
		return nil, fmt.Errorf("redisstore: set grant claim: empty key: %w", ErrInvalid)
	}
	raw, err := json.Marshal(value)
	if err != nil {
		return nil, fmt.Errorf("redisstore: set grant claim %s: %w", key, err)
	}
	return s.changeGrant(ctx, "set grant claim", userID, events, "setclaim", fmtTime(now), key, 0, key, raw)
}

// requireUser is ErrNotFound unless the user exists.
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
