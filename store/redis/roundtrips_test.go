package redis_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/sessions"
	redisstore "github.com/usher-oidc/usher/store/redis"
)

// countTrips counts round trips: one per command sent alone, one per pipeline.
type countTrips struct{ n atomic.Int64 }

func (h *countTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *countTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.n.Add(1); return next(ctx, cmd) }
}
func (h *countTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { h.n.Add(1); return next(ctx, cmds) }
}

// countedStore is a store on a Redis server of its own (a test's SCRIPT
// FLUSH would make other tests' scripts miss), its round trips counted.
func countedStore(t *testing.T, prefix string) (*redisstore.Store, *redis.Client, *countTrips) {
	t.Helper()
	return countedStoreFormat(t, prefix, "")
}

// countedStoreFormat is countedStore writing record format format.
func countedStoreFormat(t *testing.T, prefix, format string) (*redisstore.Store, *redis.Client, *countTrips) {
	t.Helper()
	hook := &countTrips{}
	rdb := redis.NewClient(&redis.Options{Addr: startServerT(t, 0).addr()})
	rdb.AddHook(hook)
	st := redisstore.New(rdb, redisstore.Options{Prefix: prefix, RecordFormat: format})
	t.Cleanup(func() { _ = st.Close() })
	return st, rdb, hook
}

// A sign-in resolves its identity in two round trips on one master (the
// identity, then the user with its index entries in one pipeline), also
// right after the master lost its scripts (a restart or failover: NOSCRIPT,
// answered by sending the script's source), and the indexes it wrote find
// the user. A count, not a timing.
func TestResolveIdentityRoundTrips(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	st, rdb, hook := countedStore(t, uniquePrefix())
	id := grants.Identity{Issuer: "https://idp.example/", Subject: "auth0|trips"}
	steps := []struct {
		name        string
		email       string
		flush       bool
		maxTrips    int64
		wantCreated bool
	}{
		{name: "first sign-in", email: "Trips@example.com", wantCreated: true}, // not counted: connections dialled, scripts loaded
		{name: "returning, same email", email: "Trips@example.com", maxTrips: 2},
		{name: "after SCRIPT FLUSH", email: "Trips@example.com", flush: true, maxTrips: 4}, // two of them NOSCRIPT
		{name: "returning again", email: "Trips@example.com", maxTrips: 2},
	}
	for _, step := range steps {
		if step.flush {
			if err := rdb.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		}
		before := hook.n.Load()
		u, created, err := st.ResolveIdentity(ctx, id, grants.Profile{Email: step.email, EmailVerified: true}, "usr_trips", time.Now())
		if err != nil || u.ID != "usr_trips" || created != step.wantCreated {
			t.Fatalf("%s: %+v created=%v %v", step.name, u, created, err)
		}
		if n := hook.n.Load() - before; step.maxTrips > 0 && n > step.maxTrips {
			t.Errorf("%s: %d round trips, want at most %d", step.name, n, step.maxTrips)
		}
	}
	users, err := st.UsersByEmail(ctx, "trips@example.com")
	if err != nil || len(users) != 1 || users[0].ID != "usr_trips" {
		t.Errorf("by email: %+v %v", users, err)
	}
	listed, _, err := st.ListUsers(ctx, grants.UserFilter{Query: "trips"})
	if err != nil || !slices.ContainsFunc(listed, func(u grants.User) bool { return u.ID == "usr_trips" }) {
		t.Errorf("listed: %+v %v", listed, err)
	}
}

