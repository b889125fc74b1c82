package redis

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
)

// The compact form (recordformat.go) of users and identities, written from
// record format v3 on: versions that wrote v2 before users had a compact
// form read only the v1 forms, so a v2 store keeps writing those. Below,
// "v2" names the compact encoding (it starts with v2Marker).
//
//	u:<id>         v1: a hash (users.go). v2: a string, v2Marker then tagged
//	               fields (recordcodec.go), every value a string so that the
//	               scripts edit it without knowing the tags: e email, v "1"
//	               when verified, n name, p picture, a created_at, U
//	               updated_at, L last_login (each a varint of unix ns; U is
//	               left out while it equals a, L while it equals U), i the
//	               user's identities (a uvarint count, then each identity
//	               suffix as a uvarint length and its bytes). The ID is the
//	               key's. The identity list replaces the ui: set, which v3
//	               no longer writes for these users.
//	id:<iss>:<sub> v1: grants.Identity as JSON. v2: v2Marker then u user_id,
//	               c connection, e email, v email_verified (flag), a
//	               created_at (unix ns); issuer and subject are the key's.
//
// A user keeps the form it was created in (the scripts edit both), so users
// stored before v3 keep their hash, their ui: set and their ue: entries.

// luaUserRecord decodes and encodes a v2 user record in a script: dec gives
// the fields by tag and their order, enc writes them back in that order
// (then any new ones), ids/encIDs read and write the identity list.
const luaUserRecord = `
local function uv(s, i)
  local n, m = 0, 1
  while true do
    local b = string.byte(s, i)
    n, i = n + (b % 128) * m, i + 1
    if b < 128 then return n, i end
    m = m * 128
  end
end
local function pv(n)
  local t = {}
  repeat
    local b = n % 128
    n = (n - b) / 128
    if n > 0 then b = b + 128 end
    t[#t + 1] = string.char(b)
  until n == 0
  return table.concat(t)
end
local function dec(s)
  local f, order, i = {}, {}, 2
  while true do
    local tag = string.sub(s, i, i)
    if tag == '\0' then return f, order end
    local n
    n, i = uv(s, i + 1)
    f[tag] = string.sub(s, i, i + n - 1)
    order[#order + 1] = tag
    i = i + n
  end
end
local function enc(f, order)
  local t, seen = {'\2'}, {}
  local function put(tag)
    local v = f[tag]
    if not seen[tag] and v and v ~= '' then t[#t + 1] = tag .. pv(#v) .. v end
    seen[tag] = true
  end
  for _, tag in ipairs(order) do put(tag) end
  for _, tag in ipairs({'e', 'v', 'n', 'p', 'a', 'U', 'L', 'i'}) do put(tag) end
  t[#t + 1] = '\0'
  return table.concat(t)
end
local function ids(v)
  local out = {}
  if not v or v == '' then return out end
  local n, i = uv(v, 1)
  for k = 1, n do
    local l
    l, i = uv(v, i)
    out[k] = string.sub(v, i, i + l - 1)
    i = i + l
  end
  return out
end
local function encIDs(list)
  if #list == 0 then return nil end
  local t = {pv(#list)}
  for _, x in ipairs(list) do t[#t + 1] = pv(#x) .. x end
  return table.concat(t)
end
local function has(list, x)
  for _, y in ipairs(list) do if y == x then return true end end
  return false
end
`

// getUser reads a user in either form: {'s', record}, {'h', hash fields}
// or {} for none. KEYS[1] user.
var getUser = redis.NewScript(`
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'string' then return {'s', redis.call('GET', KEYS[1])} end
if t == 'hash' then return {'h', redis.call('HGETALL', KEYS[1])} end
return {}
`)

// userIdentity adds (ARGV[1] 'add') or removes ('rm') the identity suffix
// ARGV[2] in a v2 user's identity list: 'ok', 'hash' for a v1 user (whose
// list is the ui: set) or 'notfound'. KEYS[1] user.
var userIdentity = redis.NewScript(luaUserRecord + `
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'hash' then return 'hash' end
if t ~= 'string' then return 'notfound' end
local f, order = dec(redis.call('GET', KEYS[1]))
local list = ids(f.i)
if ARGV[1] == 'add' then
  if has(list, ARGV[2]) then return 'ok' end
  list[#list + 1] = ARGV[2]
else
  local kept = {}
  for _, x in ipairs(list) do if x ~= ARGV[2] then kept[#kept + 1] = x end end
  if #kept == #list then return 'ok' end
  list = kept
end
f.i = encIDs(list)
redis.call('SET', KEYS[1], enc(f, order))
return 'ok'
`)

// userTime is t as a v2 user record holds it (the script stores it as is).
func userTime(t time.Time) string { return string(binary.AppendVarint(nil, t.UnixNano())) }

func parseUserTime(v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	ns, n := binary.Varint([]byte(v))
	if n != len(v) {
		return time.Time{}, errTruncated
	}
	return time.Unix(0, ns).UTC(), nil
}

