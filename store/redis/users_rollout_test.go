package redis_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usher-oidc/usher/grants"
	redisstore "github.com/usher-oidc/usher/store/redis"
)

// checkUsersRollout: a user created on one replica is signed in again,
// granted, linked, relinked, listed and looked up by email on the other,
// and what each wrote reads back on the first.
func checkUsersRollout(t *testing.T, writerFormat, readerFormat string) {
	ctx := ctxT(t)
	writer, reader := replicas(t, writerFormat, readerFormat)
	now := time.Now().UTC()
	first := grants.Identity{Issuer: "https://tenant.eu.auth0.com/", Subject: "auth0|ann"}
	u, created, err := writer.ResolveIdentity(ctx, first, grants.Profile{Email: "Ann@Example.com", EmailVerified: true, Name: "Ann"}, "usr_ann", now)
	must(t, "create user", err)
	if !created || u.ID != "usr_ann" {
		t.Fatalf("created %v, user %+v", created, u)
	}
	_, err = writer.AddRoles(ctx, "usr_ann", []string{"member"}, now)
	must(t, "add roles on the writer", err)
	checkUserForm(t, writer, "usr_ann", writerFormat)

	// The other replica: a second sign-in with a new email and picture.
	later := now.Add(time.Minute)
	pic := "https://img.example/" + strings.Repeat("p", 200) // lengths past one varint byte
	again, created, err := reader.ResolveIdentity(ctx, first, grants.Profile{Email: "ann@new.example", Picture: pic}, "usr_other", later)
	must(t, "sign in again on the reader", err)
	if created || again.ID != "usr_ann" || again.Email != "ann@new.example" || again.Name != "Ann" || again.Picture != pic ||
		!again.CreatedAt.Equal(now) || !again.LastLoginAt.Equal(later) {
		t.Errorf("second sign-in: created %v, %+v", created, again)
	}
	_, err = reader.AddRoles(ctx, "usr_ann", []string{"admin", "member"}, later)
	must(t, "add roles on the reader", err)
	second := grants.Identity{Issuer: "https://accounts.google.com", Subject: "1234", UserID: "usr_ann", Email: "ann@new.example",
		CreatedAt: later.Add(time.Second)}
	must(t, "link on the reader", reader.LinkIdentity(ctx, second))
	bob, _, err := reader.ResolveIdentity(ctx, grants.Identity{Issuer: first.Issuer, Subject: "auth0|bob"}, grants.Profile{Email: "bob@example.com"}, "usr_bob", later)
	must(t, "create a user on the reader", err)
	checkUserForm(t, writer, bob.ID, readerFormat)
	second.UserID = bob.ID
	must(t, "relink on the reader", reader.RelinkIdentity(ctx, second, "usr_ann"))

	// The first replica reads it all back.
	for _, s := range []*redisstore.Store{writer, reader} {
		checkUsersReadBack(t, s, pic, bob.ID, first.Subject)
	}
	checkNoEmailUser(t, writer, reader, now)

	// Removing a role on the writer keeps the order the reader wrote.
	g, err := writer.RemoveGrantRole(ctx, "usr_ann", "member", later)
	must(t, "remove role on the writer", err)
	if !slices.Equal(g.Roles, []string{"admin"}) {
		t.Errorf("roles after removal %v", g.Roles)
	}
	must(t, "erase on the writer", writer.EraseUser(ctx, bob.ID, later))
	if ids, err := reader.Identities(ctx, bob.ID); err != nil || len(ids) != 0 {
		t.Errorf("identities of the erased user: %v, %v", ids, err)
	}
	if _, _, err := reader.ResolveIdentity(ctx, second, grants.Profile{}, "usr_fresh", later); err != nil {
		t.Errorf("the erased user's identity signs in afresh: %v", err)
	}
}

