package redis

import "github.com/redis/go-redis/v9"

// The Lua scripts. Each touches only the keys it is given (KEYS), and all of
// those share one hash slot, so each runs on Redis Cluster. Times are unix
// microseconds (exact in a Lua double); numbers handed back to Redis are
// formatted with %.0f, since Lua's default formatting would switch to
// exponent notation.

// putRecord creates ('create': refused while a live record exists) or replaces
// ('update': refused unless a live record exists) an expiring record stored as
// a hash {e: expires µs, d: JSON}.
// KEYS[1] record; ARGV: now µs, mode, e µs, expire-at ms, d.
var putRecord = redis.NewScript(`
local e = redis.call('HGET', KEYS[1], 'e')
local live = e and tonumber(e) > tonumber(ARGV[1])
if ARGV[2] == 'create' and live then return 'conflict' end
if ARGV[2] == 'update' and not live then return 'notfound' end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'e', ARGV[3], 'd', ARGV[5])
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
return 'ok'
`)

// consumeCode marks a live code used: {'ok', d}, {'replayed', d} or {'notfound'}.
// KEYS[1] code {e, u, d}; ARGV: now µs.
var consumeCode = redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'e', 'u', 'd')
if not v[1] or tonumber(v[1]) <= tonumber(ARGV[1]) then return {'notfound'} end
if v[2] then return {'replayed', v[3]} end
redis.call('HSET', KEYS[1], 'u', '1')
return {'ok', v[3]}
`)

// luaRefreshDead holds the refresh-token scripts' helpers: dead (past an
// expiry), liveToken (a live token is stored under key), putToken (store
// one as "e|fe||payload", not rotated).
const luaRefreshDead = `
local function dead(e, fe, now)
  return now >= tonumber(e) or (fe ~= '' and now >= tonumber(fe))
end
local function liveToken(key, now)
  local cur = redis.call('GET', key)
  if not cur then return false end
  local e, fe = string.match(cur, '^([^|]*)|([^|]*)|')
  return not dead(e, fe, now)
end
local function putToken(key, e, fe, at, payload)
  redis.call('SET', key, e .. '|' .. fe .. '||' .. payload, 'PXAT', at)