// encodeUserCompact is a new user's v2 record, linked to the identity suffix.
func encodeUserCompact(p grants.Profile, suffix string, now time.Time) string {
	w := newWbuf()
	w.str('e', p.Email)
	if p.Email != "" && p.EmailVerified {
		w.str('v', "1")
	}
	w.str('n', p.Name)
	w.str('p', p.Picture)
	w.str('a', userTime(now)) // updated_at and last_login are created_at
	var list []byte
	list = binary.AppendUvarint(list, 1)
	list = binary.AppendUvarint(list, uint64(len(suffix)))
	w.str('i', string(append(list, suffix...)))
	return string(w.done())
}

// decodeUserCompact reads a v2 user record: the user and its identity suffixes.
func decodeUserCompact(id, v string) (*grants.User, []string, error) {
	if v == "" || v[0] != v2Marker {
		return nil, nil, errors.New("not a v2 user record")
	}
	u := &grants.User{ID: id}
	var suffixes []string
	var times [3]string
	r := &rbuf{b: []byte(v[1:])}
	err := r.fields(func(tag byte) error {
		switch tag {
		case 'e':
			u.Email = r.str()
		case 'v':
			u.EmailVerified = r.str() == "1"
		case 'n':
			u.Name = r.str()
		case 'p':
			u.Picture = r.str()
		case 'a':
			times[0] = r.str()
		case 'U':
			times[1] = r.str()
		case 'L':
			times[2] = r.str()
		case 'i':
			list := &rbuf{b: []byte(r.str())}
			suffixes = list.strs()
			if list.err != nil || len(list.b) > 0 {
				return errors.New("record format v2: malformed identity list")
			}
		default:
			return unknownTag(tag)
		}
		return nil
	})
	if err == nil {
		err = r.err
	}
	var errs [3]error
	for i := 1; i < len(times); i++ {
		if times[i] == "" {
			times[i] = times[i-1]
		}
	}
	u.CreatedAt, errs[0] = parseUserTime(times[0])
	u.UpdatedAt, errs[1] = parseUserTime(times[1])
	u.LastLoginAt, errs[2] = parseUserTime(times[2])
	if err = errors.Join(err, errs[0], errs[1], errs[2]); err != nil {
		return nil, nil, fmt.Errorf("decode user %s: %w", id, err)
	}
	return u, suffixes, nil
}

// userFromReply decodes a user read as getUser answers ({'s'|'h', data});
// nil for none.
func userFromReply(id string, res []any) (*grants.User, []string, error) {
	switch str(res, 0) {
	case "s":
		return decodeUserCompact(id, str(res, 1))
	case "h":
		fields, _ := res[1].([]any)
		m := pairs(fields)
		if len(m) == 0 {
			return nil, nil, nil
		}
		u, err := userFromHash(m)
		return u, nil, err
	}
	return nil, nil, nil
}

// encodeIdentity is id's record in the format s writes; v1 when v2 cannot
// hold its created_at exactly.
func (s *Store) encodeIdentity(id *grants.Identity) ([]byte, error) {
	if !s.compactUsers() || !zeroOrNano(id.CreatedAt) {
		return json.Marshal(id)
	}
	w := newWbuf()
	w.str('u', id.UserID)
	w.str('c', id.Connection)
	w.str('e', id.Email)
	w.flag('v', id.EmailVerified)
	if !id.CreatedAt.IsZero() {
		w.int('a', id.CreatedAt.UnixNano())
	}
	return w.done(), nil
}

// decodeIdentity reads an identity record of either format; iss and sub
// are the key's.
func decodeIdentity(iss, sub string, raw []byte) (*grants.Identity, error) {
	if len(raw) == 0 || raw[0] != v2Marker {
		var id grants.Identity
		if err := json.Unmarshal(raw, &id); err != nil {
			return nil, fmt.Errorf("decode identity: %w", err)
		}
		return &id, nil
	}
	id := &grants.Identity{Issuer: iss, Subject: sub}
	r := &rbuf{b: raw[1:]}
	err := r.fields(func(tag byte) error {
		switch tag {
		case 'u':
			id.UserID = r.str()
		case 'c':
			id.Connection = r.str()
		case 'e':
			id.Email = r.str()
		case 'v':
			id.EmailVerified = true
		case 'a':
			id.CreatedAt = time.Unix(0, r.int()).UTC()
		default:
			return unknownTag(tag)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("decode identity: %w", err)
	}
	return id, nil
}

// splitIdentitySuffix undoes identitySuffix (esc leaves no ':' in a part).
func splitIdentitySuffix(suffix string) (string, string) {
	iss, sub, _ := strings.Cut(suffix, ":")
	return unesc(iss), unesc(sub)
}

// decodeIdentityAt decodes the identity stored under suffix.
func decodeIdentityAt(suffix string, raw []byte) (*grants.Identity, error) {
	iss, sub := splitIdentitySuffix(suffix)
	return decodeIdentity(iss, sub, raw)
}
