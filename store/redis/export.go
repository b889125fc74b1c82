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
	switch kind {
	case store.SigningKeys:
		return s.exportSigningKeys(ctx, fn)
	case store.Users:
		return s.exportUsers(ctx, fn)
	case store.Identities:
		return s.exportIdentities(ctx, fn)
	case store.Grants:
		return s.exportGrants(ctx, fn)
	case store.Invitations:
		return s.exportInvitations(ctx, fn)
	case store.Audit:
		return s.exportAudit(ctx, fn)
	case store.Idempotency:
		return s.exportIdempotency(ctx, fn)
	case store.Jobs:
		return s.exportJobs(ctx, fn)
	case store.RevokedFamilies, store.RevokedTokens:
		return s.exportRevocations(ctx, kind, fn)
	case store.RefreshTokens:
		return s.exportRefreshTokens(ctx, fn)
	case store.BrowserSessions:
		return s.exportBrowserSessions(ctx, fn)
	}
	return fmt.Errorf("unknown kind %q: %w", kind, ErrInvalid)
}

func (s *Store) exportSigningKeys(ctx context.Context, fn func(json.RawMessage) error) error {
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
}

func (s *Store) exportUsers(ctx context.Context, fn func(json.RawMessage) error) error {
	p := glob(s.prefix)
	return s.scanKeys(ctx, p+"u:*", func(k string) error {
		u, err := s.loadUser(ctx, unesc(strings.TrimPrefix(k, s.prefix+"u:")))
		if err != nil || u == nil {
			return err
		}
		return emit(fn, u)
	})
}

func (s *Store) exportIdentities(ctx context.Context, fn func(json.RawMessage) error) error {
	p := glob(s.prefix)
	return s.scanKeys(ctx, p+"id:*", func(k string) error {
		v, err := s.getString(ctx, k)
		if err != nil || v == "" {
			return err
		}
		if v[0] != v2Marker {
			return fn(json.RawMessage(v)) // v1 is the export's JSON already
		}
		id, err := decodeIdentityAt(strings.TrimPrefix(k, s.prefix+"id:"), []byte(v))
		if err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		return emit(fn, id)
	})
}

func (s *Store) exportGrants(ctx context.Context, fn func(json.RawMessage) error) error {
	p := glob(s.prefix)
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
		g, _, err := s.grantOp(ctx, id, grantRead...)
		if err != nil {
			return err
		}
		if err := emit(fn, g); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) exportInvitations(ctx context.Context, fn func(json.RawMessage) error) error {
	ids, err := s.allInvitationIDs(ctx)
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
}

func (s *Store) exportAudit(ctx context.Context, fn func(json.RawMessage) error) error {
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
}

func (s *Store) exportIdempotency(ctx context.Context, fn func(json.RawMessage) error) error {
	p := glob(s.prefix)
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
}

func (s *Store) exportRevocations(ctx context.Context, kind store.Kind, fn func(json.RawMessage) error) error {
	p := glob(s.prefix)
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
}

func (s *Store) exportRefreshTokens(ctx context.Context, fn func(json.RawMessage) error) error {
	p := glob(s.prefix)
	return s.scanKeys(ctx, p+`\{f:*}:t:*`, func(k string) error {
		v, err := s.getString(ctx, k)
		if err != nil || v == "" {
			return err
		}
		family, hash, err := s.refreshKeyParts(k)
		if err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		rt, err := decodeRefresh(family, hash, v)
		if err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		return emit(fn, rt)
	})
}

func (s *Store) exportBrowserSessions(ctx context.Context, fn func(json.RawMessage) error) error {
	p := glob(s.prefix)
	return s.scanKeys(ctx, p+"bs:*", func(k string) error {
		v, err := s.getString(ctx, k)
		if err != nil || v == "" {
			return err
		}
		if v[0] != v2Marker {
			return fn(json.RawMessage(v)) // v1 is the export's JSON already
		}
		bs, err := decodeBrowserSession(unesc(strings.TrimPrefix(k, s.prefix+"bs:")), []byte(v))
		if err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		return emit(fn, bs)
	})
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
