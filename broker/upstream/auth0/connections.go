package auth0

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/auth0/go-auth0/management"
)

// maxConnectionWait bounds Connection, on the login path: a permit from the
// lookup's share of the budget (the login reserve) and the call itself.
const maxConnectionWait = 500 * time.Millisecond

// maxCachedConnections bounds the connection cache.
const maxCachedConnections = 10000

// errUnknownConnection: the user read has no identities[0].connection.
var errUnknownConnection = errors.New("auth0 mirror: the user has no identities[0].connection")

// Connection is the connection the Auth0 user sub belongs to, as the
// Management API says (GET /api/v2/users/{id}?fields=identities →
// identities[0].connection): database subs are auth0|… whatever their
// connection. It takes a permit like HasAccount (the login reserve) and
// answers within maxConnectionWait or with an error, on which the caller
// keeps ConnectionOf(sub). Answers are remembered in this process (a user's
// connection never changes).
func (m *Mirror) Connection(ctx context.Context, sub string) (string, error) {
	if sub == "" {
		return "", errors.New("auth0 mirror: connection: empty user id")
	}
	m.mu.Lock()
	name, ok := m.connections[sub]
	m.mu.Unlock()
	if ok {
		return name, nil
	}
	if m.o.Now().Before(m.pausedUntil()) {
		return "", ErrMirrorRateLimited
	}
	ctx, cancel := context.WithTimeout(ctx, maxConnectionWait)
	defer cancel()
	type result struct {
		u   *management.User
		err error
	}
	// The token fetch ignores ctx; never wait for it longer than the budget.
	ch := make(chan result, 1)
	go func() {
		u, err := m.lookup.User.Read(ctx, sub, management.IncludeFields("identities"))
		if statusOf(err) == http.StatusNotFound {
			u, err = linkedConnection(ctx, m.lookup, sub, err)
		}
		ch <- result{u, err}
	}()
	var r result
	select {
	case r = <-ch:
	case <-ctx.Done():
		return "", fmt.Errorf("auth0 mirror: read user %s: %w", sub, ctx.Err())
	}
	if r.err != nil {
		return "", m.lookupError("read user", sub, r.err)
	}
	if r.u == nil || len(r.u.Identities) == 0 || r.u.Identities[0].GetConnection() == "" {
		return "", errUnknownConnection
	}
	name = r.u.Identities[0].GetConnection()
	m.mu.Lock()
	if len(m.connections) >= maxCachedConnections {
		clear(m.connections) // start over rather than grow
	}
	m.connections[sub] = name
	m.mu.Unlock()
	return name, nil
}

// linkedConnection answers for a sub Auth0 no longer knows as a user (a
// 404: linked into another account) with its identity as the primary
// lists it, whose connection is the one the person signed in with; the
// 404 notFound stands when no user holds the identity.
func linkedConnection(ctx context.Context, api *management.Management, sub string, notFound error) (*management.User, error) {
	_, id, err := linkedIdentity(ctx, api, sub)
	if err != nil {
		return nil, err
	}
	if id == nil {
		return nil, notFound
	}
	return &management.User{Identities: []*management.UserIdentity{id}}, nil
}
