package auth0

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/auth0/go-auth0/management"

	"github.com/usher-oidc/usher/grants"
)

// An erased usher user is mirrored to Auth0 as a removal: the roles usher
// assigned and app_metadata.usher go; the Auth0 user itself stays (it is
// the tenant's, not usher's, to delete).

const opErase = "erase"

// erasure queues, for user.erased, one erase job per Auth0 account of the
// user (job IDs derived from the event: a repeated hand-over queues once).
func (m *Mirror) erasure(ctx context.Context, ev grants.OutboxEvent) error {
	roles := strings.Fields(ev.Detail["roles"])
	for i, sub := range ev.UpstreamUsers {
		payload, err := json.Marshal(mirrorPayload{Op: opErase, UpstreamUser: sub, Roles: roles})
		if err != nil {
			return err
		}
		now := m.o.Now()
		job := &grants.Job{ID: fmt.Sprintf("auth0_%s_%d", ev.ID, i), Kind: JobKindMirror, Payload: payload, RunAt: now, CreatedAt: now}
		if err := m.o.Store.EnqueueJob(ctx, job); err != nil && !errors.Is(err, grants.ErrConflict) {
			return fmt.Errorf("auth0 mirror: queue erasure for %s: %w", sub, err)
		}
	}
	if len(ev.UpstreamUsers) > 0 {
		m.loop.Poke()
	}
	return nil
}

// erase removes from one Auth0 user the roles usher mirrored there (those
// app_metadata.usher lists, else the roles the erased grant held) and
// app_metadata.usher. Repeating it changes nothing.
func (m *Mirror) erase(ctx context.Context, p *mirrorPayload) error {
	user, err := m.readTarget(ctx, p)
	var gone errUserGone
	if errors.As(err, &gone) {
		m.log.Info("auth0 user gone; nothing to erase", "upstream_user", p.UpstreamUser)
		return nil
	}
	if err != nil {
		return err
	}
	target := user.GetID()
	md := usherMetadata(user.GetAppMetadata())
	roles := p.Roles
	if md != nil {
		roles = assignedRoles(md) // not the roles someone else gave the user
	}
	var ids []*management.Role
	for _, name := range slices.Compact(slices.Sorted(slices.Values(roles))) {
		id, err := m.roleID(ctx, name, false)
		if err != nil {
			return err
		}
		if id != "" {
			ids = append(ids, &management.Role{ID: &id})
		}
	}
	if len(ids) > 0 {
		if err := m.api.User.RemoveRoles(ctx, target, ids); err != nil {
			if statusOf(err) == http.StatusNotFound {
				m.forgetRoles()
				return fmt.Errorf("remove roles: a role changed in Auth0, retrying: %w", retryable{err})
			}
			return fmt.Errorf("remove roles: %w", err)
		}
	}
	if md == nil {
		return nil
	}
	return m.writeUsherMetadata(ctx, target, nil) // null deletes the key
}