// checkNoEmailUser: a user without an email gets one on the other replica;
// its list entry moves (none is left under no email).
func checkNoEmailUser(t *testing.T, writer, reader *redisstore.Store, now time.Time) {
	t.Helper()
	ctx := ctxT(t)
	noEmail := grants.Identity{Issuer: "https://tenant.eu.auth0.com/", Subject: "auth0|none"}
	_, _, err := writer.ResolveIdentity(ctx, noEmail, grants.Profile{Name: "No Mail"}, "usr_none", now)
	must(t, "create a user without email", err)
	_, _, err = reader.ResolveIdentity(ctx, noEmail, grants.Profile{Email: "late@example.com"}, "usr_x", now.Add(time.Minute))
	must(t, "sign in with an email", err)
	if n, err := writer.Client().ZCard(ctx, writer.Prefix()+"users:idx").Result(); err != nil || n != 3 {
		t.Errorf("user list entries: %d, %v; want 3 (ann, bob, late)", n, err)
	}
}

// checkUsersReadBack: what checkUsersRollout did reads back on s.
func checkUsersReadBack(t *testing.T, s *redisstore.Store, pic, bobID, firstSubject string) {
	t.Helper()
	ctx := ctxT(t)
	u, g, err := s.UserAndGrant(ctx, "usr_ann")
	must(t, "user and grant", err)
	if u.Email != "ann@new.example" || u.Picture != pic || !slices.Equal(g.Roles, []string{"member", "admin"}) {
		t.Errorf("user %+v, roles %v", u, g.Roles)
	}
	checkIdentities(t, s, "usr_ann", firstSubject)
	checkIdentities(t, s, bobID, "auth0|bob", "1234")
	for email, want := range map[string]string{"ann@new.example": "usr_ann", "ANN@example.com": "", "bob@example.com": bobID} {
		us, err := s.UsersByEmail(ctx, email)
		must(t, "users by email", err)
		if got := userIDs(us); !slices.Equal(got, nonEmpty(want)) {
			t.Errorf("users by email %s: %v, want %v", email, got, nonEmpty(want))
		}
	}
	list, _, err := s.ListUsers(ctx, grants.UserFilter{})
	must(t, "list users", err)
	if got := userIDs(list); !slices.Equal(got, []string{"usr_ann", bobID}) {
		t.Errorf("listed %v", got)
	}
}

// checkUserForm checks the form the user was written in: a v2 record (a
// string) by a store writing v3 or later, a hash by one writing v1 or v2.
func checkUserForm(t *testing.T, s *redisstore.Store, userID, format string) {
	t.Helper()
	typ, err := s.Client().Type(ctxT(t), s.Prefix()+"u:"+userID).Result()
	must(t, "type", err)
	want := "hash" // v1 and v2: versions that wrote v2 before users had a compact form read only hashes
	if fromV3(format) {
		want = "string"
	}
	if typ != want {
		t.Errorf("user %s stored as a %s by a %s store, want a %s", userID, typ, format, want)
	}
	for _, k := range []string{"ui:" + userID} {
		n, err := s.Client().Exists(ctxT(t), s.Prefix()+k).Result()
		must(t, "exists", err)
		if (n == 1) == fromV3(format) {
			t.Errorf("%s written: %v by a %s store", k, n == 1, format)
		}
	}
}

func checkIdentities(t *testing.T, s *redisstore.Store, userID string, subjects ...string) {
	t.Helper()
	ids, err := s.Identities(ctxT(t), userID)
	must(t, "identities", err)
	var got []string
	for _, id := range ids {
		got = append(got, id.Subject)
		if id.UserID != userID || id.CreatedAt.IsZero() {
			t.Errorf("identity %+v", id)
		}
	}
	if !slices.Equal(got, subjects) {
		t.Errorf("identities of %s: %v, want %v", userID, got, subjects)
	}
}

func userIDs(us []grants.User) []string {
	var out []string
	for _, u := range us {
		out = append(out, u.ID)
	}
	return out
}

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}
