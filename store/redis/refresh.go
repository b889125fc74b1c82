package redis

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/sessions"
)

// --- refresh tokens ---
//
// {prefix}{f:<family>}:t:<hash> = "e|fe|rotated_at|payload" (v1 JSON or v2, recordformat_sessions.go): the token, in its family's
// slot with the family's revocation marker {prefix}{f:<family>}:rev, so the
// rotation script sees old token, next token and marker together.
// {prefix}rth:<hash> = family: the lookup from the hash to the family, in
// its own slot, which versions before record format v3 read (they were
// given only the hash). This version is given the family with the hash (the
// token value names it) and never reads it; it writes it below v3, for the
// older replicas of a rollout, before the token, so a crash between the two
// leaves only a dangling lookup.

func (s *Store) refreshKey(family, hash string) string {
	return s.tagged("f", family) + ":t:" + esc(hash)
}

func (s *Store) familyMarker(family string) string { return s.tagged("f", family) + ":rev" }

// refreshDeadline is when a link is dead: its idle expiry or, if earlier, its
// family's absolute one.
func refreshDeadline(rt *sessions.RefreshToken) time.Time {
	if !rt.FamilyExpiresAt.IsZero() && rt.FamilyExpiresAt.Before(rt.ExpiresAt) {
		return rt.FamilyExpiresAt
	}
	return rt.ExpiresAt
}

func refreshExpired(expiresAt, familyExpiresAt, now time.Time) bool {
	return expired(expiresAt, now) || (!familyExpiresAt.IsZero() && expired(familyExpiresAt, now))
}

func checkRefresh(what string, rt *sessions.RefreshToken) error {
	if rt == nil {
		return fmt.Errorf("%s: nil: %w", what, ErrInvalid)
	}
	if err := checkKeys(what, rt.Hash, rt.FamilyID); err != nil {
		return err
	}
	if rt.ExpiresAt.IsZero() {
		return fmt.Errorf("%s: no expiry: %w", what, ErrInvalid)
	}
	return nil
}

// refreshArgs returns the stored form of rt: e, fe, expire-at, payload
// (RotatedAt lives in field r).
func (s *Store) refreshArgs(rt *sessions.RefreshToken) (string, string, int64, []byte, error) {
	raw, err := s.encodeRefresh(rt)
	fe := ""
	if !rt.FamilyExpiresAt.IsZero() {
		fe = microsStr(rt.FamilyExpiresAt)
	}
	return microsStr(rt.ExpiresAt), fe, expireAtMS(refreshDeadline(rt)), raw, err
}

// linkAndClaim links rt's family to its session (addSessionFamily) and
// claims rt's index entry (claimRefreshIndex), both before the token is
// stored, in one round trip where they can share one.
func (s *Store) linkAndClaim(ctx context.Context, rt *sessions.RefreshToken, expireAt int64) (bool, error) {
	if rt.SessionID == "" {
		return s.claimRefreshIndex(ctx, rt.Hash, rt.FamilyID, expireAt)
	}
	if err := checkKeys("redisstore: link session family", rt.SessionID); err != nil {
		return false, err
	}
	// The session's link to the family first: a crash before the token is
	// stored leaves a link to a family with no token, which is harmless,
	// never a token sign-out cannot reach.
	link := scriptCall{addSessionFamily, []string{s.sessionFamilies(rt.SessionID)}, []any{rt.FamilyID, expireAtMS(rt.FamilyExpiresAt)}}
	claim := scriptCall{claimIndex, []string{s.key("rth", rt.Hash)}, []any{rt.FamilyID, "0", expireAt}}
	res, err := s.runTogether(ctx, link, claim)
	if err != nil {
		return false, err
	}
	return s.claimRefreshIndexFrom(ctx, rt.Hash, rt.FamilyID, expireAt, res[1])
}

