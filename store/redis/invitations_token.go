package redis

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
)

// The token lookup (token hash → invitation ID) has two forms:
//
//	{prefix}it:<token hash>        a key per hash, as the hash is written: every version
//	{prefix}ib:<bucket>            one of 256 hashes, field: the hash's bytes: v3
//
// A v3 store writes ib: for a hash that is lowercase hex of at least two
// bytes (grants.HashToken's form: 32). Small hashes are stored compactly
// by Redis (listpack, up to hash-max-listpack-entries), and a big one
// costs a dict entry per field rather than a key with its own dict entry,
// object and name: 136 → ~70 B per invitation at 2,000 invitations, ~110 B
// at a million (hashtable buckets). 256 keys spread over a cluster's slots.
// Older versions read only it:, so below v3 it: is written. Every store
// reads both.

// tokenKeys are the lookup entry s writes for hash and the other form,
// which stores of another format write (ok false when hash has only one).
func (s *Store) tokenKeys(hash string) (mine, other lookupEntry, ok bool) {
	text := lookupEntry{key: s.key("it", hash)}
	b, err := hex.DecodeString(hash)
	if err != nil || len(b) < 2 || hex.EncodeToString(b) != hash {
		return text, lookupEntry{}, false
	}
	bucket := lookupEntry{key: s.key("ib", tokenBucket(b)), field: string(b), inHash: true}
	if s.formatV3() {
		return bucket, text, true
	}
	return text, bucket, true
}

// tokenBucket is the bucket of the hash bytes b: FNV-1a of all of them, so
// that hashes alike in some bytes (not SHA-256 ones, say imported) still
// spread over the buckets.
func tokenBucket(b []byte) string {
	h := fnv.New32a()
	_, _ = h.Write(b)
	return strconv.Itoa(int(h.Sum32() & 0xff))
}

// tokenKey is the lookup entry s writes for hash.
func (s *Store) tokenKey(hash string) lookupEntry {
	e, _, _ := s.tokenKeys(hash)
	return e
}

// releaseToken removes id's lookup entries for hash, in both forms: the
// entry may have been written by a store of either format.
func (s *Store) releaseToken(ctx context.Context, hash, id string) {
	mine, other, ok := s.tokenKeys(hash)
	s.releaseEntry(ctx, mine, id)
	if ok {
		s.releaseEntry(ctx, other, id)
	}
}

// queueGet queues the read of e in p.
func queueGet(ctx context.Context, p redis.Pipeliner, e lookupEntry) *redis.StringCmd {
	if e.inHash {
		return p.HGet(ctx, e.key, e.field)
	}
	return p.Get(ctx, e.key)
}

// tokenHolders reads, in one round trip, the IDs both lookup forms of hash
// name ("" for none), this store's form first.
func (s *Store) tokenHolders(ctx context.Context, hash string) ([2]string, error) {
	mine, other, ok := s.tokenKeys(hash)
	var cmds [2]*redis.StringCmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		cmds[0] = queueGet(ctx, p, mine)
		if ok {
			cmds[1] = queueGet(ctx, p, other)
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
