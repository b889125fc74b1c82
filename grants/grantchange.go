package grants

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// GrantChange is one change of a user's grant by an operator or by usher
// itself. Exactly one of its fields is set.
type GrantChange struct {
	RemoveRole  string
	RemoveClaim string
	SetClaim    string
	Value       any // SetClaim's value
	AddRoles    []string
	// Reason names the change in the grant.changed webhook ("role_removed",
	// "claim_removed", "claim_set", "default_roles", "admin_bootstrap"); the
	// default is derived from the field set.
	Reason string
}

// ChangeGrant applies c to userID's grant and records grant.changed in the
// same write (nothing when nothing changed). Taking a role or claim back
// names the user's upstream accounts on the event, so the Auth0 mirror
// removes it there too.
func (s *Service) ChangeGrant(ctx context.Context, userID string, c GrantChange, actor string) (*Grant, error) {
	now := s.o.Now()
	detail := map[string]string{}
	var change func(ev OutboxEvent) (*Grant, error)
	switch {
	case c.RemoveRole != "":
		detail["removed_role"], c.Reason = c.RemoveRole, or(c.Reason, "role_removed")
		change = func(ev OutboxEvent) (*Grant, error) {
			return s.o.Store.RemoveGrantRole(ctx, userID, c.RemoveRole, now, ev)
		}
	case c.RemoveClaim != "":
		detail["removed_claim"], c.Reason = c.RemoveClaim, or(c.Reason, "claim_removed")
		change = func(ev OutboxEvent) (*Grant, error) {
			return s.o.Store.RemoveGrantClaim(ctx, userID, c.RemoveClaim, now, ev)
		}
	case c.SetClaim != "":
		detail["set_claim"], c.Reason = c.SetClaim, or(c.Reason, "claim_set")
		change = func(ev OutboxEvent) (*Grant, error) {
			return s.o.Store.SetGrantClaim(ctx, userID, c.SetClaim, c.Value, now, ev)
		}
	case len(c.AddRoles) > 0:
		detail["added_role"], c.Reason = strings.Join(c.AddRoles, " "), or(c.Reason, "roles_added")
		change = func(ev OutboxEvent) (*Grant, error) { return s.o.Store.AddRoles(ctx, userID, c.AddRoles, now, ev) }
	default:
		return nil, errors.New("grant change: nothing to change")
	}
	detail["reason"] = c.Reason
	ev := s.newEvent(EventGrantChanged, actor, now, detail)
	ev.UserID = userID
	if (c.RemoveRole != "" || c.RemoveClaim != "") && s.o.UpstreamSubjects != nil {
		subs, err := s.o.UpstreamSubjects(ctx, userID)
		if err != nil {
			return nil, fmt.Errorf("grant change: upstream accounts of %s: %w", userID, err)
		}
		ev.UpstreamUsers = subs
	}
	g, err := change(ev)
	if err != nil {
		return nil, err
	}
	s.recorded()
	return g, nil
}

func or(s, def string) string {
	if s != "" {
		return s
	}
	return def
}
