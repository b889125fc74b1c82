package auth0

import (
	"maps"
	"slices"
	"strings"
)

// app_metadata.usher.claims is a list of {"name", "value"} sorted by name:
// Auth0 refuses metadata field names that contain "." or start with "$"
// (https://auth0.com/docs/manage-users/user-accounts/metadata/metadata-fields-data),
// and claim names are often namespaced URLs ("https://app.example.com/plan"),
// so they are values here, never keys. Before, usher wrote an object keyed
// by claim name; claimsOf still reads it, and the next write of the user's
// metadata stores the list instead.

// claimsOf reads app_metadata.usher.claims in either form into a map.
func claimsOf(v any) map[string]any {
	out := make(map[string]any)
	switch c := v.(type) {
	case map[string]any: // written by an older usher
		maps.Copy(out, c)
	case []any:
		for _, e := range c {
			entry, _ := e.(map[string]any)
			if name, ok := entry["name"].(string); ok && name != "" {
				out[name] = entry["value"]
			}
		}
	}
	return out
}

// claimList is the stored form of claims ([] when there are none).
func claimList(claims map[string]any) []any {
	out := make([]any, 0, len(claims))
	for _, name := range slices.SortedFunc(maps.Keys(claims), strings.Compare) {
		out = append(out, map[string]any{"name": name, "value": claims[name]})
	}
	return out
}

// mergeClaims adds claims to the stored ones (either form); add wins.
func mergeClaims(old any, add map[string]any) []any {
	out := claimsOf(old)
	maps.Copy(out, add)
	return claimList(out)
}

// withoutClaim is the stored claims (either form) less one name.
func withoutClaim(old any, name string) []any {
	out := claimsOf(old)
	delete(out, name)
	return claimList(out)
}
