package redis

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
)

// The token lookup (token hash → invitation ID) has three forms:
//
//	{prefix}it:<token hash>        a key per hash, as the hash is written: below v3,
//	                               and for a hash not in hex
//	{prefix}ib:<bucket>            one of 256 hashes, field: the hash's bytes: v3, v4
//	{prefix}ih:<bucket>            one of 256 hashes, field: 4 more bytes of the
//	                               hash's FNV-1a (64 bits), value: the ID packed
//	                               (idpack.go): v5
//
// A v3 or v4 store writes ib: for a hash that is lowercase hex of at least
// two bytes (grants.HashToken's form: 32), else it:. Small hashes are stored
// compactly by Redis (listpack, up to hash-max-listpack-entries, 512 by
// default), and a big one costs a dict entry per field rather than a key
// with its own dict entry, object and name: 136 → ~70 B per invitation at
// 2,000 invitations, ~110 B at a million (hashtable buckets). 256 keys
// spread over a cluster's slots.
//
// A v5 store writes ih: for every hash: 4 + 18 bytes a field rather than
// 32 + 26 (an ID like inv_ and 22 characters), 38 B per invitation at
// 2,000 and 29 B at 100,000 (still listpack: 390 fields a hash) against
// 75 and 68 (BenchmarkMemoryPerRecord, BenchmarkMemoryPerInvitationAtScale).
// Forty bits (the bucket's and the field's) of a 64-bit hash can be alike
// for two token hashes (about one pair in two at a million invitations):
// readers re-check the record's TokenHash, so a reader that meets the
// other invitation reads on, and the writer that finds the field held by
// an invitation with another hash (a collision, not a stale entry) writes
// the exact form instead (ib:, or it:), as it does for an ID that cannot
// be packed. Every store reads every form.

// tokenForms are the lookup entries hash may have, the one s writes first
// and, from v5, the one it writes when that one cannot take the ID.
func (s *Store) tokenForms(hash string) []lookupEntry {
	text := lookupEntry{key: s.key("it", hash)}
	h := s.shortSum(hash)
	field := []byte{byte(h >> 8), byte(h >> 16), byte(h >> 24), byte(h >> 32)}
	short := lookupEntry{key: s.key("ih", strconv.Itoa(int(h&0xff))), field: string(field), inHash: true, short: true}
	b, err := hex.DecodeString(hash)
	if err != nil || len(b) < 2 || hex.EncodeToString(b) != hash {
		if s.formatV5() {
			return []lookupEntry{short, text}
		}
		return []lookupEntry{text, short}
	}
	bucket := lookupEntry{key: s.key("ib", tokenBucket(b)), field: string(b), inHash: true}
	switch {
	case s.formatV5():
		return []lookupEntry{short, bucket, text}
	case s.formatV3():
		return []lookupEntry{bucket, text, short}
	}
	return []lookupEntry{text, bucket, short}
}

// shortSum is the 64 bits of hash that pick its ih: bucket and field.
func (s *Store) shortSum(hash string) uint64 {
	if s.tokenSum != nil {
		return s.tokenSum(hash)
	}
	sum := fnv.New64a()
	_, _ = sum.Write([]byte(hash))
	return sum.Sum64()
}

// tokenWrite is tokenForms and the index of the one s writes for id first:
// not ih: when id cannot be packed.
func (s *Store) tokenWrite(hash, id string) ([]lookupEntry, int) {
	forms := s.tokenForms(hash)
	if _, ok := packID(id); forms[0].short && !ok {
		return forms, 1
	}
	return forms, 0
}

// tokenBucket is the bucket of the hash bytes b: FNV-1a of all of them, so
// that hashes alike in some bytes (not SHA-256 ones, say imported) still
// spread over the buckets.
func tokenBucket(b []byte) string {
	h := fnv.New32a()
	_, _ = h.Write(b)
	return strconv.Itoa(int(h.Sum32() & 0xff))
}

// releaseToken removes id's lookup entries for hash, in every form (the
// entry may have been written by a store of any format), but those it
// shares with keep, id's token hash now: an ih: field two hashes map to.
func (s *Store) releaseToken(ctx context.Context, hash, keep, id string) {
	kept := s.tokenForms(keep)
	for _, e := range s.tokenForms(hash) {
		if !slices.Contains(kept, e) {
			s.releaseEntry(ctx, e, id)
		}
	}
}

// queueGet queues the read of e in p.
func queueGet(ctx context.Context, p redis.Pipeliner, e lookupEntry) *redis.StringCmd {
	if e.inHash {
		return p.HGet(ctx, e.key, e.field)
	}
	return p.Get(ctx, e.key)
}

// queueHolders queues the reads of forms, but for skip (-1: none).
func queueHolders(ctx context.Context, p redis.Pipeliner, forms []lookupEntry, skip int) []*redis.StringCmd {
	cmds := make([]*redis.StringCmd, len(forms))
	for i, e := range forms {
		if i != skip {
			cmds[i] = queueGet(ctx, p, e)
		}
	}
	return cmds
}

// holdersOf are the IDs the reads of queueHolders name, per form ("" for
// none or not read).
func holdersOf(forms []lookupEntry, cmds []*redis.StringCmd) ([]string, error) {
	ids := make([]string, len(forms))
	for i, c := range cmds {
		if c == nil {
			continue
		}
		v, err := c.Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, err
		}
		ids[i] = forms[i].id(v)
	}
	return ids, nil
}

// tokenHolders reads, in one round trip, the IDs every lookup form of hash
// names ("" for none), in tokenForms' order.
func (s *Store) tokenHolders(ctx context.Context, hash string) ([]string, error) {
	forms := s.tokenForms(hash)
	var cmds []*redis.StringCmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		cmds = queueHolders(ctx, p, forms, -1)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	return holdersOf(forms, cmds)
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
// no longer the invitation's token. An ih: field may name an invitation
// whose hash only shares the field's bytes with this one: the next form
// is read too.
func (s *Store) invitationByHash(ctx context.Context, hash string) (*grants.Invitation, string, error) {
	ids, err := s.tokenHolders(ctx, hash)
	if err != nil {
		return nil, "", err
	}
	for i, id := range ids {
		if id == "" || slices.Contains(ids[:i], id) {
			continue
		}
		inv, v, raw, err := s.loadInvitationRecord(ctx, id)
		if err != nil {
			return nil, "", err
		}
		if inv != nil && inv.TokenHash == hash {
			if memo := grants.ReadMemoOf(ctx); memo != nil {
				memo.Keep(tokenMemoKey(hash), id+"\x00"+raw)
			}
			return inv, v, nil
		}
	}
	return nil, "", nil
}

// tokenMemoKey names, in a use case's grants.ReadMemo, the invitation
// record read for token hash.
func tokenMemoKey(hash string) string { return "invitation by token " + hash }

// keptInvitationByHash is invitationByHash answered from the use case's
// memo when an earlier read there kept the record (once: a retry reads
// again). Only for a write that checks the version it read.
func (s *Store) keptInvitationByHash(ctx context.Context, hash string) (*grants.Invitation, string, error) {
	if kept, ok := grants.ReadMemoOf(ctx).Take(tokenMemoKey(hash)); ok {
		id, raw, _ := strings.Cut(kept, "\x00")
		if inv, v, err := decodeInvitation(id, raw); err == nil && inv.TokenHash == hash {
			return inv, v, nil
		}
	}
	return s.invitationByHash(ctx, hash)
}
