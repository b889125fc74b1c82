package devidp

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/zitadel/oidc/v3/pkg/oidc"
)

// Two Auth0 features that put claims in ID tokens.
//
// Post-login Action custom claims (SetIDTokenClaims), as
// api.idToken.setCustomClaim does
// (https://auth0.com/docs/customize/actions/explore-triggers/post-login,
// https://auth0.com/docs/secure/tokens/json-web-tokens/create-custom-claims):
// a claim Auth0 restricts (OIDC standard claims, org_id, org_name, …) is
// not added, the sign-in does not fail.
//
// Organizations (Config.Organizations), as
// https://auth0.com/docs/manage-users/organizations/using-tokens: /authorize
// takes `organization` (an org_ ID, or a name with
// Config.OrganizationNames, "Use Organization Names in Authentication API")
// and the ID token then carries org_id, plus org_name with organization
// names on. An unknown organization is refused (invalid_request), as Auth0
// refuses one that does not exist. devidp does not model membership: anyone
// may sign in to a configured organization, with or without an `invitation`
// (accepted and ignored).

// Organization is an Auth0 organization.
type Organization struct {
	ID   string // org_…
	Name string // lower case, as Auth0's
}

// restrictedCustomClaims are names Auth0 will not let an Action set
// (a subset of its list: the ones an ID token actually has).
var restrictedCustomClaims = []string{
	"acr", "amr", "at_hash", "aud", "auth_time", "azp", "c_hash", "exp", "iat", "iss", "jti",
	"nbf", "nonce", "org_id", "org_name", "s_hash", "sid", "sub", "typ",
	"name", "nickname", "picture", "email", "email_verified", "updated_at",
}

// SetIDTokenClaims sets the custom claims a post-login Action adds to every
// ID token issued from now on (nil: none). Restricted names are dropped.
func (s *Server) SetIDTokenClaims(claims map[string]any) {
	s.store.mu.Lock()
	defer s.store.mu.Unlock()
	s.store.actionClaims = maps.Clone(claims)
}

func (s *store) idTokenClaims() map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.actionClaims
}

// findOrganization resolves the `organization` parameter.
func (s *store) findOrganization(param string) (*Organization, error) {
	for i := range s.orgs {
		o := &s.orgs[i]
		if o.ID == param || (s.orgNames && strings.EqualFold(o.Name, param)) {
			return o, nil
		}
	}
	return nil, oidc.ErrInvalidRequest().WithDescription("parameter organization is invalid: no organization %q", param)
}

// addIDTokenClaims adds the Action's claims and the organization's to info.
func (s *store) addIDTokenClaims(info *oidc.UserInfo, org *Organization) {
	for k, v := range s.idTokenClaims() {
		if !slices.Contains(restrictedCustomClaims, k) {
			info.AppendClaims(k, v)
		}
	}
	if org != nil {
		info.AppendClaims("org_id", org.ID)
		if s.orgNames {
			info.AppendClaims("org_name", org.Name)
		}
	}
}

func validateOrganizations(orgs []Organization) error {
	for i, o := range orgs {
		if !strings.HasPrefix(o.ID, "org_") || o.Name == "" {
			return fmt.Errorf("devidp: Organizations[%d]: ID must start with org_ and Name be set", i)
		}
	}
	return nil
}