end
`

// createRefresh stores a refresh token unless a live one has its hash.
// A token is one string "e|fe|r|payload" (e, fe: expiries µs, fe ” if none;
// r: rotated_at RFC3339 or ”): a string costs far less memory than a hash
// whose payload is too long for the compact listpack encoding. The scripts
// read e, fe and r and pass the payload through untouched, so they serve
// both record formats (recordformat_sessions.go).
// KEYS[1] {f:fam}:t:<hash>; ARGV: now µs, e µs, fe µs or ”, expire-at ms, payload.
var createRefresh = redis.NewScript(luaRefreshDead + `
if liveToken(KEYS[1], tonumber(ARGV[1])) then return 'conflict' end
putToken(KEYS[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
return 'ok'
`)

// rotateRefresh is the whole rotation decision, in bbolt's order: unknown or
// expired → notfound; family revoked → revoked; already rotated → revoke the
// family (never shortening a revocation) and answer reused; next exists →
// conflict; else mark old rotated, store next. Old and next are keys of one
// family (rotation keeps it), so the script never sees two families.
// KEYS[1] old token, KEYS[2] next token, KEYS[3] family marker — all {f:fam}.
// ARGV: now µs, now RFC3339, next e µs, next fe µs or ”, next expire-at ms,
// next payload, reuse margin µs, ttl margin ms.
var rotateRefresh = redis.NewScript(luaRefreshDead + `
local now = tonumber(ARGV[1])
local cur = redis.call('GET', KEYS[1])
if not cur then return 'notfound' end
local e, fe, r, d = string.match(cur, '^([^|]*)|([^|]*)|([^|]*)|(.*)$')
if dead(e, fe, now) then return 'notfound' end
local rev = redis.call('GET', KEYS[3])
if rev and tonumber(rev) > now then return 'revoked' end
if r ~= '' then
  local u = math.max(tonumber(e), now)
  if fe ~= '' then u = math.max(u, tonumber(fe)) end
  u = u + tonumber(ARGV[7])
  if not rev or tonumber(rev) < u then
    redis.call('SET', KEYS[3], string.format('%.0f', u), 'PXAT', string.format('%.0f', math.floor(u / 1000) + tonumber(ARGV[8])))
  end
  return 'reused'
end
if redis.call('EXISTS', KEYS[2]) == 1 then return 'conflict' end
redis.call('SET', KEYS[1], e .. '|' .. fe .. '|' .. ARGV[2] .. '|' .. d, 'KEEPTTL')
putToken(KEYS[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
return 'ok'
`)

// putMarker stores a revocation marker (until µs), never shortening one.
// KEYS[1] marker; ARGV: until µs, expire-at ms.
var putMarker = redis.NewScript(`
local old = redis.call('GET', KEYS[1])
if old and tonumber(old) >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
return 1
`)

// delIfEq deletes KEYS[1] if its value is ARGV[1] (releasing an index entry
// or a claim that is still ours).
var delIfEq = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// addSigningKey: KEYS[1] hash id → JSON; ARGV: id, JSON, onlyIfNone ('1'),
// algorithm. onlyIfNone refuses when a key of the same algorithm exists.
var addSigningKey = redis.NewScript(`
if ARGV[3] == '1' then
  for _, v in ipairs(redis.call('HVALS', KEYS[1])) do
    if cjson.decode(v)['alg'] == ARGV[4] then return 'conflict' end
  end
end
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 'conflict' end
return 'ok'
`)

// ensureUser creates the user if absent ({1, ”, form, record}), else
// refreshes the profile from the non-empty arguments ({0, old email, form,
// record}); form is 's' (a v2 record) or 'h' (a v1 hash, record its
// fields), as getUser answers. In mode 'new' an existing user created for
// another identity is a conflict ({-1}): a hash's 'o' names the identity it
// was created for, a v2 record's identity list holds it. A v2 user is also
// linked to the identity it is resolved through (healing a link whose list
// entry is missing).
// KEYS[1] user; ARGV: mode, identity suffix, id, email, email_verified,
// name, picture, now RFC3339, the new v2 record (” to create a hash), now
// as a v2 record holds it.
var ensureUser = redis.NewScript(luaUserRecord + `
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'none' then
  if ARGV[9] ~= '' then
    redis.call('SET', KEYS[1], ARGV[9])
    return {1, '', 's', ARGV[9]}
  end
  redis.call('HSET', KEYS[1], 'id', ARGV[3], 'email', ARGV[4], 'ev', ARGV[5], 'name', ARGV[6],
    'pic', ARGV[7], 'ca', ARGV[8], 'ua', ARGV[8], 'll', ARGV[8], 'o', ARGV[2])
  return {1, '', 'h', redis.call('HGETALL', KEYS[1])}
end
if t == 'hash' then
  if ARGV[1] == 'new' and redis.call('HGET', KEYS[1], 'o') ~= ARGV[2] then return {-1, '', 'h', {}} end
  local old = redis.call('HGET', KEYS[1], 'email') or ''
  if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'email', ARGV[4], 'ev', ARGV[5]) end
  if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'name', ARGV[6]) end
  if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'pic', ARGV[7]) end
  redis.call('HSET', KEYS[1], 'ua', ARGV[8], 'll', ARGV[8])
  return {0, old, 'h', redis.call('HGETALL', KEYS[1])}
end
local f, order = dec(redis.call('GET', KEYS[1]))
local list = ids(f.i)
local linked = has(list, ARGV[2])
if ARGV[1] == 'new' and not linked then return {-1, '', 's', ''} end
local old = f.e or ''
if ARGV[4] ~= '' then
  f.e = ARGV[4]
  if ARGV[5] == '1' then f.v = '1' else f.v = nil end
end
if ARGV[6] ~= '' then f.n = ARGV[6] end
if ARGV[7] ~= '' then f.p = ARGV[7] end
f.U, f.L = ARGV[10], nil -- last_login is updated_at
if not linked then
  list[#list + 1] = ARGV[2]
  f.i = encIDs(list)
end
local rec = enc(f, order)
redis.call('SET', KEYS[1], rec)
return {0, old, 's', rec}
`)

// delUserIfOrigin deletes the user KEYS[1] if the identity ARGV[1] created
// it: a hash's 'o' field, a v2 record linked to that identity alone.
var delUserIfOrigin = redis.NewScript(luaUserRecord + `
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'hash' then
  if redis.call('HGET', KEYS[1], 'o') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
elseif t == 'string' then
  local f = dec(redis.call('GET', KEYS[1]))
  local list = ids(f.i)
  if #list == 1 and list[1] == ARGV[1] then return redis.call('DEL', KEYS[1]) end
end
return 0
`)

// claimIdentity links (iss, sub) to a user unless it is linked already:
// {'ok'} or {'exists', JSON}. KEYS[1] identity; ARGV: JSON.
var claimIdentity = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur then return {'exists', cur} end
redis.call('SET', KEYS[1], ARGV[1])
return {'ok'}
`)

// grantApply changes a grant and returns it: {claims hash, roles, invitation
// IDs, pending merges}. Ops: 'get'; 'add' (roles, in order, no duplicates);
// 'rmrole'; 'rmclaim'; 'setclaim' (ARGV[6] key, ARGV[7] raw JSON); 'merge' — an invitation's roles and the claims the
// grant does not hold yet (a held claim is never overwritten), applied once per invitation ID: applying it again changes nothing,
// which is what lets a redemption be re-applied after a crash. 'merge' also
// clears the invitation's pending-merge entry. 'ack' drops the events whose
// IDs follow (ARGV[4…]).
// When an op changes the grant, the events of ARGV[2] (lines "id TAB JSON")
// are stored with it ('o:'..id), in the same script: no change without its
// events.
// KEYS[1] {g:u} claims ('c:'..key → raw JSON) + 'u' updated_at + events
// ('o:'..id → JSON) + 'r' the roles as a JSON list (record format v2),
// KEYS[2] roles list (v1), KEYS[3] invitation IDs list, KEYS[4] pending
// merges hash. A grant keeps its roles where it has them; a grant without
// roles starts the list, or the 'r' field when the op ends in '/2' (a store
// writing v2).
// ARGV: op, events, at RFC3339, invitation ID / role / claim key, n roles,
// roles…, then claim key, raw JSON pairs.
var grantApply = redis.NewScript(`
local op = ARGV[1]
local v2 = string.sub(op, -2) == '/2'
if v2 then op = string.sub(op, 1, -3) end
local changed = false
local roles
local rf = redis.call('HGET', KEYS[1], 'r')
local inField = rf or (v2 and redis.call('EXISTS', KEYS[2]) == 0)
local fieldRoles = rf and cjson.decode(rf) or {}
local function hasRole(r)
  if not inField then return redis.call('LPOS', KEYS[2], r) end
  for _, x in ipairs(fieldRoles) do if x == r then return true end end
  return false
end
local function pushRole(r)
  if not inField then return redis.call('RPUSH', KEYS[2], r) end
  fieldRoles[#fieldRoles + 1] = r
  redis.call('HSET', KEYS[1], 'r', cjson.encode(fieldRoles))
end
-- The pending merges and the roles are read before an HDEL or LREM may
-- empty (delete) them: while the slot migrates, touching a key deleted
-- during the script fails it ("non local key") after its writes.
local pending = redis.call('HGETALL', KEYS[4])
if op == 'merge' or op == 'unpend' then
  for i = 1, #pending, 2 do
    if pending[i] == ARGV[4] then table.remove(pending, i); table.remove(pending, i); break end
  end
end
local function addRoles(n)
  for i = 6, 5 + n do
    if ARGV[i] ~= '' and not hasRole(ARGV[i]) then
      pushRole(ARGV[i])
      changed = true
    end
  end
end
if op == 'merge' then
  if not redis.call('LPOS', KEYS[3], ARGV[4]) then
    local n = tonumber(ARGV[5])
    addRoles(n)
    for i = 6 + n, #ARGV, 2 do redis.call('HSETNX', KEYS[1], 'c:' .. ARGV[i], ARGV[i + 1]) end
    redis.call('RPUSH', KEYS[3], ARGV[4])
    changed = true
  end
  redis.call('HDEL', KEYS[4], ARGV[4])
elseif op == 'add' then
  addRoles(tonumber(ARGV[5]))
elseif op == 'rmrole' and inField then
  roles = {}
  for _, r in ipairs(fieldRoles) do
    if r ~= ARGV[4] then roles[#roles + 1] = r end
  end
  changed = #roles < #fieldRoles
  if #roles == 0 then redis.call('HDEL', KEYS[1], 'r') elseif changed then redis.call('HSET', KEYS[1], 'r', cjson.encode(roles)) end
  fieldRoles = roles
elseif op == 'rmrole' then
  roles = {}
  for _, r in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
    if r ~= ARGV[4] then roles[#roles + 1] = r end
  end
  changed = redis.call('LREM', KEYS[2], 0, ARGV[4]) > 0
elseif op == 'rmclaim' then
  changed = redis.call('HDEL', KEYS[1], 'c:' .. ARGV[4]) > 0
elseif op == 'setclaim' then
  redis.call('HSET', KEYS[1], 'c:' .. ARGV[6], ARGV[7])
  changed = true
elseif op == 'unpend' then
  redis.call('HDEL', KEYS[4], ARGV[4])
elseif op == 'ack' then
  for i = 4, #ARGV do redis.call('HDEL', KEYS[1], 'o:' .. ARGV[i]) end
end
if changed then
  redis.call('HSET', KEYS[1], 'u', ARGV[3])
  for line in string.gmatch(ARGV[2], '[^\n]+') do
    local tab = string.find(line, '\t', 1, true)
    redis.call('HSET', KEYS[1], 'o:' .. string.sub(line, 1, tab - 1), string.sub(line, tab + 1))
  end
end
if not roles then
  if inField then roles = fieldRoles else roles = redis.call('LRANGE', KEYS[2], 0, -1) end
end
return {redis.call('HGETALL', KEYS[1]), roles, redis.call('LRANGE', KEYS[3], 0, -1), pending}
`)

// invitationCAS creates an invitation ({'ok'} / {'conflict'}) or replaces it
// if its version is still the one the caller read and, when given, its status
// is the required one: {'ok'}, {'notfound'}, {'status', current} or {'retry'}.
// This is the single-winner step of redemption: of N callers that read
// version v of a pending invitation, one moves it to redeemed; the others find
// the status changed.
// KEYS[1] {i:id} string "v|s|payload"; ARGV: mode, expected version,
// payload, status, required status (” for any). The script reads only v
// and s, never the payload, so it serves both record formats (recordformat.go).
var invitationCAS = redis.NewScript(`
if ARGV[1] == 'create' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return {'conflict'} end
  redis.call('SET', KEYS[1], '1|' .. ARGV[4] .. '|' .. ARGV[3])
  return {'ok'}
end
local cur = redis.call('GET', KEYS[1])
if not cur then return {'notfound'} end
local v, s = string.match(cur, '^([^|]*)|([^|]*)|')
if ARGV[5] ~= '' and s ~= ARGV[5] then return {'status', s} end
if v ~= ARGV[2] then return {'retry'} end
redis.call('SET', KEYS[1], string.format('%.0f', tonumber(v) + 1) .. '|' .. ARGV[4] .. '|' .. ARGV[3])
return {'ok'}
`)

// claimHolder makes ARGV[1] the invitation holding an external_id if the
// current holder is ARGV[2] (” for none): {'ok', previous} or {'held', current}.
// KEYS[1] {x:ext}.
var claimHolder = redis.NewScript(`
local h = redis.call('GET', KEYS[1]) or ''
if h ~= ARGV[2] then return {'held', h} end
redis.call('SET', KEYS[1], ARGV[1])
return {'ok', h}
`)

// claimIndex points KEYS[1] at ARGV[1] unless it points elsewhere:
// {'created'}, {'same'} or {'other', value}. With ARGV[2] = '1' it overwrites
// (the caller proved the other owner stale) and answers {'created'}.
var claimIndex = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then return {'same'} end
if cur and ARGV[2] ~= '1' then return {'other', cur} end
if ARGV[3] and ARGV[3] ~= '' then
  redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
return {'created'}
`)

// claimField is claimIndex for a field of a shared hash: KEYS[1] the hash;
// ARGV: the field, the value.
var claimField = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur == ARGV[2] then return {'same'} end
if cur then return {'other', cur} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {'created'}
`)

