package redis

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
)

// awaitingMax bounds each index read of AwaitingVerification.
const awaitingMax = 100

// AwaitingVerification: see grants.InvitationStore. The per-user set
// (iaw:<user>) and, for records written before it existed, the email's
// (ie:<email>) are read in one pipeline; their invitations in a second
// round trip when there are any, each re-checked.
func (s *Store) AwaitingVerification(ctx context.Context, userID, email string, now time.Time) ([]grants.Invitation, error) {
	if err := checkKeys("redisstore: awaiting verification", userID); err != nil {
		return nil, err
	}
	var byUser, byEmail *redis.StringSliceCmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		byUser = p.ZRevRange(ctx, s.key("iaw", userID), 0, awaitingMax-1)
		if e := lower(email); e != "" {
			byEmail = p.ZRevRange(ctx, s.key("ie", e), 0, awaitingMax-1)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("redisstore: awaiting verification of %s: %w", userID, err)
	}
	ids := byUser.Val()
	if byEmail != nil {
		for _, id := range byEmail.Val() {
			if !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	invs, err := s.loadInvitations(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("redisstore: awaiting verification of %s: %w", userID, err)
	}
	var out []grants.Invitation
	for _, inv := range invs {
		if inv != nil && inv.AwaitsVerificationBy(userID, now) {
			out = append(out, *inv)
		}
	}
	slices.SortFunc(out, func(a, b grants.Invitation) int { return b.CreatedAt.Compare(a.CreatedAt) })
	return out, nil
}