// claimRefreshIndex points rth:<hash> at family. It reports whether it
// created the entry, and ErrConflict when a live token of another family has
// this hash.
func (s *Store) claimRefreshIndex(ctx context.Context, hash, family string, expireAt int64) (bool, error) {
	return s.claimRefreshIndexFrom(ctx, hash, family, expireAt, nil)
}

// claimRefreshIndexFrom is claimRefreshIndex given the reply of its first
// claimIndex run, if it ran already (nil: not yet).
func (s *Store) claimRefreshIndexFrom(ctx context.Context, hash, family string, expireAt int64, first []any) (bool, error) {
	held := func(other string) (bool, error) {
		_, live, err := s.loadRefresh(ctx, other, hash)
		return live, err
	}
	created, err := s.claimLookup(ctx, s.key("rth", hash), []any{family, "0", expireAt}, first, held)
	if errors.Is(err, errLookupHeld) {
		err = sessions.ErrConflict
	}
	return created, err
}

// decodeRefresh parses a stored token "e|fe|r|payload" (either record
// format) of family with this hash.
func decodeRefresh(family, hash, v string) (*sessions.RefreshToken, error) {
	parts := strings.SplitN(v, "|", 4)
	if len(parts) != 4 {
		return nil, errors.New("malformed refresh token record")
	}
	rt, err := decodeRefreshPayload(family, hash, parts[3])
	if err != nil {
		return nil, err
	}
	if parts[2] != "" {
		at, err := parseTime(parts[2])
		if err != nil {
			return nil, fmt.Errorf("decode rotated_at: %w", err)
		}
		rt.RotatedAt = &at
	}
	return rt, nil
}

// loadRefresh reads a token of family; live reports whether it exists and is
// unexpired at s.now() (revocation aside).
func (s *Store) loadRefresh(ctx context.Context, family, hash string) (*sessions.RefreshToken, bool, error) {
	v, err := s.rdb.Get(ctx, s.refreshKey(family, hash)).Result()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	rt, err := decodeRefresh(family, hash, v)
	if err != nil {
		return nil, false, err
	}
	return rt, !refreshExpired(rt.ExpiresAt, rt.FamilyExpiresAt, s.now()), nil
}

func (s *Store) CreateRefreshToken(ctx context.Context, rt *sessions.RefreshToken) error {
	if err := checkRefresh("redisstore: create refresh token", rt); err != nil {
		return err
	}
	e, fe, at, raw, err := s.refreshArgs(rt)
	if err != nil {
		return fmt.Errorf("redisstore: create refresh token: %w", err)
	}
	create := scriptCall{createRefresh, []string{s.refreshKey(rt.FamilyID, rt.Hash)}, []any{microsStr(s.now()), e, fe, at, raw}}
	var (
		res     []any
		claimed bool
	)
	if s.formatV3() {
		res, err = s.linkThenCreate(ctx, rt, create, e+"|"+fe+"||"+string(raw))
	} else if claimed, err = s.linkAndClaim(ctx, rt, at); err == nil {
		res, err = s.runScript(ctx, create.sc, create.keys, create.args...)
	}
	if err == nil {
		err = outcome(str(res, 0), map[string]error{"conflict": sessions.ErrConflict})
	}
	if err != nil {
		if claimed && errors.Is(err, sessions.ErrConflict) {
			s.release(ctx, s.key("rth", rt.Hash), rt.FamilyID)
		}
		return fmt.Errorf("redisstore: create refresh token: %w", err)
	}
	return nil
}