// delFieldIfEq is delIfEq for a field: KEYS[1] the hash; ARGV: the field,
// the value.
var delFieldIfEq = redis.NewScript(`
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
`)

// reserveIdem: {'ok'} or {'exists', d, status, response}.
// KEYS[1] {e, d, s, r}; ARGV: now µs, e µs, expire-at ms, d.
var reserveIdem = redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'e', 'd', 's', 'r')
if v[1] and tonumber(v[1]) > tonumber(ARGV[1]) then return {'exists', v[2], v[3] or '0', v[4] or ''} end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'e', ARGV[2], 'd', ARGV[4], 's', '0', 'r', '')
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
return {'ok'}
`)

// completeIdem: KEYS[1]; ARGV: now µs, status, response.
var completeIdem = redis.NewScript(`
local e = redis.call('HGET', KEYS[1], 'e')
if not e or tonumber(e) <= tonumber(ARGV[1]) then return 'notfound' end
redis.call('HSET', KEYS[1], 's', ARGV[2], 'r', ARGV[3])
return 'ok'
`)

// releaseIdem forgets an in-progress (or expired) reservation, never a live
// completed one. KEYS[1]; ARGV: now µs.
var releaseIdem = redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'e', 's')
if not v[1] then return 0 end
if v[2] ~= '0' and tonumber(v[1]) > tonumber(ARGV[1]) then return 0 end
return redis.call('DEL', KEYS[1])
`)

