package broker

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/usher-oidc/usher/grants"
	boltstore "github.com/usher-oidc/usher/store/bolt"
)

// The user and grant /authorize read beside the session (the claims cache
// inlineLogin fills) answer the session's check only for the user they
// are of: a session of another user, signed out everywhere, is not live
// even though the cached grant (of the hinted user) has no sign-out.
func TestSessionLiveReadsOnlyItsUser(t *testing.T) {
	ctx := context.Background()
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "usher.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	now := time.Now()
	for _, id := range []string{"usr_a", "usr_b"} {
		ident := grants.Identity{Issuer: "https://idp.example/", Subject: "auth0|" + id}
		if _, _, err := st.ResolveIdentity(ctx, ident, grants.Profile{Email: id + "@example.com"}, id, now); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.SignOutUser(ctx, "usr_b", now); err != nil {
		t.Fatal(err)
	}
	a, aGrant, err := (&Broker{grants: st}).userAndGrant(ctx, "usr_a")
	if err != nil {
		t.Fatal(err)
	}
	b := &Broker{grants: st, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	r := httptest.NewRequest("GET", "/authorize", nil)
	r = r.WithContext(context.WithValue(ctx, ctxClaimsCache, &claimsCache{user: a, grant: aGrant}))
	signedIn := now.Add(-time.Minute).UnixMilli()
	if !b.sessionLive(r, signedInAccount{UserID: "usr_a", SignedInAt: signedIn}) {
		t.Error("usr_a's session not live with usr_a's own read")
	}
	if b.sessionLive(r, signedInAccount{UserID: "usr_b", SignedInAt: signedIn}) {
		t.Error("usr_b's session, signed out everywhere, live on usr_a's cached read")
	}
	if b.sessionLive(r, signedInAccount{UserID: "usr_gone", SignedInAt: signedIn}) {
		t.Error("a session of an erased user is live")
	}
}

// The session ID's hint names a user only after its dot.
func TestSessionUserHint(t *testing.T) {
	for id, want := range map[string]string{"abc.usr_a": "usr_a", "abc": "", "": "", "abc.": ""} {
		if got := sessionUserHint(id); got != want {
			t.Errorf("sessionUserHint(%q) = %q, want %q", id, got, want)
		}
	}
}
