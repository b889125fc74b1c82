package devidp

import (
	"fmt"
	"strings"
)

// metadataNameError refuses a metadata field name Auth0 refuses: "Metadata
// field names must not contain a dot" nor start with "$"
// (https://auth0.com/docs/manage-users/user-accounts/metadata/metadata-fields-data).
// Auth0 checks every depth and answers 400 invalid_body, so a client that
// keys an object by, say, a namespaced claim name
// ("https://app.example.com/plan") never gets it stored; devidp does the same.
// field is "app_metadata" or "user_metadata"; "" means the value is fine.
func metadataNameError(field string, v any) string {
	var bad string
	var walk func(path string, v any) bool
	walk = func(path string, v any) bool {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				if strings.Contains(k, ".") || strings.HasPrefix(k, "$") {
					bad = path + "[" + fmt.Sprintf("%q", k) + "]"
					return false
				}
				if !walk(path+"."+k, e) {
					return false
				}
			}
		case []any:
			for i, e := range x {
				if !walk(fmt.Sprintf("%s[%d]", path, i), e) {
					return false
				}
			}
		}
		return true
	}
	if walk(field, v) {
		return ""
	}
	return fmt.Sprintf("Payload validation error: 'Invalid field name at %s: metadata field names must not contain \".\" nor start with \"$\"'.", bad)
}
