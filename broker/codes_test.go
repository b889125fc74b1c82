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

// A code names its subject only to whoever holds the OP's keys: codes of
// this version and of the versions before (the library's JWE) name it;
// codes without a subject (older versions), with other keys, altered, or
// not codes at all name none.
func TestCodeSubject(t *testing.T) {
	older := op.NewAES256GCMCrypto([32]byte{1, 2, 3}, "")
	crypto := newCodeCrypto([]byte("01234567890123456789012345678901"), time.Minute, older)
	other := newCodeCrypto([]byte("another secret, 32 bytes or more"), time.Minute, op.NewAES256GCMCrypto([32]byte{9}, ""))
	encrypt := func(c op.Crypto, plain string) string {
		s, err := c.Encrypt(plain)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	code := encrypt(subjectCrypto{Crypto: crypto, subject: "usr_1"}, "ar-1")
	altered := []byte(code)
	altered[len(altered)/2] ^= 1
	for _, tc := range []struct {
		name, code, want string
	}{
		{"a code naming its subject", code, "usr_1"},
		{"an earlier version's code naming its subject", encrypt(subjectCrypto{Crypto: older, subject: "usr_1"}, "ar-1"), "usr_1"},
		{"an older version's code", encrypt(older, "ar-1"), ""},
		{"another key's code", encrypt(subjectCrypto{Crypto: other, subject: "usr_1"}, "ar-1"), ""},
		{"another key's earlier code", encrypt(subjectCrypto{Crypto: other.older, subject: "usr_1"}, "ar-1"), ""},
		{"an altered code", string(altered), ""},
		{"not a code", "usr_1", ""},
	} {
		if got := codeSubject(crypto, tc.code); got != tc.want {
			t.Errorf("%s: subject %q, want %q", tc.name, got, tc.want)
		}
	}
	if a, b := encrypt(crypto, "ar-1"), encrypt(crypto, "ar-1"); a == b {
		t.Error("two codes for the same request are the same")
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

// BenchmarkCodeCrypto: one code made and opened, with the library's JWE
// (what codes were before codeCrypto) and with codeCrypto.
func BenchmarkCodeCrypto(b *testing.B) {
	older := op.NewAES256GCMCrypto([32]byte{1, 2, 3}, "")
	for _, c := range []struct {
		name   string
		crypto op.Crypto
	}{
		{"library_jwe", older},
		{"securecookie", newCodeCrypto([]byte("01234567890123456789012345678901"), time.Minute, older)},
	} {
		b.Run(c.name, func(b *testing.B) {
			sc := subjectCrypto{Crypto: c.crypto, subject: "usr_0123456789abcdefghij"}
			for b.Loop() {
				code, err := sc.Encrypt("ar_0123456789abcdefghijklmnopq")
				if err != nil || codeSubject(c.crypto, code) != sc.subject {
					b.Fatal("round trip", err)
				}
			}
		})
	}
}