// linkThenCreate runs create (createRefresh) after linking rt's family to
// its session, in one round trip on one master, where Redis applies the
// link first. Record format v3 writes no rth: lookup (every v3 reader is
// told the family), so nothing else has to come first. Should the link fail
// while the token was stored, the token is deleted again: a token that
// sign-out cannot reach must not outlive the refusal (stored: the value
// create stores).
func (s *Store) linkThenCreate(ctx context.Context, rt *sessions.RefreshToken, create scriptCall, stored string) ([]any, error) {
	if rt.SessionID == "" {
		return s.runScript(ctx, create.sc, create.keys, create.args...)
	}
	if err := checkKeys("redisstore: link session family", rt.SessionID); err != nil {
		return nil, err
	}
	link := scriptCall{addSessionFamily, []string{s.sessionFamilies(rt.SessionID)}, []any{rt.FamilyID, expireAtMS(rt.FamilyExpiresAt)}}
	if !s.oneMaster() {
		res, err := s.runTogether(ctx, link, create)
		if err != nil {
			return nil, err
		}
		return res[1], nil
	}
	var linked, created *pipedScript
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		linked, created = link.queue(ctx, p), create.queue(ctx, p)
		return nil
	})
	res, err := created.reply(ctx, s.rdb)
	if _, lerr := linked.reply(ctx, s.rdb); lerr != nil {
		if err == nil && str(res, 0) == "ok" {
			s.release(ctx, create.keys[0], stored)
		}
		return nil, lerr
	}
	return res, err
}

// release deletes an index entry or claim if it is still value; failures are
// only logged: a dangling entry is re-checked by every reader.
func (s *Store) release(ctx context.Context, key, value string) {
	if err := delIfEq.Run(context.WithoutCancel(ctx), s.rdb, []string{key}, value).Err(); err != nil {
		s.log.Warn("redisstore: releasing index entry", "key", key, "err", err)
	}
}

// GetRefreshToken returns the record alongside ErrRevoked, for logging. The
// token and its family's marker share a slot: one round trip.
func (s *Store) GetRefreshToken(ctx context.Context, family, hash string) (*sessions.RefreshToken, error) {
	if err := checkKeys("redisstore: get refresh token", family, hash); err != nil {
		return nil, err
	}
	var read refreshRead
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		read = s.queueRefreshRead(ctx, p, family, hash)
		return nil
	})
	return read.result(s)
}

// refreshRead is GetRefreshToken's reads (the token, its family's
// revocation marker: one slot), queued in a pipeline.
type refreshRead struct {
	family, hash string
	tok, mark    *redis.StringCmd
}

func (s *Store) queueRefreshRead(ctx context.Context, p redis.Pipeliner, family, hash string) refreshRead {
	return refreshRead{family: family, hash: hash,
		tok: p.Get(ctx, s.refreshKey(family, hash)), mark: p.Get(ctx, s.familyMarker(family))}
}

// result is GetRefreshToken's answer once the pipeline ran.
func (q refreshRead) result(s *Store) (*sessions.RefreshToken, error) {
	for _, c := range []*redis.StringCmd{q.tok, q.mark} {
		if err := c.Err(); err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("redisstore: get refresh token: %w", err)
		}
	}
	now := s.now()
	if errors.Is(q.tok.Err(), redis.Nil) {
		return nil, fmt.Errorf("redisstore: get refresh token: %w", sessions.ErrNotFound)
	}
	rt, err := decodeRefresh(q.family, q.hash, q.tok.Val())
	if err != nil {
		return nil, fmt.Errorf("redisstore: get refresh token: %w", err)
	}
	if refreshExpired(rt.ExpiresAt, rt.FamilyExpiresAt, now) {
		return nil, fmt.Errorf("redisstore: get refresh token: %w", sessions.ErrNotFound)
	}
	if markerLive(q.mark.Val(), now) {
		return rt, fmt.Errorf("redisstore: get refresh token: family %s: %w", rt.FamilyID, sessions.ErrRevoked)
	}
	return rt, nil
}

