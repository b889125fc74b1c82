package redis

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/usher-oidc/usher/grants"
)

// awaitingMax bounds AwaitingVerification's index read.
const awaitingMax = 100

// AwaitingVerification: see grants.InvitationStore. The per-user set
// (iaw:<user>), then its invitations when there are any, each re-checked.
func (s *Store) AwaitingVerification(ctx context.Context, userID string, now time.Time) ([]grants.Invitation, error) {
	if err := checkKeys("redisstore: awaiting verification", userID); err != nil {
		return nil, err
	}
	ids, err := s.rdb.ZRevRange(ctx, s.key("iaw", userID), 0, awaitingMax-1).Result()
	var invs []*grants.Invitation
	if err == nil && len(ids) > 0 {
		invs, err = s.loadInvitations(ctx, ids)
	}
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
