package devidp_test

import (
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/usher-oidc/usher/devidp"
)

// Auth0 refuses metadata field names with a "." or a leading "$", at any
// depth, with 400 invalid_body
// (https://auth0.com/docs/manage-users/user-accounts/metadata/metadata-fields-data);
// the metadata stays as it was.
func TestManagementRefusesMetadataFieldNames(t *testing.T) {
	t.Parallel()
	srv, domain := startTenant(t, seeded)
	sub, _ := srv.UserSub(devidp.ConnectionPassword, seeded.Email)
	tok := goodToken(t, domain)
	uu := "http://" + domain + "/api/v2/users/" + url.PathEscape(sub)
	if resp := call(t, http.MethodPatch, uu, tok, map[string]any{"app_metadata": map[string]any{"plan": "gold"}}, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("a plain patch: %d", resp.StatusCode)
	}
	for _, tc := range []struct {
		name string
		body map[string]any
	}{
		{"dot at the top", map[string]any{"app_metadata": map[string]any{"https://app.example.com/plan": "x"}}},
		{"dollar at the top", map[string]any{"app_metadata": map[string]any{"$set": "x"}}},
		{"dot nested", map[string]any{"app_metadata": map[string]any{"usher": map[string]any{"claims": map[string]any{"a.b": 1}}}}},
		{"dollar in a list", map[string]any{"app_metadata": map[string]any{"l": []any{map[string]any{"$x": 1}}}}},
		{"user_metadata too", map[string]any{"user_metadata": map[string]any{"x": map[string]any{"a.b": 1}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body map[string]any
			resp := call(t, http.MethodPatch, uu, tok, tc.body, &body)
			if resp.StatusCode != http.StatusBadRequest || body["statusCode"] != float64(400) ||
				body["error"] != "Bad Request" || body["errorCode"] != "invalid_body" {
				t.Errorf("%d %v, want Auth0's 400 invalid_body", resp.StatusCode, body)
			}
			if msg, _ := body["message"].(string); !strings.HasPrefix(msg, "Payload validation error") {
				t.Errorf("message = %q", body["message"])
			}
		})
	}
	// Dots and dollars in values, and "$" after the first character, are fine.
	ok := map[string]any{"v": "https://app.example.com/plan", "a$b": "$x"}
	if resp := call(t, http.MethodPatch, uu, tok, map[string]any{"app_metadata": ok}, nil); resp.StatusCode != http.StatusOK {
		t.Errorf("values with dots: %d", resp.StatusCode)
	}
	want := map[string]any{"plan": "gold", "v": "https://app.example.com/plan", "a$b": "$x"}
	if got := srv.AppMetadata(sub); !reflect.DeepEqual(got, want) {
		t.Errorf("app_metadata = %v, want %v", got, want)
	}
	if err := srv.PatchAppMetadata(sub, map[string]any{"a.b": 1}); err == nil {
		t.Error("PatchAppMetadata took a dotted name")
	}
}
