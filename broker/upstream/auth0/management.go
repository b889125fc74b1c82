package auth0

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"slices"

	"github.com/usher-oidc/usher/grants"

	"github.com/auth0/go-auth0/management"
)

// redeem mirrors one redemption; it returns the roles it could not find
// (CreateRoles off). Every step is idempotent, so a retry repeats them all.
func (m *Mirror) redeem(ctx context.Context, p *mirrorPayload) (missing []string, err error) {
	roles, claims := p.Roles, p.Claims
	if p.UsherUser != "" {
		g, err := m.o.Store.GetGrant(ctx, p.UsherUser)
		if err != nil {
			return nil, fmt.Errorf("load the grant of %s: %w", p.UsherUser, err)
		}
		roles = slices.DeleteFunc(slices.Clone(roles), func(r string) bool { return !slices.Contains(g.Roles, r) })
		kept := make(map[string]any, len(claims))
		for k := range claims {
			if v, ok := g.Claims[k]; ok {
				kept[k] = v // the grant's value: later invitations win
			}
		}
		claims = kept
	}

	user, err := m.readTarget(ctx, p)
	if err != nil {
		return nil, err
	}
	target := user.GetID()
	held := map[string]bool{}
	if len(roles) > 0 {
		if held, err = m.heldRoles(ctx, target); err != nil {
			return nil, err
		}
	}

	assign, assignNames, missing, err := m.rolesToAssign(ctx, roles, held)
	if err != nil {
		return nil, err
	}

	// The metadata first: a retry after a crash between the two steps
	// finds the roles not held yet and assigns them, already recorded as
	// usher's; the other order would take them for someone else's.
	old := usherMetadata(user.GetAppMetadata())
	next := normalizeJSON(map[string]any{
		"roles":          unionSorted(stringList(old["roles"]), roles),
		assignedRolesKey: unionSorted(assignedRoles(old), assignNames), // usher's before, and those it assigns now
		"claims":         mergeClaims(old["claims"], claims),
		"invitations":    appendUnique(stringList(old["invitations"]), p.InvitationID),
	})
	if !reflect.DeepEqual(old, next) {
		if err := m.writeUsherMetadata(ctx, target, next); err != nil {
			return nil, err
		}
	}
	if len(assign) > 0 {
		if err := m.api.User.AssignRoles(ctx, target, assign); err != nil {
			if statusOf(err) == http.StatusNotFound {
				// The user exists (just read), so a cached role was deleted.
				m.forgetRoles()
				return nil, fmt.Errorf("assign roles: a role changed in Auth0, retrying: %w", retryable{err})
			}
			return nil, fmt.Errorf("assign roles: %w", err)
		}
	}
	return missing, nil
}

// rolesToAssign resolves roles to Auth0 role IDs: those to assign (not
// held yet; a held one is someone else's to take back, so not usher's),
// their names, and the roles Auth0 does not have.
func (m *Mirror) rolesToAssign(ctx context.Context, roles []string, held map[string]bool) (assign []*management.Role, names, missing []string, err error) {
	for _, name := range roles {
		id, err := m.roleID(ctx, name, m.o.CreateRoles)
		if err != nil {
			return nil, nil, nil, err
		}
		if id == "" {
			missing = append(missing, name)
			continue
		}
		if !held[name] {
			assign = append(assign, &management.Role{ID: &id})
			names = append(names, name)
		}
	}
	return assign, names, missing, nil
}

// revoke removes a role and/or a claim key from the Auth0 user. A user that
// no longer exists has nothing left to remove. What the usher user's grant
// holds again by now (granted anew after the revocation, its job run
// first) stays: the mirror follows the grant, not the order of its jobs.
func (m *Mirror) revoke(ctx context.Context, p *mirrorPayload) error {
	if nothingLeft, err := m.keepRegranted(ctx, p); err != nil || nothingLeft {
		return err
	}
	user, err := m.readTarget(ctx, p)
	var gone errUserGone
	if errors.As(err, &gone) {
		m.log.Info("auth0 user gone; nothing to revoke", "upstream_user", p.UpstreamUser)
		return nil
	}
	if err != nil {
		return err
	}
	target := user.GetID()
	old := usherMetadata(user.GetAppMetadata())
	if p.Role != "" && slices.Contains(assignedRoles(old), p.Role) { // else not usher's to remove
		if err := m.removeRole(ctx, target, p.Role); err != nil {
			return err
		}
	}
	if old == nil {
		return nil
	}
	next := normalizeJSON(old)
	if p.Role != "" {
		next["roles"] = withoutRole(stringList(old["roles"]), p.Role)
		next[assignedRolesKey] = withoutRole(assignedRoles(old), p.Role)
	}
	// Always rewritten: this also converts claims an older usher stored
	// as an object (claimsOf).
	next["claims"] = withoutClaim(old["claims"], p.ClaimKey)
	next = normalizeJSON(next)
	if reflect.DeepEqual(old, next) {
		return nil
	}
	return m.writeUsherMetadata(ctx, target, next)
}

