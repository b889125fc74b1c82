package broker

import (
	"context"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/usher-oidc/usher/grants"
	boltstore "github.com/usher-oidc/usher/store/bolt"
)

// A code names its subject only to whoever holds the OP's key: codes
// encrypted without a subject (older versions), with another key, or not
// codes at all name none.
func TestCodeSubject(t *testing.T) {
	key := [32]byte{1, 2, 3}
	crypto := op.NewAES256GCMCrypto(key, "")
	other := op.NewAES256GCMCrypto([32]byte{9}, "")
	encrypt := func(c op.Crypto, plain string) string {
		s, err := c.Encrypt(plain)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, tc := range []struct {
		name, code, want string
	}{
		{"a code naming its subject", encrypt(subjectCrypto{Crypto: crypto, subject: "usr_1"}, "ar-1"), "usr_1"},
		{"an older version's code", encrypt(crypto, "ar-1"), ""},
		{"another key's code", encrypt(subjectCrypto{Crypto: other, subject: "usr_1"}, "ar-1"), ""},
		{"not a code", "usr_1", ""},
	} {
		if got := codeSubject(crypto, tc.code); got != tc.want {
			t.Errorf("%s: subject %q, want %q", tc.name, got, tc.want)
		}
	}
}

// A user and grant read beside a code serve only a token response for that
// same subject: a code whose record belongs to another user than the one
// it named (never issued so, but the name is a hint, not trusted) gets
// that user's own claims.
func TestClaimsCacheServesOnlyItsSubject(t *testing.T) {
	ctx := context.Background()
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "usher.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	now := time.Now()
	roles := map[string]string{"usr_named": "admin", "usr_holder": "member"}
	for id, role := range roles {
		ident := grants.Identity{Issuer: "https://idp.example/", Subject: "auth0|" + id}
		if _, _, err := st.ResolveIdentity(ctx, ident, grants.Profile{Email: id + "@example.com"}, id, now); err != nil {
			t.Fatal(err)
		}
		if _, err := st.AddRoles(ctx, id, []string{role}, now); err != nil {
			t.Fatal(err)
		}
	}
	named, err := st.GetUser(ctx, "usr_named")
	if err != nil {
		t.Fatal(err)
	}
	namedGrant, err := st.GetGrant(ctx, "usr_named")
	if err != nil {
		t.Fatal(err)
	}
	b := &Broker{grants: st}
	ctx = context.WithValue(ctx, ctxClaimsCache, &claimsCache{user: named, grant: namedGrant})
	u, err := b.user(ctx, "usr_holder")
	if err != nil || u.ID != "usr_holder" {
		t.Fatalf("user: %+v, %v", u, err)
	}
	claims, err := b.privateClaims(ctx, "usr_holder", "")
	if err != nil {
		t.Fatal(err)
	}
	if got := claims["roles"]; !reflect.DeepEqual(got, []string{"member"}) {
		t.Errorf("roles %v, want the holder's [member]", got)
	}
}
