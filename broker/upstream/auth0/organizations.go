package auth0

import "strings"

// Auth0 Organizations claims (https://auth0.com/docs/manage-users/organizations/using-tokens):
// org_id always when the sign-in went through an organization, org_name with
// "Use Organization Names in Authentication API".
const (
	ClaimOrgID   = "org_id"
	ClaimOrgName = "org_name"
)

// InOrganization: the sign-in's claims are of a sign-in through org: by ID
// (org_…) or, with organization names enabled, by name; org "" means the
// sign-in went through no organization. Auth0's advice for organization
// logins is to check that the ID token's org_id is the organization asked for.
func (u *Upstream) InOrganization(org string, claims map[string]any) bool {
	if org == "" {
		return claims[ClaimOrgID] == nil
	}
	id, _ := claims[ClaimOrgID].(string)
	if strings.HasPrefix(org, "org_") {
		return id == org
	}
	name, _ := claims[ClaimOrgName].(string)
	return name != "" && strings.EqualFold(name, org)
}
