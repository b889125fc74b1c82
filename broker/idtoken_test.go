package broker

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
)

// The ID token payload written in one pass (after the sid is lifted into
// its field) decodes to exactly what the library's MarshalJSON produces
// from the claims op.CreateIDToken builds: private claims kept, a private
// claim by a registered name left out when the registered one is set and
// kept when it is empty, as the library's merge does.
func TestMarshalIDClaimsMatchesTheLibrary(t *testing.T) {
	now := time.Unix(1_900_000_000, 0)
	for _, tc := range []struct {
		name    string
		private map[string]any
		nonce   string
	}{
		{"none", nil, "n-1"},
		{"roles, crm and sid", map[string]any{"roles": []any{"customer"}, "https://app.example.com/crm_id": "C-42", "sid": "bs_1"}, "n-1"},
		{"registered name set", map[string]any{"sub": "forged", "email": "forged@example.com"}, "n-1"},
		{"registered name empty", map[string]any{"nonce": "private", "roles": []any{}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			build := func() *oidc.IDTokenClaims {
				c := oidc.NewIDTokenClaims("https://usher.example.com", "usr_1", []string{"spa"}, now.Add(time.Hour), now, tc.nonce, "", []string{"pwd"}, "spa", 0)
				c.AccessTokenHash = "hash"
				info := &oidc.UserInfo{Subject: "usr_1"}
				info.Email, info.EmailVerified = "ada@example.com", true
				info.Name = "Ada"
				for k, v := range tc.private {
					info.AppendClaims(k, v)
				}
				c.SetUserInfo(info)
				return c
			}
			want, err := json.Marshal(build())
			if err != nil {
				t.Fatal(err)
			}
			ours := build()
			liftSessionID(ours)
			got, err := marshalIDClaims(ours)
			if err != nil {
				t.Fatal(err)
			}
			g := samePayload(t, got, want)
			if g["sub"] != "usr_1" || g["email"] != "ada@example.com" {
				t.Fatalf("registered claims overridden: %s", got)
			}
		})
	}
}
