package redis

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/sessions"
	"github.com/usher-oidc/usher/store"
)

// --- sealed codes: {prefix}cs:<hash> = 1 until the code expires; {prefix}code-epoch:1 ---

// codeEpochKey holds the epoch, with no expiry: a Redis that loses its data
// loses it with the spends, and the next CodeEpoch makes a new one.
func (s *Store) codeEpochKey() string { return s.key("code-epoch", "1") }

// ensureCodeEpoch answers the epoch, making it when there is none.
// KEYS[1] epoch; ARGV[1] a new epoch.
var ensureCodeEpoch = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
`)

// spendCode marks a sealed code spent and, with KEYS[3], creates its
// refresh token (createRefresh) and, with KEYS[4], links the token's family
// to its session (addSessionFamily): all or nothing. 'stale' when the epoch
// is not the code's, 'replayed' when already spent, 'conflict' when a live
// token has the hash.
// KEYS: epoch, spend marker, [token, [session families]]. ARGV: epoch, now
// µs, spend expire-at ms, [token e µs, fe µs or ”, expire-at ms, payload,
// [family, family expire-at ms]].
var spendCode = redis.NewScript(luaRefreshDead + luaAddFamily + `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'stale' end
if redis.call('EXISTS', KEYS[2]) == 1 then return 'replayed' end
local now = tonumber(ARGV[2])
if KEYS[3] and liveToken(KEYS[3], now) then return 'conflict' end
redis.call('SET', KEYS[2], '1', 'PXAT', ARGV[3])
if KEYS[3] then putToken(KEYS[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]) end
if KEYS[4] then addFamily(KEYS[4], ARGV[8], tonumber(ARGV[9])) end
return 'ok'
`)

// CodeEpoch is the epoch stored in Redis, made by the first caller.
func (s *Store) CodeEpoch(ctx context.Context) (string, error) {
	v, err := ensureCodeEpoch.Run(ctx, s.rdb, []string{s.codeEpochKey()}, rand.Text()).Text()
	if err != nil {
		return "", fmt.Errorf("redisstore: code epoch: %w", err)
	}
	return v, nil
}

// SealsCodes: every replica reads sealed codes (record format v6) and the
// spend, its refresh token and its session link can be one script (one
// master: a cluster keeps stored codes).
func (s *Store) SealsCodes() bool { return s.formatV6() && s.oneMaster() }

func (s *Store) SpendCode(ctx context.Context, sp *sessions.CodeSpend) error {
	if !s.oneMaster() {
		if err := s.checkSpend(sp); err != nil {
			return err
		}
		res, err := s.spendApart(ctx, sp)
		return s.spent(ctx, sp, false, res, err)
	}
	call, together, err := s.spendCall(sp)
	if err != nil {
		return err
	}
	res, err := s.runScript(ctx, call.sc, call.keys, call.args...)
	return s.spent(ctx, sp, together, res, err)
}

// spendApart spends sp on a cluster, where its epoch and its marker are in
// different slots: the epoch read, then the marker set only if absent.
// (Clusters never issue sealed codes, see SealsCodes; this keeps
// SpendCode's contract there.)
func (s *Store) spendApart(ctx context.Context, sp *sessions.CodeSpend) ([]any, error) {
	epoch, err := s.rdb.Get(ctx, s.codeEpochKey()).Result()
	if errors.Is(err, redis.Nil) || (err == nil && epoch != sp.Epoch) {
		return []any{"stale"}, nil
	}
	if err != nil {
		return nil, err
	}
	err = s.rdb.Do(ctx, "SET", s.key("cs", sp.Hash), "1", "NX", "PXAT", expireAtMS(sp.ExpiresAt)).Err()
	if errors.Is(err, redis.Nil) {
		return []any{"replayed"}, nil
	}
	if err != nil {
		return nil, err
	}
	return []any{"ok"}, nil
}

// SpendCodeWithUser is SpendCode with UserAndGrant of userID in the same
// round trip (on one master): a sealed code's exchange in one trip.
func (s *Store) SpendCodeWithUser(ctx context.Context, sp *sessions.CodeSpend, userID string) (grants.UserGrant, error) {
	if err := checkKeys("redisstore: spend code", userID); err != nil {
		return grants.UserGrant{}, err
	}
	if !s.oneMaster() {
		if err := s.SpendCode(ctx, sp); err != nil {
			return grants.UserGrant{}, err
		}
		return s.userGrant(ctx, userID), nil
	}
	call, together, err := s.spendCall(sp)
	if err != nil {
		return grants.UserGrant{}, err
	}
	return s.runWithUser(ctx, call, userID, func(res []any, err error) error { return s.spent(ctx, sp, together, res, err) })
}

// checkSpend refuses a spend no write may make: bad keys, no expiry, an
// invalid refresh token; and answers ErrNotFound for one expired.
func (s *Store) checkSpend(sp *sessions.CodeSpend) error {
	if err := store.CheckCodeSpend("redisstore: spend code", sp, checkKeys); err != nil {
		return err
	}
	if sp.Refresh != nil {
		if err := checkRefresh("redisstore: spend code: its refresh token", sp.Refresh); err != nil {
			return err
		}
	}
	if expired(sp.ExpiresAt, s.now()) {
		return fmt.Errorf("redisstore: spend code: expired: %w", sessions.ErrNotFound)
	}
	return nil
}

// spendCall is the script call (one master) that spends sp; together says
// whether it also creates sp.Refresh (record format v3), else spent
// creates it after the spend, as CreateRefreshToken does.
func (s *Store) spendCall(sp *sessions.CodeSpend) (scriptCall, bool, error) {
	if err := s.checkSpend(sp); err != nil {
		return scriptCall{}, false, err
	}
	call := scriptCall{spendCode, []string{s.codeEpochKey(), s.key("cs", sp.Hash)},
		[]any{sp.Epoch, microsStr(s.now()), expireAtMS(sp.ExpiresAt)}}
	rt := sp.Refresh
	if rt == nil || !s.formatV3() {
		return call, false, nil
	}
	e, fe, at, raw, err := s.refreshArgs(rt)
	if err != nil {
		return scriptCall{}, false, fmt.Errorf("redisstore: spend code: its refresh token: %w", err)
	}
	call.keys = append(call.keys, s.refreshKey(rt.FamilyID, rt.Hash))
	call.args = append(call.args, e, fe, at, raw)
	if rt.SessionID != "" {
		if err := checkKeys("redisstore: spend code: its session", rt.SessionID); err != nil {
			return scriptCall{}, false, err
		}
		call.keys = append(call.keys, s.sessionFamilies(rt.SessionID))
		call.args = append(call.args, rt.FamilyID, expireAtMS(rt.FamilyExpiresAt))
	}
	return call, true, nil
}

// spent is the spend's outcome from its script's reply, creating the
// refresh token after it when the script did not.
func (s *Store) spent(ctx context.Context, sp *sessions.CodeSpend, together bool, res []any, err error) error {
	if err == nil {
		err = outcome(str(res, 0), map[string]error{
			"stale": sessions.ErrNotFound, "replayed": sessions.ErrCodeReplayed, "conflict": sessions.ErrConflict})
	}
	if err != nil {
		return fmt.Errorf("redisstore: spend code: %w", err)
	}
	if sp.Refresh != nil && !together {
		return s.CreateRefreshToken(ctx, sp.Refresh)
	}
	return nil
}