// GetRefreshTokenWithUser is GetRefreshToken with UserAndGrant of userID
// in the same round trip (on one master; one after the other on a
// cluster): a refresh whose token names its subject reads what its tokens
// carry without a second trip. err is the token read's; ug is what
// UserAndGrant would have answered.
func (s *Store) GetRefreshTokenWithUser(ctx context.Context, family, hash, userID string) (*sessions.RefreshToken, grants.UserGrant, error) {
	if err := checkKeys("redisstore: get refresh token", family, hash, userID); err != nil {
		return nil, grants.UserGrant{}, err
	}
	if !s.oneMaster() {
		rt, err := s.GetRefreshToken(ctx, family, hash)
		if err != nil {
			return rt, grants.UserGrant{}, err
		}
		return rt, s.userGrant(ctx, userID), nil
	}
	var read refreshRead
	var user *userGrantRead
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		read = s.queueRefreshRead(ctx, p, family, hash)
		user = s.queueUserAndGrant(ctx, p, userID)
		return nil
	})
	rt, err := read.result(s)
	return rt, user.answer(ctx, s), err
}

func markerLive(v string, now time.Time) bool {
	if v == "" {
		return false
	}
	until, err := strconv.ParseInt(v, 10, 64)
	return err == nil && until > micros(now)
}

// RotateRefreshToken runs the rotation script on the family's slot, which
// re-validates everything atomically. The old token is looked for in next's
// family only (rotation keeps the family). Below record format v3 the
// successor's rth: lookup, which older replicas read, is written before the
// script, so a successor handed out is always findable by them; a refused
// rotation removes it again.
func (s *Store) RotateRefreshToken(ctx context.Context, oldHash string, next *sessions.RefreshToken) error {
	call, claimed, err := s.rotateCall(ctx, oldHash, next)
	if err != nil {
		return err
	}
	res, err := s.runScript(ctx, call.sc, call.keys, call.args...)
	return s.rotated(ctx, next, claimed, res, err)
}

// RotateRefreshTokenWithUser is RotateRefreshToken with UserAndGrant of
// userID in the same round trip (on one master at record format v3 and
// later; one after the other otherwise): a refresh that knows its family's
// data before reading the store (a sealed refresh token, broker
// refreshseal.go) rotates and reads what its tokens carry in one trip. ug
// is what UserAndGrant would have answered; it is read whatever the
// rotation's outcome, and returned only when the rotation was made.
func (s *Store) RotateRefreshTokenWithUser(ctx context.Context, oldHash string, next *sessions.RefreshToken, userID string) (grants.UserGrant, error) {
	if err := checkKeys("redisstore: rotate refresh token", userID); err != nil {
		return grants.UserGrant{}, err
	}
	if !s.oneMaster() || !s.formatV3() {
		if err := s.RotateRefreshToken(ctx, oldHash, next); err != nil {
			return grants.UserGrant{}, err
		}
		return s.userGrant(ctx, userID), nil
	}
	call, _, err := s.rotateCall(ctx, oldHash, next) // v3 claims no rth: entry
	if err != nil {
		return grants.UserGrant{}, err
	}
	return s.runWithUser(ctx, call, userID, func(res []any, err error) error { return s.rotated(ctx, next, false, res, err) })
}

// rotateCall checks a rotation of oldHash to next and is its script call;
// below record format v3 it first claims next's rth: entry (claimed).
func (s *Store) rotateCall(ctx context.Context, oldHash string, next *sessions.RefreshToken) (scriptCall, bool, error) {
	if err := checkKeys("redisstore: rotate refresh token", oldHash); err != nil {
		return scriptCall{}, false, err
	}
	if err := checkRefresh("redisstore: rotate refresh token: next", next); err != nil {
		return scriptCall{}, false, err
	}
	if next.Hash == oldHash {
		return scriptCall{}, false, fmt.Errorf("redisstore: rotate refresh token: next has the old hash: %w", ErrInvalid)
	}
	e, fe, at, raw, err := s.refreshArgs(next)
	if err != nil {
		return scriptCall{}, false, fmt.Errorf("redisstore: rotate refresh token: %w", err)
	}
	family := next.FamilyID
	claimed := false
	if !s.formatV3() {
		if claimed, err = s.claimRefreshIndex(ctx, next.Hash, family, at); err != nil {
			return scriptCall{}, false, fmt.Errorf("redisstore: rotate refresh token: %w", err)
		}
	}
	now := s.now()
	return scriptCall{rotateRefresh,
		[]string{s.refreshKey(family, oldHash), s.refreshKey(family, next.Hash), s.familyMarker(family)},
		[]any{microsStr(now), fmtTime(now), e, fe, at, raw,
			reuseRevocationMargin.Microseconds(), ttlMargin.Milliseconds()}}, claimed, nil
}

