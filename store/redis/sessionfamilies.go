package redis

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// A browser session's refresh-token families, for sign-out, are a set under
// {s:<session>}:fam. Each family's revocation marker lives in the family's
// own slot ({f:<family>}), so revoking them is one command per family, never
// a cross-slot script (Redis Cluster).

func (s *Store) sessionFamilies(sessionID string) string { return s.tagged("s", sessionID) + ":fam" }

// luaAddFamily adds a family to a session's set and makes the set live at
// least until at (ms since the epoch), never shortening it.
const luaAddFamily = `
local function addFamily(key, family, at)
  redis.call('SADD', key, family)
  local pttl = redis.call('PTTL', key)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if pttl < 0 or now + pttl < at then redis.call('PEXPIREAT', key, at) end
end
`

// addSessionFamily: KEYS[1] the session's families; ARGV: family, until
// (ms since the epoch).
var addSessionFamily = redis.NewScript(luaAddFamily + `
addFamily(KEYS[1], ARGV[1], tonumber(ARGV[2]))
return 'ok'
`)

func (s *Store) RevokeSessionFamilies(ctx context.Context, sessionID string, until time.Time) error {
	if err := checkKeys("redisstore: revoke session families", sessionID); err != nil {
		return err
	}
	key := s.sessionFamilies(sessionID)
	families, err := s.rdb.SMembers(ctx, key).Result()
	if err != nil {
		return fmt.Errorf("redisstore: revoke session families: %w", err)
	}
	for _, f := range families {
		if err := s.putMarker(ctx, "revoke family "+f, s.familyMarker(f), until); err != nil {
			return err
		}
	}
	if len(families) > 0 {
		// SREM, not DEL: a family linked meanwhile stays for the next sign-out.
		if err := s.rdb.SRem(ctx, key, families).Err(); err != nil {
			return fmt.Errorf("redisstore: revoke session families: %w", err)
		}
	}
	return nil
}
