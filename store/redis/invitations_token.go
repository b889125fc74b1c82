package redis

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
)

// The token lookup (token hash → invitation ID) has two key forms:
//
//	{prefix}it:<token hash>    as the hash is written (lowercase hex): every version
//	{prefix}ib:<hash bytes>    the hex decoded (escaped as every key part): v3
//
// A v3 store writes ib: for a hash that is lowercase hex (grants.HashToken's
// form), 32 bytes shorter for a SHA-256; older versions read only it:, so
// below v3 it: is written. Every store reads both.

// tokenKeys are the lookup key s writes for hash and the other form, which
// stores of another format write ("" when hash has only one form).
func (s *Store) tokenKeys(hash string) (mine, other string) {
	text := s.key("it", hash)
	b, err := hex.DecodeString(hash)
	if err != nil || len(b) == 0 || hex.EncodeToString(b) != hash {
		return text, ""
	}
	bin := s.key("ib", string(b))
	if s.formatV3() {
		return bin, text
	}
	return text, bin
}

// tokenKey is the lookup key s writes for hash.
func (s *Store) tokenKey(hash string) string {
	k, _ := s.tokenKeys(hash)
	return k
}

// releaseToken removes id's lookup entries for hash, in both forms: the
// entry may have been written by a store of either format.
func (s *Store) releaseToken(ctx context.Context, hash, id string) {
	mine, other := s.tokenKeys(hash)
	s.release(ctx, mine, id)
	if other != "" {
		s.release(ctx, other, id)
	}
}

// tokenHolders reads, in one round trip, the IDs both lookup forms of hash
// name ("" for none), this store's form first.
func (s *Store) tokenHolders(ctx context.Context, hash string) ([2]string, error) {
	mine, other := s.tokenKeys(hash)
	var cmds [2]*redis.StringCmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		cmds[0] = p.Get(ctx, mine)
		if other != "" {
			cmds[1] = p.Get(ctx, other)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return [2]string{}, err
	}
	var ids [2]string
	for i, c := range cmds {
		if c == nil {
			continue
		}
		v, err := c.Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return [2]string{}, err
		}
		ids[i] = v
	}
	return ids, nil
}

// heldElsewhere is ErrConflict when other (the ID the other lookup form
// of hash names, "" for none) is an invitation besides id that holds hash:
// a store of the other format claimed it, which this store's claim cannot
// see.
func (s *Store) heldElsewhere(ctx context.Context, hash, id, other string) error {
	if other == "" || other == id {
		return nil
	}
	inv, _, err := s.loadInvitation(ctx, other)
	if err != nil {
		return err
	}
	if inv != nil && inv.TokenHash == hash {
		return fmt.Errorf("token hash: %w", grants.ErrConflict)
	}
	return nil
}

// invitationByHash follows the token lookup; nil when the hash is unknown or
// no longer the invitation's token.
func (s *Store) invitationByHash(ctx context.Context, hash string) (*grants.Invitation, string, error) {
	ids, err := s.tokenHolders(ctx, hash)
	if err != nil {
		return nil, "", err
	}
	for i, id := range ids {
		if id == "" || i == 1 && id == ids[0] {
			continue
		}
		inv, v, err := s.loadInvitation(ctx, id)
		if err != nil {
			return nil, "", err
		}
		if inv != nil && inv.TokenHash == hash {
			return inv, v, nil
		}
	}
	return nil, "", nil
}
