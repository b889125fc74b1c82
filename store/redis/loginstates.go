package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/sessions"
)

// --- login states: fields l:<key> = JSON of {prefix}ar:<id> ---
//
// A login state lives in its auth request's hash, so the key's expiry
// covers it, and putRecord, which DELs the hash before it writes the
// request anew (update, SaveCode completing it), drops it with the request.
// Versions before record format v4 never look there: a store below v4
// keeps none (errors.ErrUnsupported), so a callback that an older replica
// answers still finds the state where that replica looks for it.

// loginStateField prefixes a login state's field: e and d are the request's.
const loginStateField = "l:"

// saveLoginState keeps a login state with a live auth request, dropping the
// others first when there are max already: 'ok' or 'notfound'.
// KEYS[1] auth request; ARGV: now µs, field, state JSON, max.
var saveLoginState = redis.NewScript(`
local e = redis.call('HGET', KEYS[1], 'e')
if not e or tonumber(e) <= tonumber(ARGV[1]) then return 'notfound' end
local states = {}
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(f, 1, 2) == 'l:' then states[#states + 1] = f end
end
if #states >= tonumber(ARGV[4]) then redis.call('HDEL', KEYS[1], unpack(states)) end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
return 'ok'
`)

// takeLoginState removes a login state of a live auth request (with
// ARGV[3] 'end', the whole request with it) and answers {'ok', request,
// state}; {'nostate', request} without it, {'gone'} for a request absent
// or expired.
// KEYS[1] auth request; ARGV: now µs, field[, 'end'].
var takeLoginState = redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'e', 'd', ARGV[2])
if not v[1] or tonumber(v[1]) <= tonumber(ARGV[1]) then return {'gone'} end
if not v[3] then return {'nostate', v[2]} end
if ARGV[3] == 'end' then redis.call('DEL', KEYS[1]) else redis.call('HDEL', KEYS[1], ARGV[2]) end
return {'ok', v[2], v[3]}
`)

// SaveLoginState needs record format v4 (formatV4): below it, it answers
// errors.ErrUnsupported without a round trip.
func (s *Store) SaveLoginState(ctx context.Context, arID, key string, ls *sessions.LoginState) error {
	const op = "redisstore: save login state"
	if ls == nil {
		return fmt.Errorf("%s: nil: %w", op, ErrInvalid)
	}
	if err := checkKeys(op, arID, key); err != nil {
		return err
	}
	if err := s.keepsLoginStates(op); err != nil {
		return err
	}
	call, err := s.saveLoginStateCall(arID, key, ls)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	res, err := s.runScript(ctx, call.sc, call.keys, call.args...)
	if err == nil {
		err = outcome(str(res, 0), map[string]error{"notfound": sessions.ErrNotFound})
	}
	if err != nil {
		return fmt.Errorf("%s for auth request %s: %w", op, arID, err)
	}
	return nil
}

// keepsLoginStates: nil from record format v4, else the
// errors.ErrUnsupported a save of a login state answers, before any write.
func (s *Store) keepsLoginStates(op string) error {
	if !s.formatV4() {
		return fmt.Errorf("%s: record format %s keeps none (v4 does): %w", op, s.format, errors.ErrUnsupported)
	}
	return nil
}

// saveLoginStateCall is the script call that keeps ls under key with arID.
func (s *Store) saveLoginStateCall(arID, key string, ls *sessions.LoginState) (scriptCall, error) {
	raw, err := json.Marshal(ls)
	if err != nil {
		return scriptCall{}, err
	}
	return scriptCall{saveLoginState, []string{s.key("ar", arID)},
		[]any{microsStr(s.now()), loginStateField + key, raw, sessions.MaxLoginStates}}, nil
}

// TakeLoginState works at every record format: reading is always allowed.
func (s *Store) TakeLoginState(ctx context.Context, arID, key string) (*sessions.AuthRequest, *sessions.LoginState, error) {
	if err := checkKeys("redisstore: take login state", arID, key); err != nil {
		return nil, nil, err
	}
	call := s.takeLoginStateCall(arID, key, false)
	res, err := s.runScript(ctx, call.sc, call.keys, call.args...)
	return s.loginStateTaken(arID, res, err)
}

// takeLoginStateCall is the script call that takes key of arID (and,
// with end, deletes arID when it held key).
func (s *Store) takeLoginStateCall(arID, key string, end bool) scriptCall {
	args := []any{microsStr(s.now()), loginStateField + key}
	if end {
		args = append(args, "end")
	}
	return scriptCall{takeLoginState, []string{s.key("ar", arID)}, args}
}

// loginStateTaken is TakeLoginState's answer from its script's reply.
func (s *Store) loginStateTaken(arID string, res []any, err error) (*sessions.AuthRequest, *sessions.LoginState, error) {
	const op = "redisstore: take login state"
	if err != nil {
		return nil, nil, fmt.Errorf("%s for auth request %s: %w", op, arID, err)
	}
	status := str(res, 0)
	switch status {
	case "gone":
		return nil, nil, fmt.Errorf("%s: auth request %s: %w", op, arID, sessions.ErrNotFound)
	case "ok", "nostate":
	default:
		return nil, nil, fmt.Errorf("%s for auth request %s: unexpected script reply %q", op, arID, status)
	}
	ar, err := s.authRequestFrom(arID, str(res, 1), nil)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", op, err)
	}
	if status == "nostate" {
		return ar, nil, fmt.Errorf("%s for auth request %s: no such state: %w", op, arID, sessions.ErrNotFound)
	}
	var ls sessions.LoginState
	if err := json.Unmarshal([]byte(str(res, 2)), &ls); err != nil {
		return nil, nil, fmt.Errorf("%s for auth request %s: decode: %w", op, arID, err)
	}
	return ar, &ls, nil
}