// Jobs live in one slot ({jobs}): hashes keyed by job ID (KEYS[1] JSON,
// KEYS[2] attempts, KEYS[3] run_at, KEYS[4] lease_until, KEYS[5] last_error,
// KEYS[6] kind) and a sorted set per kind (KEYS[7]) scored by the instant the
// job may next be claimed (µs): its run_at, or its lease's end if later.

// enqueueJob: ARGV: id, JSON, attempts, run_at, lease_until, last_error, kind, score.
var enqueueJob = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 'conflict' end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[5])
redis.call('HSET', KEYS[5], ARGV[1], ARGV[6])
redis.call('HSET', KEYS[6], ARGV[1], ARGV[7])
redis.call('ZADD', KEYS[7], ARGV[8], ARGV[1])
return 'ok'
`)

// claimJobs pops up to ARGV[2] jobs due at ARGV[1] (µs), oldest-due first,
// counts the attempt and re-scores them at the lease's end (ARGV[3] µs,
// ARGV[4] RFC3339). Returns {JSON, attempts, run_at, lease_until, last_error}
// per job.
var claimJobs = redis.NewScript(`
local ids = redis.call('ZRANGE', KEYS[7], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  local d = redis.call('HGET', KEYS[1], id)
  if not d then
    redis.call('ZREM', KEYS[7], id)
  else
    local a = redis.call('HINCRBY', KEYS[2], id, 1)
    redis.call('HSET', KEYS[4], id, ARGV[4])
    redis.call('ZADD', KEYS[7], ARGV[3], id)
    table.insert(out, {d, a, redis.call('HGET', KEYS[3], id) or '', ARGV[4], redis.call('HGET', KEYS[5], id) or ''})
  end
end
return out
`)

// changeJob completes (deletes) or reschedules a job of the expected kind:
// 'ok', 'notfound', or 'retry' when the kind is not the expected one.
// ARGV: id, op, expected kind, run_at, score, last_error, and the claim's
// lease and attempt count as the fence (an empty lease for none): 'leaselost' when
// the stored ones differ.
var changeJob = redis.NewScript(`
local k = redis.call('HGET', KEYS[6], ARGV[1])
if not k then return 'notfound' end
if k ~= ARGV[3] then return 'retry' end
if ARGV[7] ~= '' and (redis.call('HGET', KEYS[4], ARGV[1]) ~= ARGV[7] or
    tostring(redis.call('HGET', KEYS[2], ARGV[1]) or '0') ~= ARGV[8]) then return 'leaselost' end
if ARGV[2] == 'complete' then
  for i = 1, 6 do redis.call('HDEL', KEYS[i], ARGV[1]) end
  redis.call('ZREM', KEYS[7], ARGV[1])
else
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
  redis.call('HSET', KEYS[4], ARGV[1], '')
  redis.call('HSET', KEYS[5], ARGV[1], ARGV[6])
  redis.call('ZADD', KEYS[7], ARGV[5], ARGV[1])
end
return 'ok'
`)
