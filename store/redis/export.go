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
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/sessions"
	"github.com/usher-oidc/usher/store"
)

var (
	_ store.Exporter = (*Store)(nil)
	_ store.Importer = (*Store)(nil)
)

// unesc reverses esc.
func unesc(s string) string {
	return strings.NewReplacer("%7B", "{", "%7D", "}", "%3A", ":", "%25", "%").Replace(s)
}

// glob escapes s for a SCAN MATCH pattern.
func glob(s string) string {
	return strings.NewReplacer(`\`, `\\`, "*", `\*`, "?", `\?`, "[", `\[`, "]", `\]`).Replace(s)
}

// scanKeys calls fn once for every key matching pattern, on every master of
// a cluster (SCAN may repeat a key: repeats are dropped). The keys are
// collected first, so fn runs one call at a time.
func (s *Store) scanKeys(ctx context.Context, pattern string, fn func(key string) error) error {
	var mu sync.Mutex
	seen := map[string]bool{}
	scan := func(ctx context.Context, c redis.Cmdable) error {
		iter := c.Scan(ctx, 0, pattern, 1000).Iterator()
		for iter.Next(ctx) {
			mu.Lock()
			seen[iter.Val()] = true
			mu.Unlock()
		}
		return iter.Err()
	}
	var err error
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return scan(ctx, c) })
	} else {
		err = scan(ctx, s.rdb)
	}
	if err != nil {
		return err
	}
	for _, k := range slices.Sorted(maps.Keys(seen)) {
		if err := fn(k); err != nil {
			return err
		}
	}
	return nil
}

// Export reads every record of kind (expired ones included, if Redis has not
// dropped them yet).
func (s *Store) Export(ctx context.Context, kind store.Kind, fn func(rec json.RawMessage) error) error {
	if err := s.export(ctx, kind, fn); err != nil {
		return fmt.Errorf("redisstore: export %s: %w", kind, err)
	}
	return nil
}

func emit(fn func(json.RawMessage) error, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return fn(raw)
}

// getString is GET with "" for a missing key.
func (s *Store) getString(ctx context.Context, key string) (string, error) {
	v, err := s.rdb.Get(ctx, key).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	return v, err
}

func (s *Store) export(ctx context.Context, kind store.Kind, fn func(json.RawMessage) error) error {
	p := glob(s.prefix)
	switch kind {
	case store.SigningKeys:
		all, err := s.rdb.HGetAll(ctx, s.prefix+"keys").Result()
		if err != nil {
			return err
		}
		for _, id := range slices.Sorted(maps.Keys(all)) {
			if err := fn(json.RawMessage(all[id])); err != nil {
				return err
			}
		}
		return nil
	case store.Users:
		return s.scanKeys(ctx, p+"u:*", func(k string) error {
			m, err := s.rdb.HGetAll(ctx, k).Result()
			if err != nil || len(m) == 0 {
				return err
			}
			u, err := userFromHash(m)
			if err != nil {
				return err
			}
			return emit(fn, u)
		})
	case store.Identities:
		return s.scanKeys(ctx, p+"id:*", func(k string) error {
			v, err := s.getString(ctx, k)
			if err != nil || v == "" {
				return err
			}
			return fn(json.RawMessage(v))
		})
	case store.Grants:
		// {g:<user>} and its :r, :i, :p companions: one grant per user.
		users := map[string]bool{}
		start := s.prefix + "{g:"
		if err := s.scanKeys(ctx, p+`\{g:*`, func(k string) error {
			if id, _, ok := strings.Cut(strings.TrimPrefix(k, start), "}"); ok {
				users[unesc(id)] = true
			}
			return nil
		}); err != nil {
			return err
		}
		for _, id := range slices.Sorted(maps.Keys(users)) {
			// The plain read, not GetGrant: exporting must not change the source.
			g, _, err := s.grantOp(ctx, id, "get", "", "", 0)
			if err != nil {
				return err
			}
			if err := emit(fn, g); err != nil {
				return err
			}
		}
		return nil
	case store.Invitations:
		ids, err := s.rdb.ZRange(ctx, s.prefix+"inv:t", 0, -1).Result()
		if err != nil {
			return err
		}
		for chunk := range slices.Chunk(ids, 500) {
			invs, err := s.loadInvitations(ctx, chunk)
			if err != nil {
				return err
			}
			for _, inv := range invs {
				if inv == nil {
					continue // stale index entry
				}
				if err := emit(fn, inv); err != nil {
					return err
				}
			}
		}
		return nil
	case store.Audit:
		data, _ := s.auditKeys()
		iter := s.rdb.HScan(ctx, data, 0, "", 1000).Iterator()
		seen := map[string]bool{}
		for iter.Next(ctx) {
			id := iter.Val()
			if !iter.Next(ctx) {
				break
			}
			if seen[id] {
				continue
			}
			seen[id] = true
			if err := fn(json.RawMessage(iter.Val())); err != nil {
				return err
			}
		}
		return iter.Err()
	case store.Idempotency:
		return s.scanKeys(ctx, p+"idem:*", func(k string) error {
			v, err := s.rdb.HMGet(ctx, k, "d", "s", "r").Result()
			if err != nil {
				return err
			}
			d, _ := v[0].(string)
			if d == "" {
				return nil
			}
			var rec grants.IdempotencyRecord
			if err := json.Unmarshal([]byte(d), &rec); err != nil {
				return fmt.Errorf("decode %s: %w", k, err)
			}
			st, _ := v[1].(string)
			rec.Status, _ = strconv.Atoi(st)
			if r, _ := v[2].(string); r != "" {
				rec.Response = json.RawMessage(r)
			}
			return emit(fn, &rec)
		})
	case store.Jobs:
		return s.exportJobs(ctx, fn)
	case store.RevokedFamilies, store.RevokedTokens:
		pattern, start, end := p+`\{f:*}:rev`, s.prefix+"{f:", "}:rev"
		if kind == store.RevokedTokens {
			pattern, start, end = p+"jti:*", s.prefix+"jti:", ""
		}
		return s.scanKeys(ctx, pattern, func(k string) error {
			v, err := s.getString(ctx, k)
			if err != nil || v == "" {
				return err
			}
			us, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return fmt.Errorf("decode %s: %w", k, err)
			}
			id := unesc(strings.TrimSuffix(strings.TrimPrefix(k, start), end))
			return emit(fn, store.Revocation{ID: id, Until: time.UnixMicro(us).UTC()})
		})
	case store.RefreshTokens:
		return s.scanKeys(ctx, p+`\{f:*}:t:*`, func(k string) error {
			v, err := s.getString(ctx, k)
			if err != nil || v == "" {
				return err
			}
			rt, err := decodeRefresh(v)
			if err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
			return emit(fn, rt)
		})
	case store.BrowserSessions:
		return s.scanKeys(ctx, p+"bs:*", func(k string) error {
			v, err := s.getString(ctx, k)
			if err != nil || v == "" {
				return err
			}
			return fn(json.RawMessage(v))
		})
	}
	return fmt.Errorf("unknown kind %q: %w", kind, ErrInvalid)
}

// exportJobs reads the {jobs} hashes: the JSON plus the fields that change.
func (s *Store) exportJobs(ctx context.Context, fn func(json.RawMessage) error) error {
	keys := s.jobKeys("")
	var hashes [5]map[string]string
	for i := range hashes {
		m, err := s.rdb.HGetAll(ctx, keys[i]).Result()
		if err != nil {
			return err
		}
		hashes[i] = m
	}
	for _, id := range slices.Sorted(maps.Keys(hashes[0])) {
		var j grants.Job
		if err := json.Unmarshal([]byte(hashes[0][id]), &j); err != nil {
			return fmt.Errorf("decode job %s: %w", id, err)
		}
		j.Attempts, _ = strconv.Atoi(hashes[1][id])
		var err1, err2 error
		j.RunAt, err1 = parseTime(hashes[2][id])
		j.LeaseUntil, err2 = parseTime(hashes[3][id])
		if err := errors.Join(err1, err2); err != nil {
			return fmt.Errorf("decode job %s: %w", id, err)
		}
		j.LastError = hashes[4][id]
		if err := emit(fn, &j); err != nil {
			return err
		}
	}
	return nil
}

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
		var k sessions.SigningKey
		if err := json.Unmarshal(rec, &k); err != nil {
			return false, err
		}
		return store.Absent(s.AddSigningKey(ctx, &k, false))
	case store.Users:
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
		n, err := importUser.Run(ctx, s.rdb, []string{s.key("u", u.ID)}, "id", u.ID, "email", u.Email,
			"ev", boolStr(u.EmailVerified), "name", u.Name, "pic", u.Picture,
			"ca", fmtTime(u.CreatedAt), "ua", fmtTime(u.UpdatedAt), "ll", fmtTime(u.LastLoginAt), "o", "import").Int()
		return n == 1, err
	case store.Identities:
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
	case store.Grants:
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
		n, err := importGrant.Run(ctx, s.rdb, s.grantKeys(g.UserID)[:3], args...).Int()
		return n == 1, err
	case store.Invitations:
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
	case store.Audit:
		var a grants.AuditRecord
		if err := json.Unmarshal(rec, &a); err != nil {
			return false, err
		}
		data, _ := s.auditKeys()
		if there, err := s.rdb.HExists(ctx, data, a.ID).Result(); err != nil || there {
			return false, err
		}
		return true, s.AppendAudit(ctx, &a)
	case store.RevokedFamilies, store.RevokedTokens:
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
	case store.RefreshTokens:
		// Raw: CreateRefreshToken would drop RotatedAt (a rotated token must
		// stay rotated, or presenting it again would not count as reuse).
		var rt sessions.RefreshToken
		if err := json.Unmarshal(rec, &rt); err != nil {
			return false, err
		}
		if err := checkRefresh("refresh token", &rt); err != nil {
			return false, err
		}
		e, fe, at, raw, err := refreshArgs(&rt)
		if err != nil {
			return false, err
		}
		if err := s.linkSessionFamily(ctx, &rt); err != nil {
			return false, err
		}
		if _, err := s.claimRefreshIndex(ctx, rt.Hash, rt.FamilyID, at); err != nil {
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
	case store.BrowserSessions:
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
	return false, fmt.Errorf("unknown kind %q: %w", kind, ErrInvalid)
}
