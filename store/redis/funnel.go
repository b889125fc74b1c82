package redis

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
)

// The funnel counters, all in the {funnel} slot:
//
//	{prefix}{funnel}:d:<YYYY-MM-DD>   hash "<field>|<clientID>" → count (kept)
//	{prefix}{funnel}:e:<event ID>     marker of an event counted (expires)
//
// addFunnel sets the marker (SET NX with a TTL) and, only if it was new,
// HINCRBYs the day's fields: one script, so a repeated hand-over within the
// marker's life counts once. The relay hands an event over again within a
// lease or so, far inside funnelMarkerTTL.
const funnelMarkerTTL = 7 * 24 * time.Hour

// KEYS[1] marker, KEYS[2] day hash; ARGV: marker TTL ms, then field, delta pairs.
var addFunnel = redis.NewScript(`
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
for i = 2, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i+1])
end
return 1
`)

func (s *Store) funnelDayKey(day string) string { return s.prefix + "{funnel}:d:" + day }

// AddFunnel counts one event unless its ID was counted already.
func (s *Store) AddFunnel(ctx context.Context, eventID string, day time.Time, clientID, stage string, redeemSeconds int64) error {
	if eventID == "" || day.IsZero() || !grants.ValidFunnelStage(stage) {
		return fmt.Errorf("redisstore: add funnel: event id, day and a known stage are required: %w", ErrInvalid)
	}
	keys, args := s.funnelCall(eventID, day, clientID, stage, redeemSeconds)
	if err := addFunnel.Run(ctx, s.rdb, keys, args...).Err(); err != nil {
		return fmt.Errorf("redisstore: add funnel: %w", err)
	}
	return nil
}

// funnelCall is addFunnel's keys and arguments for one event.
func (s *Store) funnelCall(eventID string, day time.Time, clientID, stage string, redeemSeconds int64) ([]string, []any) {
	args := []any{funnelMarkerTTL.Milliseconds()}
	for field, delta := range grants.FunnelIncrements(stage, redeemSeconds) {
		args = append(args, field+"|"+clientID, delta)
	}
	return []string{s.prefix + "{funnel}:e:" + eventID, s.funnelDayKey(grants.FunnelDayKey(day))}, args
}

// Funnel reads the day hashes of from..to in one pipeline.
func (s *Store) Funnel(ctx context.Context, from, to time.Time, clientID string) ([]grants.FunnelDay, error) {
	days, ok := grants.FunnelDays(from, to)
	if !ok {
		return nil, fmt.Errorf("redisstore: funnel: bad range %s..%s: %w", from, to, ErrInvalid)
	}
	cmds := make([]*redis.MapStringStringCmd, len(days))
	if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, d := range days {
			cmds[i] = p.HGetAll(ctx, s.funnelDayKey(d))
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("redisstore: funnel: %w", err)
	}
	var out []grants.FunnelDay
	for i, d := range days {
		day, _ := time.Parse("2006-01-02", d)
		byClient := map[string]*grants.FunnelDay{}
		for k, v := range cmds[i].Val() {
			field, client, found := strings.Cut(k, "|")
			if !found || (clientID != "" && client != clientID) {
				continue
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				continue
			}
			fd := byClient[client]
			if fd == nil {
				fd = &grants.FunnelDay{Day: day, ClientID: client}
				byClient[client] = fd
			}
			fd.Add(field, n)
		}
		for _, fd := range byClient {
			out = append(out, *fd)
		}
	}
	grants.SortFunnel(out)
	return out, nil
}
