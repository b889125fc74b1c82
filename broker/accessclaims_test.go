package broker

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
)

// The one-pass payload decodes to exactly what the library's MarshalJSON
// produces, with and without private claims, and a private claim by a
// registered name never overrides the registered one.
func TestMarshalAccessClaimsMatchesTheLibrary(t *testing.T) {
	exp := time.Unix(1_900_000_000, 0)
	for _, tc := range []struct {
		name    string
		private map[string]any
	}{
		{"none", nil},
		{"roles and crm", map[string]any{"roles": []any{"customer"}, "https://app.example.com/crm_id": "C-42", "n": 1.5}},
		{"registered name", map[string]any{"sub": "forged", "roles": []any{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := oidc.NewAccessTokenClaims("https://usher.example.com", "usr_1", []string{"api"}, exp, "jti-1", "funnel", 0)
			c.Scopes = []string{"invitations:write"}
			c.Claims = tc.private
			want, err := json.Marshal(c)
			if err != nil {
				t.Fatal(err)
			}
			got, err := marshalAccessClaims(c)
			if err != nil {
				t.Fatal(err)
			}
			g := samePayload(t, got, want)
			if g["sub"] != "usr_1" {
				t.Fatalf("sub = %v", g["sub"])
			}
		})
	}
}

// samePayload fails t unless the JWT payloads ours (written in one pass)
// and library's decode to the same claims; it returns ours decoded.
func samePayload(t *testing.T, ours, library []byte) map[string]any {
	t.Helper()
	var w, g map[string]any
	if err := json.Unmarshal(library, &w); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(ours, &g); err != nil {
		t.Fatalf("%s: %v", ours, err)
	}
	if !reflect.DeepEqual(w, g) {
		t.Fatalf("one pass %s\nlibrary  %s", ours, library)
	}
	return g
}
