package auth0

import (
	"context"
	"fmt"
	"slices"

	"github.com/auth0/go-auth0/management"
)

// Auth0 roles are the tenant's: an administrator may have given the user a
// role before any invitation did. usher therefore records in
// app_metadata.usher.assigned_roles the roles it assigned itself (the user
// did not hold them when usher assigned them), and takes back from Auth0
// only those; "roles" stays the list of roles usher's grant mirrored.

const assignedRolesKey = "assigned_roles"

// assignedRoles is the roles usher assigned in Auth0, by name. Metadata
// written before usher kept the list has no key: every role it lists under
// "roles" was assigned by usher then.
func assignedRoles(md map[string]any) []string {
	if v, ok := md[assignedRolesKey]; ok {
		return stringList(v)
	}
	return stringList(md["roles"])
}

// heldRoles is the set of role names the Auth0 user holds now.
func (m *Mirror) heldRoles(ctx context.Context, userID string) (map[string]bool, error) {
	held := map[string]bool{}
	for page := 0; ; page++ {
		list, err := m.api.User.Roles(ctx, userID, management.Page(page), management.PerPage(100))
		if err != nil {
			return nil, fmt.Errorf("read the user's roles: %w", err)
		}
		for _, r := range list.Roles {
			held[r.GetName()] = true
		}
		if !list.HasNext() || len(list.Roles) == 0 {
			return held, nil
		}
	}
}

// withoutRole is list without role.
func withoutRole(list []string, role string) []string {
	return slices.DeleteFunc(slices.Clone(list), func(r string) bool { return r == role })
}