// rotated is the rotation's outcome from the script's reply (res, err),
// releasing next's rth: entry (claimed) when it was refused.
func (s *Store) rotated(ctx context.Context, next *sessions.RefreshToken, claimed bool, res []any, err error) error {
	if err == nil {
		err = outcome(str(res, 0), map[string]error{
			"notfound": sessions.ErrNotFound,
			"revoked":  sessions.ErrRevoked,
			"reused":   sessions.ErrRefreshReused,
			"conflict": sessions.ErrConflict,
		})
	}
	if err != nil {
		if claimed {
			s.release(ctx, s.key("rth", next.Hash), next.FamilyID)
		}
		return fmt.Errorf("redisstore: rotate refresh token: %w", err)
	}
	return nil
}

func (s *Store) putMarker(ctx context.Context, what, key string, until time.Time) error {
	if err := putMarker.Run(ctx, s.rdb, []string{key}, microsStr(until), expireAtMS(until)).Err(); err != nil {
		return fmt.Errorf("redisstore: %s: %w", what, err)
	}
	return nil
}

func (s *Store) RevokeFamily(ctx context.Context, familyID string, until time.Time) error {
	if err := checkKeys("redisstore: revoke family", familyID); err != nil {
		return err
	}
	return s.putMarker(ctx, "revoke family "+familyID, s.familyMarker(familyID), until)
}

func (s *Store) RevokeAccessToken(ctx context.Context, jti string, until time.Time) error {
	if err := checkKeys("redisstore: revoke access token", jti); err != nil {
		return err
	}
	return s.putMarker(ctx, "revoke access token "+jti, s.key("jti", jti), until)
}

// TokenRevoked accepts an empty familyID or jti (not both) to check only the other.
func (s *Store) TokenRevoked(ctx context.Context, familyID, jti string) (bool, error) {
	if err := checkRevocationRead(familyID, jti); err != nil {
		return false, fmt.Errorf("redisstore: token revoked: %w", err)
	}
	var read revocationRead
	// Separate GETs, pipelined: the keys live in different slots.
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error { // each reply read by read.err
		read = s.queueRevocation(ctx, p, familyID, jti)
		return nil
	})
	if err := read.err(); err != nil {
		return false, fmt.Errorf("redisstore: token revoked: %w", err)
	}
	return read.revoked(s.now()), nil
}

// checkRevocationRead refuses a token that names no family and no jti:
// nothing could mark it revoked.
func checkRevocationRead(familyID, jti string) error {
	if familyID == "" && jti == "" {
		return fmt.Errorf("no family and no jti: %w", ErrInvalid)
	}
	return nil
}

// revocationRead is TokenRevoked's marker reads, queued in a pipeline.
type revocationRead []*redis.StringCmd

func (s *Store) queueRevocation(ctx context.Context, p redis.Pipeliner, familyID, jti string) revocationRead {
	var read revocationRead
	if familyID != "" {
		read = append(read, p.Get(ctx, s.familyMarker(familyID)))
	}
	if jti != "" {
		read = append(read, p.Get(ctx, s.key("jti", jti)))
	}
	return read
}

// err is the first failure of a read (a missing marker is none), checked
// read by read: Pipelined reports only the first error, which may be a
// missing marker's ahead of a failed read, and a marker that could not be
// read must never pass for one that is not there.
func (r revocationRead) err() error {
	for _, c := range r {
		if err := c.Err(); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
	}
	return nil
}

func (r revocationRead) revoked(now time.Time) bool {
	for _, c := range r {
		if markerLive(c.Val(), now) {
			return true
		}
	}
	return false
}