// keepRegranted clears from p the role and claim key that the usher user's
// grant holds again, and reports whether that leaves nothing to revoke. A
// job without a usher user, or whose grant is gone (erased), keeps both.
func (m *Mirror) keepRegranted(ctx context.Context, p *mirrorPayload) (nothingLeft bool, err error) {
	if p.UsherUser == "" {
		return false, nil
	}
	g, err := m.o.Store.GetGrant(ctx, p.UsherUser)
	switch {
	case errors.Is(err, grants.ErrNotFound): // no grant (erased): remove
		return false, nil
	case err != nil:
		return false, fmt.Errorf("load the grant of %s: %w", p.UsherUser, err)
	}
	if slices.Contains(g.Roles, p.Role) {
		p.Role = ""
	}
	if _, held := g.Claims[p.ClaimKey]; held {
		p.ClaimKey = ""
	}
	return p.Role == "" && p.ClaimKey == "", nil
}

// removeRole takes the Auth0 role named role away from the user target; a
// role Auth0 does not have is nothing to remove.
func (m *Mirror) removeRole(ctx context.Context, target, role string) error {
	id, err := m.roleID(ctx, role, false)
	if err != nil {
		return err
	}
	if id == "" {
		return nil
	}
	if err := m.api.User.RemoveRoles(ctx, target, []*management.Role{{ID: &id}}); err != nil {
		if statusOf(err) == http.StatusNotFound {
			m.forgetRoles()
			return fmt.Errorf("remove role: a role changed in Auth0, retrying: %w", retryable{err})
		}
		return fmt.Errorf("remove role %q: %w", role, err)
	}
	return nil
}

func (m *Mirror) readUser(ctx context.Context, id string) (*management.User, error) {
	u, err := m.api.User.Read(ctx, id, management.IncludeFields("user_id", "app_metadata"))
	if err != nil {
		if statusOf(err) == http.StatusNotFound {
			return nil, fmt.Errorf("read user: %w", errUserGoneStatus{errUserGone{id}})
		}
		return nil, fmt.Errorf("read user: %w", err)
	}
	return u, nil
}

// writeUsherMetadata replaces app_metadata.usher; Auth0 merges top-level
// app_metadata keys, so the tenant's other keys stay as they are.
func (m *Mirror) writeUsherMetadata(ctx context.Context, id string, usher map[string]any) error {
	md := map[string]any{mirrorMetadataKey: usher}
	if err := m.api.User.Update(ctx, id, &management.User{AppMetadata: &md}); err != nil {
		return fmt.Errorf("update app_metadata: %w", err)
	}
	return nil
}

// roleID finds a role by exact name (name_filter is a loose match), creating
// it when create is set; "" when it does not exist.
func (m *Mirror) roleID(ctx context.Context, name string, create bool) (string, error) {
	m.mu.Lock()
	id, ok := m.roleIDs[name]
	m.mu.Unlock()
	if ok {
		return id, nil
	}
	id, err := m.findRole(ctx, name)
	if err != nil || id != "" || !create {
		return id, err
	}
	r := &management.Role{Name: &name, Description: ptr(mirrorRoleDesc)}
	if err := m.api.Role.Create(ctx, r); err != nil {
		if statusOf(err) != http.StatusConflict {
			return "", fmt.Errorf("create role %q: %w", name, err)
		}
		// Created meanwhile (another replica): look again.
		if id, err = m.findRole(ctx, name); err != nil || id == "" {
			return "", fmt.Errorf("create role %q: conflict, then not found: %w", name, retryable{errors.Join(err, errors.New("role not found"))})
		}
	} else {
		id = r.GetID()
		m.log.Info("auth0 role created", "role", name, "role_id", id)
	}
	m.mu.Lock()
	m.roleIDs[name] = id
	m.mu.Unlock()
	return id, nil
}

func (m *Mirror) findRole(ctx context.Context, name string) (string, error) {
	for page := 0; ; page++ {
		list, err := m.api.Role.List(ctx, management.Parameter("name_filter", name), management.PerPage(100), management.Page(page))
		if err != nil {
			return "", fmt.Errorf("look up role %q: %w", name, err)
		}
		for _, r := range list.Roles {
			if r.GetName() == name {
				m.mu.Lock()
				m.roleIDs[name] = r.GetID()
				m.mu.Unlock()
				return r.GetID(), nil
			}
		}
		if !list.HasNext() || len(list.Roles) == 0 {
			return "", nil
		}
	}
}

func (m *Mirror) forgetRoles() {
	m.mu.Lock()
	clear(m.roleIDs)
	m.mu.Unlock()
}

// usherMetadata returns app_metadata.usher normalised through JSON (nil when absent).
func usherMetadata(appMetadata map[string]any) map[string]any {
	u, ok := appMetadata[mirrorMetadataKey].(map[string]any)
	if !ok {
		return nil
	}
	return normalizeJSON(u)
}

// normalizeJSON round-trips a value through JSON so that comparisons see
// what Auth0 would store (numbers as float64, nil lists as absent…).
func normalizeJSON(m map[string]any) map[string]any {
	b, err := json.Marshal(m)
	if err != nil {
		return m
	}
	var out map[string]any
	if json.Unmarshal(b, &out) != nil {
		return m
	}
	return out
}

func stringList(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, x := range l {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

func unionSorted(a, b []string) []string {
	out := append(slices.Clone(a), b...)
	slices.Sort(out)
	return slices.Compact(out)
}

func appendUnique(l []string, s string) []string {
	if s == "" || slices.Contains(l, s) {
		return l
	}
	return append(l, s)
}

func ptr[T any](v T) *T { return &v }
