package redis

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
)

// relinkIdentity moves an identity to another user if it still belongs to
// ARGV[1]: {'ok'}, {'notfound'} or {'conflict', its user}. KEYS[1]
// identity; ARGV[2] the new JSON.
var relinkIdentity = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if not cur then return {'notfound'} end
local owner = cjson.decode(cur)['user_id']
if owner ~= ARGV[1] then return {'conflict', owner} end
redis.call('SET', KEYS[1], ARGV[2])
return {'ok'}
`)

// RelinkIdentity: see grants.Store. The new user's index entry goes in
// first and the old one out last: Identities filters entries whose
// identity names another user, so a crash in between lists nothing wrong.
func (s *Store) RelinkIdentity(ctx context.Context, id grants.Identity, fromUserID string) error {
	if err := checkKeys("redisstore: relink identity", id.Issuer, id.Subject, id.UserID, fromUserID); err != nil {
		return err
	}
	err := func() error {
		if err := s.requireUser(ctx, id.UserID); err != nil {
			return err
		}
		var old grants.Identity
		switch raw, err := s.rdb.Get(ctx, s.identityKey(id.Issuer, id.Subject)).Bytes(); {
		case err == redis.Nil:
			return fmt.Errorf("identity: %w", grants.ErrNotFound)
		case err != nil:
			return err
		default:
			if err := json.Unmarshal(raw, &old); err != nil {
				return fmt.Errorf("decode identity: %w", err)
			}
		}
		ident := id
		ident.CreatedAt = old.CreatedAt
		raw, err := json.Marshal(&ident)
		if err != nil {
			return err
		}
		suffix := identitySuffix(id.Issuer, id.Subject)
		if err := s.rdb.SAdd(ctx, s.key("ui", id.UserID), suffix).Err(); err != nil {
			return err
		}
		res, err := s.runScript(ctx, relinkIdentity, []string{s.identityKey(id.Issuer, id.Subject)}, fromUserID, raw)
		if err != nil {
			return err
		}
		switch str(res, 0) {
		case "notfound":
			return fmt.Errorf("identity: %w", grants.ErrNotFound)
		case "conflict":
			if str(res, 1) != id.UserID { // not ours: take our index entry back
				_ = s.rdb.SRem(context.WithoutCancel(ctx), s.key("ui", id.UserID), suffix).Err()
			}
			return fmt.Errorf("identity is linked to another user: %w", grants.ErrConflict)
		}
		return s.rdb.SRem(ctx, s.key("ui", fromUserID), suffix).Err()
	}()
	if err != nil {
		return fmt.Errorf("redisstore: relink identity: %w", err)
	}
	return nil
}