// UserAndGrant answers what GetUser and GetGrant answer, in one round trip
// on one master, also after the master lost its scripts; an unknown user is
// ErrNotFound.
func TestUserAndGrant(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	st, rdb, hook := countedStore(t, uniquePrefix())
	id := grants.Identity{Issuer: "https://idp.example/", Subject: "auth0|ug"}
	if _, _, err := st.ResolveIdentity(ctx, id, grants.Profile{Email: "ug@example.com"}, "usr_ug", time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := st.AddRoles(ctx, "usr_ug", []string{"member"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	wantUser, err := st.GetUser(ctx, "usr_ug")
	if err != nil {
		t.Fatal(err)
	}
	wantGrant, err := st.GetGrant(ctx, "usr_ug")
	if err != nil {
		t.Fatal(err)
	}
	for _, flush := range []bool{false, true} {
		if flush {
			if err := rdb.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		}
		before := hook.n.Load()
		u, g, err := st.UserAndGrant(ctx, "usr_ug")
		if err != nil {
			t.Fatalf("flush=%v: %v", flush, err)
		}
		if n := hook.n.Load() - before; !flush && n != 1 {
			t.Errorf("%d round trips, want 1", n)
		}
		if !reflect.DeepEqual(u, wantUser) || !reflect.DeepEqual(g, wantGrant) {
			t.Errorf("flush=%v: %+v %+v, want %+v %+v", flush, u, g, wantUser, wantGrant)
		}
	}
	if _, _, err := st.UserAndGrant(ctx, "usr_nobody"); !errors.Is(err, grants.ErrNotFound) {
		t.Errorf("unknown user: %v", err)
	}
}

// ConsumeCodeWithUser consumes a code and reads a user with its grant in
// one round trip (also after SCRIPT FLUSH, the scripts then sent again),
// answering each as ConsumeCode and UserAndGrant would: a replayed code is
// ErrCodeReplayed with its record, an unknown code ErrNotFound, an unknown
// user ErrNotFound in the read beside it.
func TestConsumeCodeWithUser(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	st, rdb, hook := countedStore(t, uniquePrefix())
	id := grants.Identity{Issuer: "https://idp.example/", Subject: "auth0|cwu"}
	if _, _, err := st.ResolveIdentity(ctx, id, grants.Profile{Email: "cwu@example.com"}, "usr_cwu", time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := st.AddRoles(ctx, "usr_cwu", []string{"member"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	wantUser, wantGrant, err := st.UserAndGrant(ctx, "usr_cwu")
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"code-warm", "code-1", "code-2"} {
		if err := st.SaveCode(ctx, &sessions.Code{Hash: h, AuthRequestID: "ar-" + h, ExpiresAt: time.Now().Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.ConsumeCode(ctx, "code-warm"); err != nil { // the script loaded
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, hash, user string
		flush            bool
		codeErr, userErr error
	}{
		{name: "a fresh code", hash: "code-1", user: "usr_cwu"},
		{name: "the code again", hash: "code-1", user: "usr_cwu", codeErr: sessions.ErrCodeReplayed},
		{name: "after SCRIPT FLUSH", hash: "code-2", user: "usr_cwu", flush: true},
		{name: "an unknown code", hash: "code-none", user: "usr_cwu", codeErr: sessions.ErrNotFound},
		{name: "an unknown user", hash: "code-2", user: "usr_nobody", codeErr: sessions.ErrCodeReplayed, userErr: grants.ErrNotFound},
	} {
		if tc.flush {
			if err := rdb.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		}
		before := hook.n.Load()
		c, ug, err := st.ConsumeCodeWithUser(ctx, tc.hash, tc.user)
		if n := hook.n.Load() - before; !tc.flush && n != 1 {
			t.Errorf("%s: %d round trips, want 1", tc.name, n)
		}
		if !errors.Is(err, tc.codeErr) || (tc.codeErr == nil) != (err == nil) {
			t.Errorf("%s: code: %v, want %v", tc.name, err, tc.codeErr)
		}
		if (tc.codeErr == nil || errors.Is(tc.codeErr, sessions.ErrCodeReplayed)) && (c == nil || c.Hash != tc.hash || !c.Used) {
			t.Errorf("%s: code %+v", tc.name, c)
		}
		if tc.userErr != nil {
			if !errors.Is(ug.Err, tc.userErr) || ug.User != nil {
				t.Errorf("%s: user read %+v, want %v", tc.name, ug, tc.userErr)
			}
			continue
		}
		if ug.Err != nil || !reflect.DeepEqual(ug.User, wantUser) || !reflect.DeepEqual(ug.Grant, wantGrant) {
			t.Errorf("%s: user read %+v %+v (%v), want %+v %+v", tc.name, ug.User, ug.Grant, ug.Err, wantUser, wantGrant)
		}
	}
}

// userWithFamilies makes the user usr_<name> (signed in as auth0|<name>)
// with a live refresh token h-fam-<name> of family fam-<name> and one,
// h-fam-<name>-revoked, of a revoked family fam-<name>-revoked; it returns
// the user and grant as UserAndGrant reads them.
func userWithFamilies(t *testing.T, st *redisstore.Store, name string, now time.Time) (*grants.User, *grants.Grant) {
	t.Helper()
	ctx := ctxT(t)
	id := grants.Identity{Issuer: "https://idp.example/", Subject: "auth0|" + name}
	if _, _, err := st.ResolveIdentity(ctx, id, grants.Profile{Email: name + "@example.com"}, "usr_"+name, now); err != nil {
		t.Fatal(err)
	}
	user, grant, err := st.UserAndGrant(ctx, "usr_"+name)
	if err != nil {
		t.Fatal(err)
	}
	for _, fam := range []string{"fam-" + name, "fam-" + name + "-revoked"} {
		if err := st.CreateRefreshToken(ctx, refresh("h-"+fam, fam, now)); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.RevokeFamily(ctx, "fam-"+name+"-revoked", now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	return user, grant
}

// GetRefreshTokenWithUser reads a refresh token and a user with its grant
// in one round trip, each answered as GetRefreshToken and UserAndGrant
// would (a revoked family's token with ErrRevoked).
func TestGetRefreshTokenWithUser(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	st, _, hook := countedStoreFormat(t, uniquePrefix(), "v3")
	wantUser, wantGrant := userWithFamilies(t, st, "rtu", time.Now())
	for _, tc := range []struct {
		name, family, hash string
		tokenErr           error
	}{
		{name: "a live token", family: "fam-rtu", hash: "h-fam-rtu"},
		{name: "a revoked family's token", family: "fam-rtu-revoked", hash: "h-fam-rtu-revoked", tokenErr: sessions.ErrRevoked},
		{name: "an unknown token", family: "fam-rtu", hash: "h-none", tokenErr: sessions.ErrNotFound},
	} {
		before := hook.n.Load()
		rt, ug, err := st.GetRefreshTokenWithUser(ctx, tc.family, tc.hash, "usr_rtu")
		if n := hook.n.Load() - before; n != 1 {
			t.Errorf("%s: %d round trips, want 1", tc.name, n)
		}
		if !errors.Is(err, tc.tokenErr) || (tc.tokenErr == nil) != (err == nil) {
			t.Errorf("%s: token: %v, want %v", tc.name, err, tc.tokenErr)
		}
		if !errors.Is(tc.tokenErr, sessions.ErrNotFound) && (rt == nil || rt.Hash != tc.hash) {
			t.Errorf("%s: token %+v", tc.name, rt)
		}
		if ug.Err != nil || !reflect.DeepEqual(ug.User, wantUser) || !reflect.DeepEqual(ug.Grant, wantGrant) {
			t.Errorf("%s: user read %+v %+v (%v)", tc.name, ug.User, ug.Grant, ug.Err)
		}
	}
}

// RotateRefreshTokenWithUser rotates a refresh token and reads a user with
// its grant in one round trip at record format v3 (a sealed refresh
// token's refresh): the rotation answers as RotateRefreshToken would, and
// the user read as UserAndGrant, only for a rotation made.
func TestRotateRefreshTokenWithUser(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	st, _, hook := countedStoreFormat(t, uniquePrefix(), "v3")
	now := time.Now()
	wantUser, wantGrant := userWithFamilies(t, st, "rot", now)
	// The master learns the rotation script (a first EVALSHA answers NOSCRIPT).
	if err := st.CreateRefreshToken(ctx, refresh("h-fam-warm", "fam-warm", now)); err != nil {
		t.Fatal(err)
	}
	if err := st.RotateRefreshToken(ctx, "h-fam-warm", refresh("h-fam-warm-2", "fam-warm", now)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, family, old, next string
		want                    error
	}{
		{name: "a live token", family: "fam-rot", old: "h-fam-rot", next: "h-fam-rot-2"},
		{name: "the rotated token again", family: "fam-rot", old: "h-fam-rot", next: "h-fam-rot-3", want: sessions.ErrRefreshReused},
		{name: "a revoked family's token", family: "fam-rot-revoked", old: "h-fam-rot-revoked", next: "h-fam-rot-revoked-2", want: sessions.ErrRevoked},
		{name: "an unknown token", family: "fam-rot", old: "h-none", next: "h-fam-rot-4", want: sessions.ErrNotFound},
	} {
		before := hook.n.Load()
		ug, err := st.RotateRefreshTokenWithUser(ctx, tc.old, refresh(tc.next, tc.family, now), "usr_rot")
		if n := hook.n.Load() - before; n != 1 {
			t.Errorf("%s: %d round trips, want 1", tc.name, n)
		}
		if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("%s: rotation: %v, want %v", tc.name, err, tc.want)
		}
		if tc.want != nil {
			if ug.User != nil || ug.Grant != nil {
				t.Errorf("%s: a refused rotation answered the user read: %+v", tc.name, ug)
			}
			continue
		}
		if ug.Err != nil || !reflect.DeepEqual(ug.User, wantUser) || !reflect.DeepEqual(ug.Grant, wantGrant) {
			t.Errorf("%s: user read %+v %+v (%v)", tc.name, ug.User, ug.Grant, ug.Err)
		}
		if next, err := st.GetRefreshToken(ctx, tc.family, tc.next); err != nil || next.Hash != tc.next {
			t.Errorf("%s: the successor: %+v, %v", tc.name, next, err)
		}
	}
}

// Refresh-token round trips, by record format. Below v3 a token is created
// in two (its session link and rth: entry together, then the token) and
// rotated in two (the next token's rth: entry, then the rotation); at v3,
// which writes no rth:, in one each (the session link rides in the
// creation's pipeline). Reading a token is one round trip in every format,
// and so is each of them after SCRIPT FLUSH (NOSCRIPT answered from the
// source). A rotation naming another family than the old token's finds no
// old token.
func TestRefreshRoundTrips(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		format                  string
		create, rotate, readOne int64
	}{
		{redisstore.RecordFormatV2, 2, 2, 1},
		{redisstore.RecordFormatV3, 1, 1, 1},
		{redisstore.RecordFormatV4, 1, 1, 1},
	} {
		t.Run(tc.format, func(t *testing.T) {
			t.Parallel()
			checkRefreshRoundTrips(t, tc.format, tc.create, tc.rotate, tc.readOne)
		})
	}
}

func checkRefreshRoundTrips(t *testing.T, format string, create, rotate, readOne int64) {
	ctx := ctxT(t)
	st, rdb, hook := countedStoreFormat(t, uniquePrefix(), format)
	now := time.Now()
	token := func(hash, family string) *sessions.RefreshToken {
		return &sessions.RefreshToken{Hash: hash, FamilyID: family, ClientID: "spa", Subject: "usr_1", SessionID: "sess-1",
			AuthTime: now, CreatedAt: now, ExpiresAt: now.Add(time.Hour), FamilyExpiresAt: now.Add(24 * time.Hour)}
	}
	if err := st.CreateRefreshToken(ctx, token("warm", "fam-0")); err != nil { // connections dialled, scripts loaded
		t.Fatal(err)
	}
	if err := st.RotateRefreshToken(ctx, "warm", token("warm-2", "fam-0")); err != nil {
		t.Fatal(err)
	}
	counted := func(what string, want int64, f func() error) {
		t.Helper()
		before := hook.n.Load()
		if err := f(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if n := hook.n.Load() - before; n != want {
			t.Errorf("%s: %d round trips, want %d", what, n, want)
		}
	}
	counted("create", create, func() error { return st.CreateRefreshToken(ctx, token("rt-1", "fam-1")) })
	counted("rotate", rotate, func() error { return st.RotateRefreshToken(ctx, "rt-1", token("rt-2", "fam-1")) })
	counted("read", readOne, func() error { _, err := st.GetRefreshToken(ctx, "fam-1", "rt-2"); return err })
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateRefreshToken(ctx, token("rt-3", "fam-3")); err != nil {
		t.Fatalf("create after SCRIPT FLUSH: %v", err)
	}
	if err := st.RotateRefreshToken(ctx, "rt-3", token("rt-4", "fam-3")); err != nil {
		t.Fatalf("rotate after SCRIPT FLUSH: %v", err)
	}
	if got, err := st.GetRefreshToken(ctx, "fam-3", "rt-4"); err != nil || got.FamilyID != "fam-3" {
		t.Fatalf("the rotated token: %+v %v", got, err)
	}
	if err := st.RotateRefreshToken(ctx, "rt-4", token("rt-5", "fam-other")); !errors.Is(err, sessions.ErrNotFound) {
		t.Errorf("rotation into another family: %v, want ErrNotFound", err)
	}
	// The session link was written: sign-out reaches the tokens.
	if err := st.RevokeSessionFamilies(ctx, "sess-1", now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetRefreshToken(ctx, "fam-3", "rt-4"); !errors.Is(err, sessions.ErrRevoked) {
		t.Errorf("after sign-out: %v, want ErrRevoked", err)
	}
}

// An invitation without external_id is created in one round trip on one
// master (every index entry, then the record guarded by its token lookup,
// then its outbox mark, in one pipeline); a taken ID or token hash is still
// refused, leaving no index entry behind; a create whose index write fails
// leaves no record; and a create still works after SCRIPT FLUSH.
func TestCreateInvitationRoundTrips(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	st, rdb, hook := countedStore(t, "ct:")
	now := time.Now().UTC()
	withEvent := func(inv *grants.Invitation) *grants.Invitation {
		inv.Outbox = []grants.OutboxEvent{{ID: "evt-" + inv.ID, Type: "invitation.created", At: now}}
		return inv
	}
	if _, err := st.CreateInvitation(ctx, withEvent(pendingInvitation("inv-warm", now))); err != nil {
		t.Fatal(err)
	}
	before := hook.n.Load()
	if _, err := st.CreateInvitation(ctx, withEvent(pendingInvitation("inv-1", now))); err != nil {
		t.Fatal(err)
	}
	if n := hook.n.Load() - before; n != 1 {
		t.Errorf("create: %d round trips, want 1", n)
	}
	keysBefore, err := rdb.Keys(ctx, "ct:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	sameID := pendingInvitation("inv-1", now)
	sameID.TokenHash = fmt.Sprintf("%064x", "another token")
	sameID.Email = "someone-else@example.com"
	if _, err := st.CreateInvitation(ctx, sameID); !errors.Is(err, grants.ErrConflict) {
		t.Errorf("a taken ID: %v, want ErrConflict", err)
	}
	sameToken := pendingInvitation("inv-2", now)
	sameToken.TokenHash = pendingInvitation("inv-1", now).TokenHash
	sameToken.Email = "third@example.com"
	if _, err := st.CreateInvitation(ctx, sameToken); !errors.Is(err, grants.ErrConflict) {
		t.Errorf("a taken token hash: %v, want ErrConflict", err)
	}
	keysAfter, err := rdb.Keys(ctx, "ct:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keysBefore)
	slices.Sort(keysAfter)
	if !slices.Equal(keysBefore, keysAfter) {
		t.Errorf("refused creates left keys behind:\nbefore %v\nafter  %v", keysBefore, keysAfter)
	}
	for _, key := range []string{"ct:inv:se", "ct:inv:t"} {
		members, err := rdb.ZRange(ctx, key, 0, -1).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range members {
			if strings.Contains(m, "inv-2") || strings.Contains(m, "someone-else") || strings.Contains(m, "third@") {
				t.Errorf("%s keeps %q from a refused create", key, m)
			}
		}
	}
	if got, err := st.GetInvitation(ctx, "inv-1"); err != nil || got.Email != "inv-1@example.com" {
		t.Errorf("the first invitation after the refusals: %+v %v", got, err)
	}
	createFailingIndex(t, st, rdb, now)
	// A master that lost its scripts: the claim in the pipeline answers
	// NOSCRIPT and runs again with its source.
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	after := pendingInvitation("inv-3", now)
	if _, err := st.CreateInvitation(ctx, withEvent(after)); err != nil {
		t.Fatalf("create after SCRIPT FLUSH: %v", err)
	}
	if got, err := st.GetInvitationByTokenHash(ctx, after.TokenHash); err != nil || got.ID != "inv-3" {
		t.Errorf("found by its token after SCRIPT FLUSH: %+v %v", got, err)
	}
}

// An update that changes no indexed field reads and writes the record only
// (two round trips): the entries it had are there already. One that
// changes the email adds the new entries in one more round trip and takes
// the old ones out after the write.
func TestUpdateInvitationRoundTrips(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	st, _, hook := countedStore(t, uniquePrefix())
	now := time.Now().UTC()
	if _, err := st.CreateInvitation(ctx, pendingInvitation("inv-up", now)); err != nil {
		t.Fatal(err)
	}
	update := func(what string, want int64, fn func(*grants.Invitation)) {
		t.Helper()
		before := hook.n.Load()
		if _, err := st.UpdateInvitation(ctx, "inv-up", func(inv *grants.Invitation) error { fn(inv); return nil }); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if n := hook.n.Load() - before; n != want {
			t.Errorf("%s: %d round trips, want %d", what, n, want)
		}
	}
	update("warm", 3, func(inv *grants.Invitation) { inv.EmailStatus = "sending" }) // loads the update's script (a create runs another)
	update("mail status", 2, func(inv *grants.Invitation) { inv.EmailStatus = "sent" })
	update("email", 4, func(inv *grants.Invitation) { inv.Email = "moved@example.com" })
	for _, c := range []struct {
		email string
		want  int
	}{{"moved@example.com", 1}, {"inv-up@example.com", 0}} {
		got, _, err := st.ListInvitations(ctx, grants.InvitationFilter{Email: c.email}, now)
		if err != nil || len(got) != c.want {
			t.Errorf("listed under %s: %d, %v; want %d", c.email, len(got), err, c.want)
		}
		found, _, err := st.ListInvitations(ctx, grants.InvitationFilter{EmailPrefix: strings.Split(c.email, "@")[0]}, now)
		if err != nil || len(found) != c.want {
			t.Errorf("found by prefix %s: %d, %v; want %d", c.email, len(found), err, c.want)
		}
	}
}

// TestTogetherReadsUserAndGrant: a Together's GetUserAndGrant is read in
// the same round trip as the auth request's creation and the session's
// read, answering as UserAndGrant does (ErrNotFound for an unknown user).
func TestTogetherReadsUserAndGrant(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	st, _, hook := countedStore(t, uniquePrefix())
	id := grants.Identity{Issuer: "https://idp.example/", Subject: "auth0|tug"}
	if _, _, err := st.ResolveIdentity(ctx, id, grants.Profile{Email: "tug@example.com"}, "usr_tug", time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := st.AddRoles(ctx, "usr_tug", []string{"member"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	wantUser, wantGrant, err := st.UserAndGrant(ctx, "usr_tug")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	warm := &sessions.AuthRequest{ID: "ar-tug-warm", ClientID: "spa", CreatedAt: now, ExpiresAt: now.Add(time.Minute)}
	if err := st.CreateAuthRequest(ctx, warm); err != nil { // the script loaded
		t.Fatal(err)
	}
	if err := st.SaveBrowserSession(ctx, &sessions.BrowserSession{ID: "bs-tug", Values: map[string]string{"uid": "usr_tug"}, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct {
		user    string
		userErr error
	}{{"usr_tug", nil}, {"usr_nobody", grants.ErrNotFound}} {
		ar := &sessions.AuthRequest{ID: fmt.Sprintf("ar-tug-%d", i), ClientID: "spa", CreatedAt: now, ExpiresAt: now.Add(time.Minute)}
		before := hook.n.Load()
		r, err := st.RunTogether(ctx, sessions.Together{CreateAuthRequest: ar, GetSession: "bs-tug", GetUserAndGrant: tc.user})
		if err != nil {
			t.Fatal(err)
		}
		if n := hook.n.Load() - before; n != 1 {
			t.Errorf("%s: %d round trips, want 1", tc.user, n)
		}
		if r.SessionErr != nil || r.Session == nil || r.Session.ID != "bs-tug" {
			t.Errorf("%s: session %+v (%v)", tc.user, r.Session, r.SessionErr)
		}
		ug := r.UserGrant
		switch {
		case ug == nil:
			t.Errorf("%s: no user read", tc.user)
		case tc.userErr != nil:
			if !errors.Is(ug.Err, tc.userErr) || ug.User != nil {
				t.Errorf("%s: user read %+v, want %v", tc.user, ug, tc.userErr)
			}
		case ug.Err != nil || !reflect.DeepEqual(ug.User, wantUser) || !reflect.DeepEqual(ug.Grant, wantGrant):
			t.Errorf("%s: user read %+v %+v (%v), want %+v %+v", tc.user, ug.User, ug.Grant, ug.Err, wantUser, wantGrant)
		}
	}
	r, err := st.RunTogether(ctx, sessions.Together{GetSession: "bs-tug"})
	if err != nil || r.UserGrant != nil {
		t.Errorf("without GetUserAndGrant: user read %+v (%v), want none", r.UserGrant, err)
	}
}

// createFailingIndex: an index write that fails (its listing key made a
// string, so ZADD answers WRONGTYPE) fails the create, and the record the
// same pipeline wrote after it is taken back.
func createFailingIndex(t *testing.T, st *redisstore.Store, rdb *redis.Client, now time.Time) {
	t.Helper()
	ctx := ctxT(t)
	first := pendingInvitation("inv-broken-1", now)
	first.ClientID = "broken-client"
	if _, err := st.CreateInvitation(ctx, first); err != nil {
		t.Fatal(err)
	}
	keys, err := rdb.Keys(ctx, "*broken-client*").Result()
	if err != nil || len(keys) != 1 {
		t.Fatalf("the client's listing key: %v %v", keys, err)
	}
	if err := rdb.Set(ctx, keys[0], "not a sorted set", 0).Err(); err != nil {
		t.Fatal(err)
	}
	second := pendingInvitation("inv-broken-2", now)
	second.ClientID = "broken-client"
	if _, err := st.CreateInvitation(ctx, second); err == nil {
		t.Fatal("a create whose listing write failed succeeded")
	}
	if got, err := st.GetInvitation(ctx, second.ID); !errors.Is(err, grants.ErrNotFound) {
		t.Errorf("the record of a failed create: %+v %v, want ErrNotFound", got, err)
	}
	if got, err := st.GetInvitationByTokenHash(ctx, second.TokenHash); !errors.Is(err, grants.ErrNotFound) {
		t.Errorf("the token of a failed create: %+v %v, want ErrNotFound", got, err)
	}
}
