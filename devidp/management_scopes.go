package devidp

import (
	"context"
	"net/http"
	"slices"
	"strings"
)

// Management API scopes. Auth0 grants a machine-to-machine application the
// scopes ticked on its APIs tab, puts them in its Management API token, and
// refuses a call whose token lacks every scope the endpoint accepts:
// 403 {"error":"Forbidden","message":"Insufficient scope, expected any of:
// …","errorCode":"insufficient_scope"}
// (https://auth0.com/docs/secure/tokens/access-tokens/management-api-access-tokens,
// the scopes of each endpoint in https://auth0.com/docs/api/management/v2).
// A ManagementClients entry without Scopes is granted every scope below.

// managementScopeList is every scope devidp's endpoints accept.
var managementScopeList = []string{
	"read:users", "update:users", "update:users_app_metadata",
	"read:roles", "create:roles", "create:role_members", "delete:role_members",
}

type scopesKey struct{}

// grantedScopes is the scope set of a client's tokens.
func grantedScopes(c Client) map[string]bool {
	list := c.Scopes
	if len(list) == 0 {
		list = managementScopeList
	}
	set := make(map[string]bool, len(list))
	for _, sc := range list {
		set[sc] = true
	}
	return set
}

func scopeString(set map[string]bool) string {
	var out []string
	for sc := range set {
		out = append(out, sc)
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

// hasScope reports whether the request's token holds any of anyOf, and
// answers Auth0's 403 when it does not.
func hasScope(w http.ResponseWriter, r *http.Request, anyOf ...string) bool {
	held, _ := r.Context().Value(scopesKey{}).(map[string]bool)
	for _, sc := range anyOf {
		if held[sc] {
			return true
		}
	}
	writeAPIError(w, http.StatusForbidden, "Insufficient scope, expected any of: "+strings.Join(anyOf, ","), "insufficient_scope")
	return false
}

// needs serves h only to tokens holding one of anyOf.
func needs(h http.HandlerFunc, anyOf ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if hasScope(w, r, anyOf...) {
			h(w, r)
		}
	}
}

func withScopes(r *http.Request, set map[string]bool) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), scopesKey{}, set))
}
