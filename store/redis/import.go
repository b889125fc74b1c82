package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/sessions"
	"github.com/usher-oidc/usher/store"
)

// importUser creates a user hash unless it exists. KEYS[1]; ARGV: field, value…
var importUser = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
`)

// importGrant creates a grant unless any of its keys exists.
// KEYS: {g:u}, :r, :i; ARGV: updated_at, #roles, roles…, #invitations, IDs…, claim, raw JSON…
var importGrant = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) + redis.call('EXISTS', KEYS[2]) + redis.call('EXISTS', KEYS[3]) > 0 then return 0 end
redis.call('HSET', KEYS[1], 'u', ARGV[1])
local i = 2
local n = tonumber(ARGV[i])
for j = 1, n do redis.call('RPUSH', KEYS[2], ARGV[i + j]) end
i = i + n + 1
n = tonumber(ARGV[i])
for j = 1, n do redis.call('RPUSH', KEYS[3], ARGV[i + j]) end
i = i + n + 1
while i < #ARGV do
  redis.call('HSET', KEYS[1], 'c:' .. ARGV[i], ARGV[i + 1])
  i = i + 2
end
return 1
`)

// Import stores rec create-if-absent with every index the store keeps for
// it, through the store's write paths where they keep the record exactly
// (signing keys, invitations, audit, idempotency keys, jobs, revocations,
// browser sessions) and raw otherwise (users keep their timestamps, grants
// their role and redemption order, refresh tokens their rotation).
func (s *Store) Import(ctx context.Context, kind store.Kind, rec json.RawMessage) (bool, error) {
	handled, created, err := store.ImportViaStore(ctx, s, kind, rec)
	if !handled {
		created, err = s.importRecord(ctx, kind, rec)
	}
	if err != nil {
		return false, fmt.Errorf("redisstore: import %s: %w", kind, err)
	}
	return created, nil
}

func (s *Store) exists(ctx context.Context, key string) (bool, error) {
	n, err := s.rdb.Exists(ctx, key).Result()
	return n > 0, err
}

func (s *Store) importRecord(ctx context.Context, kind store.Kind, rec json.RawMessage) (bool, error) {
	switch kind {
	case store.SigningKeys:
		return s.importSigningKey(ctx, rec)
	case store.Users:
		return s.importUserRecord(ctx, rec)
	case store.Identities:
		return s.importIdentity(ctx, rec)
	case store.Grants:
		return s.importGrant(ctx, rec)
	case store.Invitations:
		return s.importInvitation(ctx, rec)
	case store.Audit:
		return s.importAudit(ctx, rec)
	case store.RevokedFamilies, store.RevokedTokens:
		return s.importRevocation(ctx, kind, rec)
	case store.RefreshTokens:
		return s.importRefreshToken(ctx, rec)
	case store.BrowserSessions:
		return s.importBrowserSession(ctx, rec)
	}
	return false, fmt.Errorf("unknown kind %q: %w", kind, ErrInvalid)
}

func (s *Store) importSigningKey(ctx context.Context, rec json.RawMessage) (bool, error) {
	var k sessions.SigningKey
	if err := json.Unmarshal(rec, &k); err != nil {
		return false, err
	}
	return store.Absent(s.AddSigningKey(ctx, &k, false))
}

func (s *Store) importUserRecord(ctx context.Context, rec json.RawMessage) (bool, error) {
	var u grants.User
	if err := json.Unmarshal(rec, &u); err != nil {
		return false, err
	}
	if err := checkKeys("user", u.ID); err != nil {
		return false, err
	}
	if u.Email != "" {
		if err := s.rdb.SAdd(ctx, s.key("ue", lower(u.Email)), u.ID).Err(); err != nil {
			return false, err
		}
	}
	if err := s.indexUser(ctx, &u); err != nil {
		return false, err
	}
	n, err := importUser.Run(ctx, s.rdb, []string{s.key("u", u.ID)}, "id", u.ID, "email", u.Email,
		"ev", boolStr(u.EmailVerified), "name", u.Name, "pic", u.Picture,
		"ca", fmtTime(u.CreatedAt), "ua", fmtTime(u.UpdatedAt), "ll", fmtTime(u.LastLoginAt), "o", "import").Int()
	return n == 1, err
}

func (s *Store) importIdentity(ctx context.Context, rec json.RawMessage) (bool, error) {
	var id grants.Identity
	if err := json.Unmarshal(rec, &id); err != nil {
		return false, err
	}
	if err := checkKeys("identity", id.Issuer, id.Subject, id.UserID); err != nil {
		return false, err
	}
	if err := s.rdb.SAdd(ctx, s.key("ui", id.UserID), identitySuffix(id.Issuer, id.Subject)).Err(); err != nil {
		return false, err
	}
	res, err := s.runScript(ctx, claimIdentity, []string{s.identityKey(id.Issuer, id.Subject)}, []byte(rec))
	return err == nil && str(res, 0) == "ok", err
}

