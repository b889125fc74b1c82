package redis

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

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

// ResolveSignIn (grants.SignInResolver) is ResolveIdentity with the size of
// the user's awaiting-verification set read in the same pipeline as the
// user: a sign-in then looks the invitations up (AwaitingVerification)
// only when there are entries. On any doubt (the probe failed, or ran for
// another user than the one resolved) it says look.
func (s *Store) ResolveSignIn(ctx context.Context, id grants.Identity, p grants.Profile, newUserID string, now time.Time) (*grants.User, bool, bool, error) {
	if err := checkKeys("redisstore: resolve identity", id.Issuer, id.Subject, newUserID); err != nil {
		return nil, false, false, err
	}
	probe := &awaitProbe{}
	u, created, err := s.resolveIdentityProbing(ctx, id, p, newUserID, now, probe)
	if err != nil {
		return nil, false, false, err
	}
	return u, created, probe.mayAwait(u.ID), nil
}

// awaitProbe counts a user's awaiting-verification entries (ZCARD
// iaw:<user>) beside the user's resolution.
type awaitProbe struct {
	userID string
	cmd    *redis.IntCmd
}

func (q *awaitProbe) queue(ctx context.Context, s *Store, userID string) redis.Cmder {
	q.userID, q.cmd = userID, redis.NewIntCmd(ctx, "zcard", s.key("iaw", userID))
	return q.cmd
}

func (q *awaitProbe) mayAwait(userID string) bool {
	return q.cmd == nil || q.userID != userID || q.cmd.Err() != nil || q.cmd.Val() > 0
}
