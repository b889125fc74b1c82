package redis

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
)

// UserAndGrant reads a user and its grant (grants.UserGrantReader) in one
// pipeline on one master; on a cluster, where the two live in other slots,
// as GetUser and GetGrant. A grant with pending merges is healed as GetGrant
// heals it.
func (s *Store) UserAndGrant(ctx context.Context, userID string) (*grants.User, *grants.Grant, error) {
	if err := checkKeys("redisstore: user and grant", userID); err != nil {
		return nil, nil, err
	}
	if !s.oneMaster() {
		return s.userThenGrant(ctx, userID)
	}
	var user, grant *pipedScript
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		user = scriptCall{getUser, []string{s.key("u", userID)}, nil}.queue(ctx, p)
		grant = scriptCall{grantApply, s.grantKeys(userID), grantArgs("", grantRead...)}.queue(ctx, p)
		return nil
	})
	ures, err := user.reply(ctx, s.rdb)
	var u *grants.User
	if err == nil {
		u, _, err = userFromReply(userID, ures)
	}
	if err == nil && u == nil {
		err = grants.ErrNotFound
	}
	if err != nil {
		return nil, nil, fmt.Errorf("redisstore: get user %s: %w", userID, err)
	}
	res, err := grant.reply(ctx, s.rdb)
	if err != nil {
		return nil, nil, fmt.Errorf("redisstore: get grant of %s: %w", userID, err)
	}
	g, pending, err := grantFromReply(userID, res)
	if err == nil && len(pending) > 0 {
		g, err = s.healGrant(ctx, userID, g, pending)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("redisstore: get grant of %s: %w", userID, err)
	}
	return u, g, nil
}

func (s *Store) userThenGrant(ctx context.Context, userID string) (*grants.User, *grants.Grant, error) {
	u, err := s.GetUser(ctx, userID)
	if err != nil {
		return nil, nil, err
	}
	g, err := s.GetGrant(ctx, userID)
	if err != nil {
		return nil, nil, err
	}
	return u, g, nil
}
