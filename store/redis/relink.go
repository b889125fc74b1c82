package redis

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
)

// relinkIdentity replaces the identity KEYS[1] if it is still the record
// ARGV[1] (read and checked by the caller, in either format): {'ok'},
// {'notfound'} or {'changed'}. ARGV[2] the new record.
var relinkIdentity = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if not cur then return {'notfound'} end
if cur ~= ARGV[1] then return {'changed'} end
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
		suffix := identitySuffix(id.Issuer, id.Subject)
		if err := s.listIdentity(ctx, id.UserID, suffix); err != nil {
			return err
		}
		owner, err := s.moveIdentity(ctx, id, fromUserID)
		if err != nil {
			if owner != id.UserID { // not ours: take our index entry back
				s.unlistIdentity(context.WithoutCancel(ctx), id.UserID, suffix)
			}
			return err
		}
		s.unlistIdentity(ctx, fromUserID, suffix)
		return nil
	}()
	if err != nil {
		return fmt.Errorf("redisstore: relink identity: %w", err)
	}
	return nil
}

// moveIdentity points the identity at id.UserID if it belongs to
// fromUserID: the record is read, checked and replaced only if unchanged
// meanwhile (else read again). On a conflict it returns the owner.
func (s *Store) moveIdentity(ctx context.Context, id grants.Identity, fromUserID string) (string, error) {
	key := s.identityKey(id.Issuer, id.Subject)
	for range 5 {
		raw, err := s.rdb.Get(ctx, key).Bytes()
		if errors.Is(err, redis.Nil) {
			return "", fmt.Errorf("identity: %w", grants.ErrNotFound)
		}
		if err != nil {
			return "", err
		}
		old, err := decodeIdentity(id.Issuer, id.Subject, raw)
		if err != nil {
			return "", err
		}
		if old.UserID != fromUserID {
			return old.UserID, fmt.Errorf("identity is linked to another user: %w", grants.ErrConflict)
		}
		ident := id
		ident.CreatedAt = old.CreatedAt
		next, err := s.encodeIdentity(&ident)
		if err != nil {
			return "", err
		}
		res, err := s.runScript(ctx, relinkIdentity, []string{key}, raw, next)
		if err != nil {
			return "", err
		}
		switch str(res, 0) {
		case "ok":
			return "", nil
		case "notfound":
			return "", fmt.Errorf("identity: %w", grants.ErrNotFound)
		}
	}
	return "", fmt.Errorf("identity changing meanwhile: %w", grants.ErrConflict)
}
