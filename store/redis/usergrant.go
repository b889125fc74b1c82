package redis

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/sessions"
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
	var read *userGrantRead
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		read = s.queueUserAndGrant(ctx, p, userID)
		return nil
	})
	return read.result(ctx, s)
}

// userGrantRead is UserAndGrant's two scripts, queued in a pipeline.
type userGrantRead struct {
	userID      string
	user, grant *pipedScript
}

func (s *Store) queueUserAndGrant(ctx context.Context, p redis.Pipeliner, userID string) *userGrantRead {
	return &userGrantRead{userID: userID,
		user:  scriptCall{getUser, []string{s.key("u", userID)}, nil}.queue(ctx, p),
		grant: scriptCall{grantApply, s.grantKeys(userID), grantArgs("", grantRead...)}.queue(ctx, p)}
}

// answer is result as a grants.UserGrant, for the reads done beside
// another (a code's consumption, a refresh token's read, a Together).
func (q *userGrantRead) answer(ctx context.Context, s *Store) grants.UserGrant {
	var ug grants.UserGrant
	ug.User, ug.Grant, ug.Err = q.result(ctx, s)
	return ug
}

// userGrant is UserAndGrant as a grants.UserGrant (a cluster's fallback,
// one read after the other).
func (s *Store) userGrant(ctx context.Context, userID string) grants.UserGrant {
	var ug grants.UserGrant
	ug.User, ug.Grant, ug.Err = s.UserAndGrant(ctx, userID)
	return ug
}

// result is UserAndGrant's answer once the pipeline ran.
func (q *userGrantRead) result(ctx context.Context, s *Store) (*grants.User, *grants.Grant, error) {
	userID := q.userID
	ures, err := q.user.reply(ctx, s.rdb)
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
	res, err := q.grant.reply(ctx, s.rdb)
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

// ConsumeCodeWithUser is ConsumeCode with UserAndGrant of userID in the
// same round trip (on one master; one after the other on a cluster): a
// token exchange whose code names its subject reads what its tokens carry
// without a second trip. ug is what UserAndGrant would have answered.
func (s *Store) ConsumeCodeWithUser(ctx context.Context, hash, userID string) (*sessions.Code, grants.UserGrant, error) {
	if err := checkKeys("redisstore: consume code", hash, userID); err != nil {
		return nil, grants.UserGrant{}, err
	}
	if !s.oneMaster() {
		c, err := s.ConsumeCode(ctx, hash)
		if err != nil {
			return c, grants.UserGrant{}, err
		}
		return c, s.userGrant(ctx, userID), nil
	}
	var code *pipedScript
	var read *userGrantRead
	_, _ = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		code = s.consumeCodeCall(hash).queue(ctx, p)
		read = s.queueUserAndGrant(ctx, p, userID)
		return nil
	})
	c, err := codeConsumed(code.reply(ctx, s.rdb))
	return c, read.answer(ctx, s), err
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