func (s *Store) importGrant(ctx context.Context, rec json.RawMessage) (bool, error) {
	var g grants.Grant
	if err := json.Unmarshal(rec, &g); err != nil {
		return false, err
	}
	if err := checkKeys("grant", g.UserID); err != nil {
		return false, err
	}
	args := []any{fmtTime(g.UpdatedAt), len(g.Roles)}
	for _, r := range g.Roles {
		args = append(args, r)
	}
	args = append(args, len(g.Invitations))
	for _, id := range g.Invitations {
		args = append(args, id)
	}
	for _, k := range slices.Sorted(maps.Keys(g.Claims)) {
		raw, err := json.Marshal(g.Claims[k])
		if err != nil {
			return false, err
		}
		args = append(args, k, raw)
	}
	n, err := s.run(ctx, importGrant, s.grantKeys(g.UserID)[:3], args...).Int()
	if n == 1 && err == nil && g.SignedOutAt != nil {
		// The sign-out instant, beside the script: only signed-out users have one.
		err = s.rdb.HSet(ctx, s.grantKeys(g.UserID)[0], "so", fmtTime(*g.SignedOutAt)).Err()
	}
	return n == 1, err
}

func (s *Store) importInvitation(ctx context.Context, rec json.RawMessage) (bool, error) {
	var inv grants.Invitation
	if err := json.Unmarshal(rec, &inv); err != nil {
		return false, err
	}
	if err := checkKeys("invitation", inv.ID, inv.TokenHash); err != nil {
		return false, err
	}
	if there, err := s.exists(ctx, s.invKey(inv.ID)); err != nil || there {
		return false, err
	}
	// Only a live pending invitation holds its external_id (a redeemed
	// one may share it with the pending one issued after it).
	pending := inv.EffectiveStatus(s.now()) == grants.StatusPending
	_, err := s.createInvitation(ctx, &inv, pending)
	var taken idTakenError
	if errors.As(err, &taken) {
		return false, nil
	}
	return err == nil, err
}

func (s *Store) importAudit(ctx context.Context, rec json.RawMessage) (bool, error) {
	var a grants.AuditRecord
	if err := json.Unmarshal(rec, &a); err != nil {
		return false, err
	}
	data, _ := s.auditKeys()
	if there, err := s.rdb.HExists(ctx, data, a.ID).Result(); err != nil || there {
		return false, err
	}
	return true, s.AppendAudit(ctx, &a)
}

func (s *Store) importRevocation(ctx context.Context, kind store.Kind, rec json.RawMessage) (bool, error) {
	var r store.Revocation
	if err := json.Unmarshal(rec, &r); err != nil {
		return false, err
	}
	if err := checkKeys("revocation", r.ID); err != nil {
		return false, err
	}
	key := s.familyMarker(r.ID)
	if kind == store.RevokedTokens {
		key = s.key("jti", r.ID)
	}
	if there, err := s.exists(ctx, key); err != nil || there {
		return false, err
	}
	return true, s.putMarker(ctx, "import revocation "+r.ID, key, r.Until)
}

func (s *Store) importRefreshToken(ctx context.Context, rec json.RawMessage) (bool, error) {
	// Raw: CreateRefreshToken would drop RotatedAt (a rotated token must
	// stay rotated, or presenting it again would not count as reuse).
	var rt sessions.RefreshToken
	if err := json.Unmarshal(rec, &rt); err != nil {
		return false, err
	}
	if err := checkRefresh("refresh token", &rt); err != nil {
		return false, err
	}
	e, fe, at, raw, err := s.refreshArgs(&rt)
	if err != nil {
		return false, err
	}
	if _, err := s.linkAndClaim(ctx, &rt, at); err != nil {
		return false, err
	}
	r := ""
	if rt.RotatedAt != nil {
		r = fmtTime(*rt.RotatedAt)
	}
	err = s.rdb.SetArgs(ctx, s.refreshKey(rt.FamilyID, rt.Hash), e+"|"+fe+"|"+r+"|"+string(raw),
		redis.SetArgs{Mode: "NX", ExpireAt: time.UnixMilli(at)}).Err()
	if errors.Is(err, redis.Nil) {
		return false, nil // already there
	}
	return err == nil, err
}

func (s *Store) importBrowserSession(ctx context.Context, rec json.RawMessage) (bool, error) {
	var bs sessions.BrowserSession
	if err := json.Unmarshal(rec, &bs); err != nil {
		return false, err
	}
	if err := checkKeys("browser session", bs.ID); err != nil {
		return false, err
	}
	if there, err := s.exists(ctx, s.key("bs", bs.ID)); err != nil || there {
		return false, err
	}
	return true, s.SaveBrowserSession(ctx, &bs)
}
