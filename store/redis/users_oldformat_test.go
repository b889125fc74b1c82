package redis_test

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/store"
	redisstore "github.com/usher-oidc/usher/store/redis"
)

// TestUsersWrittenBeforeV3: a user, its identity, its email entry and its
// grant as the versions before record format v3 (and v1 and v2 stores of
// this one) write them (a
// hash, JSON, the ui: and ue: sets, a roles list, no user list entry) keep
// working in a store writing each format: read, looked up by email, listed,
// signed in again with a new email, granted, linked, relinked, exported and
// erased.
func TestUsersWrittenBeforeV3(t *testing.T) {
	t.Parallel()
	for _, format := range redisstore.RecordFormats {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			checkOldUser(t, format)
		})
	}
}

// writeOldUser writes usr_old as the code before compact users did.
func writeOldUser(t *testing.T, rdb redis.Cmdable, prefix string, at time.Time) grants.Identity {
	ctx := ctxT(t)
	id := grants.Identity{Issuer: "https://idp.example/", Subject: "sub-old", UserID: "usr_old", Email: "Old@Example.com", EmailVerified: true, CreatedAt: at}
	suffix := "https%3A//idp.example/:sub-old"
	raw, err := json.Marshal(&id)
	must(t, "identity JSON", err)
	ts := at.Format(time.RFC3339Nano)
	_, err = rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, prefix+"u:usr_old", "id", "usr_old", "email", id.Email, "ev", "1", "name", "Old", "pic", "",
			"ca", ts, "ua", ts, "ll", ts, "o", suffix)
		p.Set(ctx, prefix+"id:"+suffix, raw, 0)
		p.SAdd(ctx, prefix+"ui:usr_old", suffix)
		p.SAdd(ctx, prefix+"ue:old@example.com", "usr_old")
		p.HSet(ctx, prefix+"{g:usr_old}", "u", ts, "c:org", `"acme"`)
		p.RPush(ctx, prefix+"{g:usr_old}:r", "member", "beta")
		return nil
	})
	must(t, "write the old records", err)
	return id
}

func checkOldUser(t *testing.T, format string) {
	ctx := ctxT(t)
	s, _ := replicas(t, format, format)
	rdb, prefix := s.Client(), s.Prefix()
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	old := writeOldUser(t, rdb, prefix, at)

	u, g, err := s.UserAndGrant(ctx, "usr_old")
	must(t, "user and grant", err)
	if u.Email != old.Email || !u.EmailVerified || u.Name != "Old" || !u.CreatedAt.Equal(at) || !slices.Equal(g.Roles, []string{"member", "beta"}) || g.Claims["org"] != "acme" {
		t.Errorf("user %+v, grant %+v", u, g)
	}
	checkEmails(t, s, map[string][]string{"old@example.com": {"usr_old"}})
	list, _, err := s.ListUsers(ctx, grants.UserFilter{})
	must(t, "list", err)
	if !slices.Equal(userIDs(list), []string{"usr_old"}) {
		t.Errorf("listed %v", userIDs(list))
	}

	later := at.Add(time.Hour)
	again, created, err := s.ResolveIdentity(ctx, grants.Identity{Issuer: old.Issuer, Subject: old.Subject}, grants.Profile{Email: "new@example.com", Name: "New"}, "usr_x", later)
	must(t, "sign in again", err)
	if created || again.ID != "usr_old" || again.Email != "new@example.com" || !again.LastLoginAt.Equal(later) || !again.CreatedAt.Equal(at) {
		t.Errorf("signed in again: created %v, %+v", created, again)
	}
	checkEmails(t, s, map[string][]string{"old@example.com": nil, "new@example.com": {"usr_old"}})
	g, err = s.AddRoles(ctx, "usr_old", []string{"admin", "member"}, later)
	must(t, "add roles", err)
	if !slices.Equal(g.Roles, []string{"member", "beta", "admin"}) {
		t.Errorf("roles %v", g.Roles)
	}
	if n, _ := rdb.LLen(ctx, prefix+"{g:usr_old}:r").Result(); n != 3 {
		t.Errorf("the roles list holds %d roles, want 3 (a grant keeps its roles where it has them)", n)
	}
	if typ, _ := rdb.Type(ctx, prefix+"u:usr_old").Result(); typ != "hash" {
		t.Errorf("the old user is now a %s, want it kept a hash", typ)
	}

	linked := grants.Identity{Issuer: "https://accounts.google.com", Subject: "g-1", UserID: "usr_old", CreatedAt: later}
	must(t, "link", s.LinkIdentity(ctx, linked))
	checkIdentities(t, s, "usr_old", "sub-old", "g-1")
	fresh, _, err := s.ResolveIdentity(ctx, grants.Identity{Issuer: old.Issuer, Subject: "sub-new"}, grants.Profile{Email: "fresh@example.com"}, "usr_new", later)
	must(t, "new user", err)
	old.UserID = fresh.ID
	must(t, "relink the old identity", s.RelinkIdentity(ctx, old, "usr_old"))
	checkIdentities(t, s, "usr_old", "g-1")
	checkIdentities(t, s, fresh.ID, "sub-old", "sub-new")

	checkOldUserGone(t, s, later)
}

// checkOldUserGone: checkOldUser's identities export, and its user erases.
func checkOldUserGone(t *testing.T, s *redisstore.Store, later time.Time) {
	ctx := ctxT(t)
	rdb, prefix := s.Client(), s.Prefix()
	var exported []string
	must(t, "export identities", s.Export(ctx, store.Identities, func(rec json.RawMessage) error {
		var id grants.Identity
		err := json.Unmarshal(rec, &id)
		exported = append(exported, id.Subject+"→"+id.UserID)
		return err
	}))
	slices.Sort(exported)
	if want := []string{"g-1→usr_old", "sub-new→usr_new", "sub-old→usr_new"}; !slices.Equal(exported, want) {
		t.Errorf("exported identities %v, want %v", exported, want)
	}

	must(t, "erase", s.EraseUser(ctx, "usr_old", later))
	for _, k := range []string{"u:usr_old", "ui:usr_old", "ue:new@example.com", "ue:old@example.com", "id:https%3A//accounts.google.com:g-1"} {
		if n, _ := rdb.Exists(ctx, prefix+k).Result(); n != 0 {
			t.Errorf("%s left after the erase", k)
		}
	}
	checkEmails(t, s, map[string][]string{"new@example.com": nil, "fresh@example.com": {"usr_new"}})
}

func checkEmails(t *testing.T, s *redisstore.Store, want map[string][]string) {
	t.Helper()
	for email, ids := range want {
		us, err := s.UsersByEmail(ctxT(t), email)
		must(t, "users by email", err)
		if got := userIDs(us); !slices.Equal(got, ids) {
			t.Errorf("users by email %s: %v, want %v", email, got, ids)
		}
	}
}
