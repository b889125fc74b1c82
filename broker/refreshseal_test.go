package broker

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/sessions"
)

// rotatorStore is a sessions store that can rotate with a user read (only
// what sealing asks of it: the capability).
type rotatorStore struct{ sessions.Store }

func (rotatorStore) RotateRefreshTokenWithUser(context.Context, string, *sessions.RefreshToken, string) (grants.UserGrant, error) {
	return grants.UserGrant{}, nil
}

// A sealed refresh token opens to its family's data, and only as the token
// it was issued in: not under another key, not pasted onto another
// family's or subject's token, not on a store that cannot rotate with a
// user read. A family too large to carry, or a subject the token cannot
// name, gets an unsealed token.
func TestRefreshSeal(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	now := time.Unix(1_780_000_000, 123456789).UTC()
	b := &Broker{refreshSeal: newRefreshSeal(secret, 90*24*time.Hour), sessions: rotatorStore{}}
	rec := func(family, subject string, claims map[string]any) *sessions.RefreshToken {
		return &sessions.RefreshToken{FamilyID: family, Subject: subject, ClientID: "spa",
			Scopes: []string{"openid", "offline_access"}, Audience: []string{"spa"}, AMR: []string{"pwd"},
			AuthTime: now.Add(-time.Minute), CreatedAt: now, ExpiresAt: now.Add(time.Hour),
			FamilyExpiresAt: now.Add(90 * 24 * time.Hour), FamilyCreatedAt: now, SessionID: "sid-1",
			Upstream: &sessions.Upstream{Subject: "auth0|1", Claims: claims}}
	}
	r := rec("fam1", "usr_1", map[string]any{"nickname": "ada"})
	token := b.issueRefresh(r)
	if strings.Count(token, ".") != 3 || r.Hash != hashToken(token) {
		t.Fatalf("issued %q (hash %s): want a sealed token and its hash", token, r.Hash)
	}
	got := b.openSealedRefresh(token)
	if got == nil || !got.sealed {
		t.Fatalf("the token's own seal did not open: %+v", got)
	}
	want := *r
	want.CreatedAt, want.ExpiresAt = time.Time{}, time.Time{} // a link's own times stay in the store
	if !reflect.DeepEqual(*got.rt, want) || !reflect.DeepEqual(got.scopes, r.Scopes) {
		t.Errorf("opened %+v, want %+v", *got.rt, want)
	}

	other := b.issueRefresh(rec("fam2", "usr_2", nil))
	body := token[:strings.LastIndex(token, ".")]
	otherKey := &Broker{refreshSeal: newRefreshSeal([]byte("another secret of 32 bytes or so"), time.Hour), sessions: rotatorStore{}}
	for name, tc := range map[string]struct {
		b     *Broker
		token string
	}{
		"another key":                       {otherKey, token},
		"another family's seal":             {b, body + other[strings.LastIndex(other, "."):]},
		"no seal":                           {b, body},
		"a store without a rotation + read": {&Broker{refreshSeal: b.refreshSeal, sessions: struct{ sessions.Store }{}}, token},
	} {
		if got := tc.b.openSealedRefresh(tc.token); got != nil {
			t.Errorf("%s: opened %+v", name, got.rt)
		}
	}

	big := map[string]any{"bio": strings.Repeat("x", maxSealedFamily)}
	for name, r := range map[string]*sessions.RefreshToken{
		"a family too large to carry": rec("fam3", "usr_3", big),
		"a subject with a dot":        rec("fam4", "usr.4", nil),
	} {
		if token := b.issueRefresh(r); strings.Count(token, ".") > 2 || r.Hash != hashToken(token) {
			t.Errorf("%s: issued %q, want an unsealed token", name, token)
		}
	}
	plain := &Broker{refreshSeal: b.refreshSeal, sessions: struct{ sessions.Store }{}}
	if token := plain.issueRefresh(rec("fam5", "usr_5", nil)); strings.Count(token, ".") != 2 {
		t.Errorf("a store without a rotation + read: issued %q, want an unsealed token", token)
	}
}
