package auth0

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/auth0/go-auth0/management"
)

// Auth0 account linking moves a secondary account into a primary one: the
// secondary's user_id is then no longer a user (GET /api/v2/users/{id}
// answers 404) and its identity is listed in the primary's identities[]
// (https://auth0.com/docs/manage-users/user-accounts/user-account-linking).
// usher keeps the sub it saw at sign-in, so a 404 for it is not "user gone"
// until the user search
// (https://auth0.com/docs/manage-users/user-search/user-search-query-syntax)
// finds no user holding that identity; when one does, the job updates it.

// readTarget reads the Auth0 user the job is for: p.UpstreamUser, or the
// primary user it was linked into (then p.linkedTo is set and that user's
// lease held in p.primaryLease, for process to release). The returned
// user's ID is the one to update.
func (m *Mirror) readTarget(ctx context.Context, p *mirrorPayload) (*management.User, error) {
	u, err := m.readUser(ctx, p.UpstreamUser)
	var gone errUserGone
	if !errors.As(err, &gone) {
		return u, err
	}
	primary, lerr := m.primaryOf(ctx, p.UpstreamUser)
	if lerr != nil {
		return nil, fmt.Errorf("%s answered 404; looking for a linked account: %w", p.UpstreamUser, lerr)
	}
	if primary == "" {
		return nil, err // gone indeed
	}
	if p.primaryLease == nil {
		held, lerr := m.leaseUser(context.WithoutCancel(ctx), primary, m.o.Lease)
		if lerr != nil {
			return nil, lerr // errUserBusy: process tries again soon
		}
		p.primaryLease = held
	}
	p.linkedTo = primary
	m.log.Info("auth0 user linked into another account; updating the primary",
		"upstream_user", p.UpstreamUser, "auth0_user", primary, "invitation_id", p.InvitationID)
	return m.readUser(ctx, primary)
}

// primaryOf finds the user whose identities hold sub's identity (provider
// = sub up to the first "|", user_id = the rest), other than sub itself;
// "" when there is none.
func (m *Mirror) primaryOf(ctx context.Context, sub string) (string, error) {
	primary, _, err := linkedIdentity(ctx, m.api, sub)
	return primary, err
}

// linkedIdentity searches, through api, the user sub was linked into and
// sub's identity among its identities[] (which carries the secondary
// account's connection and profileData); "" and nil when no user holds it.
func linkedIdentity(ctx context.Context, api *management.Management, sub string) (string, *management.UserIdentity, error) {
	provider, userID, ok := strings.Cut(sub, "|")
	if !ok || userID == "" {
		return "", nil, nil
	}
	q := `identities.user_id:"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(userID) + `"`
	list, err := api.User.Search(ctx, management.Query(q), management.Parameter("search_engine", "v3"),
		management.IncludeFields("user_id", "identities"))
	if err != nil {
		return "", nil, fmt.Errorf("search users: %w", err)
	}
	for _, u := range list.Users {
		if u.GetID() == sub {
			continue
		}
		for _, id := range u.Identities {
			if id.GetProvider() == provider && id.GetUserID() == userID {
				return u.GetID(), id, nil
			}
		}
	}
	return "", nil, nil
}

// releasePrimary ends the lease readTarget took on a primary user.
func (m *Mirror) releasePrimary(ctx context.Context, p *mirrorPayload) {
	if p.primaryLease != nil {
		m.releaseUser(ctx, p.primaryLease)
		p.primaryLease = nil
	}
}
