package migrate_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/usher-oidc/usher/notify/webhooks"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/internal/testkit"
	"github.com/usher-oidc/usher/sessions"
	"github.com/usher-oidc/usher/store"
	boltstore "github.com/usher-oidc/usher/store/bolt"
	"github.com/usher-oidc/usher/store/migrate"
	redisstore "github.com/usher-oidc/usher/store/redis"
)

func openRedis(t *testing.T, addr, prefix string) *redisstore.Store {
	t.Helper()
	st, err := redisstore.Open(redisstore.Config{URL: "redis://" + addr}, redisstore.Options{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func openBolt(t *testing.T, path string) *boltstore.Store {
	t.Helper()
	st, err := boltstore.Open(path, boltstore.Options{SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// fixture is what seed stored, to check it on the other side.
type fixture struct {
	userID                                 string
	pendingHash, redeemedHash, revokedHash string
	rt1, rt2, revokedRT                    string
	family, revokedFamily, jti             string
}

// seed fills st with one of every kind of record.
func seed(t *testing.T, ctx context.Context, st interface {
	sessions.Store
	grants.Store
}) fixture {
	t.Helper()
	now := time.Now().UTC().Truncate(time.Millisecond).Add(123456 * time.Nanosecond)
	f := fixture{userID: "u_alice", pendingHash: "h-pending", redeemedHash: "h-redeemed", revokedHash: "h-revoked",
		rt1: "rt-1", rt2: "rt-2", revokedRT: "rt-3", family: "fam-1", revokedFamily: "fam-2", jti: "jti-1"}
	for i, alg := range []string{"ES256", "RS256"} {
		must(t, st.AddSigningKey(ctx, &sessions.SigningKey{ID: "k" + strconv.Itoa(i), Algorithm: alg,
			PrivateKeyPEM: []byte("v1:encrypted-" + alg), CreatedAt: now.Add(-time.Hour), NotBefore: now}, false))
	}
	_, _, err := st.ResolveIdentity(ctx, grants.Identity{Issuer: "https://idp", Subject: "alice", Connection: "db"},
		grants.Profile{Email: "Alice@Example.com", EmailVerified: true, Name: "Alice"}, f.userID, now.Add(-48*time.Hour))
	must(t, err)
	must(t, st.LinkIdentity(ctx, grants.Identity{Issuer: "https://google", Subject: "g-alice", UserID: f.userID, CreatedAt: now}))
	_, err = st.AddRoles(ctx, f.userID, []string{"member"}, now)
	must(t, err)
	_, err = st.SetGrantClaim(ctx, f.userID, "https://x/plan", map[string]any{"tier": "pro", "seats": 3.0}, now)
	must(t, err)
	_, err = st.SignOutUser(ctx, f.userID, now) // the sign-out instant travels with the grant
	must(t, err)

	mk := func(id, hash, ext string) {
		_, err := st.CreateInvitation(ctx, &grants.Invitation{ID: id, TokenHash: hash, Email: "bob@example.com", Roles: []string{"editor"},
			Claims: map[string]any{"team": id}, ExternalID: ext, EmailMatch: "any", CreatedAt: now, ExpiresAt: now.Add(72 * time.Hour),
			Events: []grants.Event{{Type: "created", At: now}}})
		must(t, err)
	}
	mk("inv_redeemed", f.redeemedHash, "ext-1")
	_, _, err = st.RedeemInvitation(ctx, f.redeemedHash, grants.Redemption{UserID: f.userID, Identity: "https://idp|alice", At: now})
	must(t, err)
	mk("inv_pending", f.pendingHash, "ext-1") // the same external_id as the redeemed one
	_, err = st.UpdateInvitation(ctx, "inv_pending", func(inv *grants.Invitation) error {
		inv.EmailStatus = "sent"
		inv.Events = append(inv.Events, grants.Event{Type: "mailed", At: now, Detail: map[string]string{"to": "bob@example.com"}})
		return nil
	})
	must(t, err)
	mk("inv_revoked", f.revokedHash, "")
	_, err = st.RevokeInvitation(ctx, "inv_revoked", now)
	must(t, err)

	for i := range 3 {
		must(t, st.AppendAudit(ctx, &grants.AuditRecord{ID: "a" + strconv.Itoa(i), At: now.Add(time.Duration(i) * time.Second),
			Action: "invitation.created", Actor: "client", Target: "inv_pending", Detail: map[string]string{"n": strconv.Itoa(i)}}))
	}
	must(t, st.EnqueueJob(ctx, &grants.Job{ID: "whlane_a", Kind: webhooks.JobKindWebhook, Payload: json.RawMessage(`{"lane":"a"}`), RunAt: now.Add(-time.Minute), CreatedAt: now}))
	must(t, st.EnqueueJob(ctx, &grants.Job{ID: "whlog_1", Kind: "whlog:ep1", Payload: json.RawMessage(`{"state":"failed"}`), RunAt: now.Add(time.Hour), CreatedAt: now}))
	claimed, err := st.ClaimJobs(ctx, webhooks.JobKindWebhook, now, 10, time.Minute)
	must(t, err)
	if len(claimed) != 1 {
		t.Fatalf("claimed %d jobs", len(claimed))
	}
	must(t, st.RetryJob(ctx, "whlane_a", now.Add(time.Minute), "502 from receiver"))

	rt := func(hash, family string) *sessions.RefreshToken {
		return &sessions.RefreshToken{Hash: hash, FamilyID: family, ClientID: "spa", Subject: f.userID, Scopes: []string{"openid"},
			Audience: []string{"spa"}, AuthTime: now, CreatedAt: now, ExpiresAt: now.Add(time.Hour), FamilyExpiresAt: now.Add(24 * time.Hour), SessionID: "sess-1"}
	}
	must(t, st.CreateRefreshToken(ctx, rt(f.rt1, f.family)))
	must(t, st.RotateRefreshToken(ctx, f.rt1, rt(f.rt2, f.family)))
	must(t, st.CreateRefreshToken(ctx, rt(f.revokedRT, f.revokedFamily)))
	must(t, st.RevokeFamily(ctx, f.revokedFamily, now.Add(48*time.Hour)))
	must(t, st.RevokeAccessToken(ctx, f.jti, now.Add(time.Hour)))
	must(t, st.SaveBrowserSession(ctx, &sessions.BrowserSession{ID: "bs-live", Values: map[string]string{"sub": f.userID}, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}))
	must(t, st.SaveBrowserSession(ctx, &sessions.BrowserSession{ID: "bs-dead", Values: map[string]string{}, CreatedAt: now.Add(-2 * time.Hour), ExpiresAt: now.Add(-time.Hour)}))

	_, err = st.ReserveIdempotencyKey(ctx, &grants.IdempotencyRecord{Key: "idem-1", RequestHash: "rh", CreatedAt: now, ExpiresAt: now.Add(time.Hour)})
	must(t, err)
	must(t, st.CompleteIdempotencyKey(ctx, "idem-1", 201, json.RawMessage(`{"id":"inv_pending"}`)))
	return f
}

func row(t *testing.T, rep *migrate.Report, kind store.Kind) migrate.Row {
	t.Helper()
	for _, r := range rep.Rows {
		if r.Kind == kind {
			return r
		}
	}
	t.Fatalf("no row for %s", kind)
	return migrate.Row{}
}

func jsonEq(t *testing.T, what string, a, b any) {
	t.Helper()
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if string(ja) != string(jb) {
		t.Errorf("%s differs:\n%s\n%s", what, ja, jb)
	}
}

// TestRoundTripBoltRedisBolt: bolt → Redis → a new bolt file, every record
// kind, checked through the Store interfaces and by content hash.
func TestRoundTripBoltRedisBolt(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src := openBolt(t, filepath.Join(dir, "src.db"))
	f := seed(t, ctx, src)
	addr := testkit.StartRedis(t)
	rd := openRedis(t, addr, "mig:")

	rep, err := migrate.Run(ctx, src, rd, migrate.Options{})
	var out strings.Builder
	if rep != nil {
		rep.Print(&out)
	}
	t.Logf("bolt → redis:\n%s", out.String())
	must(t, err)
	want := map[store.Kind]int{store.SigningKeys: 2, store.Users: 1, store.Identities: 2, store.Grants: 1, store.Invitations: 3,
		store.Audit: 3, store.Idempotency: 1, store.Jobs: 2, store.RevokedFamilies: 1, store.RevokedTokens: 1,
		store.RefreshTokens: 3, store.BrowserSessions: 1}
	for kind, n := range want {
		if r := row(t, rep, kind); r.Copied != n || r.Target != n || !r.OK() {
			t.Errorf("%s: %+v, want %d copied", kind, r, n)
		}
	}
	if r := row(t, rep, store.BrowserSessions); r.Expired != 1 {
		t.Errorf("expired browser sessions = %d, want 1", r.Expired)
	}

	// Through the Store interfaces.
	inv, err := rd.GetInvitationByTokenHash(ctx, f.pendingHash)
	must(t, err)
	binv, _ := src.GetInvitation(ctx, "inv_pending")
	jsonEq(t, "pending invitation", binv, inv)
	if len(inv.Events) != 2 || inv.EmailStatus != "sent" {
		t.Errorf("pending invitation lost its timeline: %+v", inv)
	}
	if _, _, err := rd.RedeemInvitation(ctx, f.redeemedHash, grants.Redemption{UserID: "u_other", At: time.Now()}); !errors.Is(err, grants.ErrInvitationRedeemed) {
		t.Errorf("redeem the redeemed one: %v", err)
	}
	if _, _, err := rd.RedeemInvitation(ctx, f.revokedHash, grants.Redemption{UserID: "u_other", At: time.Now()}); !errors.Is(err, grants.ErrInvitationRevoked) {
		t.Errorf("redeem the revoked one: %v", err)
	}
	// The external_id index: the pending one holds ext-1.
	if existing, err := rd.CreateInvitation(ctx, &grants.Invitation{ID: "inv_dup", TokenHash: "h-dup", ExternalID: "ext-1", Email: "x@example.com",
		CreatedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}); !errors.Is(err, grants.ErrConflict) || existing == nil || existing.ID != "inv_pending" {
		t.Errorf("duplicate external_id: %v, %v", existing, err)
	}
	list, _, err := rd.ListInvitations(ctx, grants.InvitationFilter{Email: "BOB@example.com"}, time.Now())
	must(t, err)
	if len(list) != 3 {
		t.Errorf("by email: %d invitations, want 3", len(list))
	}
	users, err := rd.UsersByEmail(ctx, "alice@example.com")
	must(t, err)
	busers, _ := src.UsersByEmail(ctx, "alice@example.com")
	jsonEq(t, "users", busers, users)
	ids, _ := rd.Identities(ctx, f.userID)
	bids, _ := src.Identities(ctx, f.userID)
	jsonEq(t, "identities", bids, ids)
	if len(ids) != 2 {
		t.Errorf("%d identities", len(ids))
	}
	// The user list index is rebuilt by the import.
	if listed, _, err := rd.ListUsers(ctx, grants.UserFilter{Query: "ALICE"}); err != nil || len(listed) != 1 || listed[0].ID != f.userID {
		t.Errorf("user list on the target: %+v %v", listed, err)
	}
	g, _ := rd.GetGrant(ctx, f.userID)
	bg, _ := src.GetGrant(ctx, f.userID)
	jsonEq(t, "grant", bg.Claims, g.Claims)
	if g.SignedOutAt == nil || !g.SignedOutAt.Equal(*bg.SignedOutAt) {
		t.Errorf("signed_out_at %v, want %v", g.SignedOutAt, bg.SignedOutAt)
	}
	if !reflect.DeepEqual(g.Roles, bg.Roles) || !reflect.DeepEqual(g.Invitations, bg.Invitations) {
		t.Errorf("grant %+v, want %+v", g, bg)
	}
	keys, _ := rd.SigningKeys(ctx)
	bkeys, _ := src.SigningKeys(ctx)
	jsonEq(t, "signing keys", bkeys, keys)
	audit, _, _ := rd.ListAudit(ctx, grants.AuditFilter{Target: "inv_pending"})
	baudit, _, _ := src.ListAudit(ctx, grants.AuditFilter{Target: "inv_pending"})
	jsonEq(t, "audit", baudit, audit)
	jobs, _ := rd.PeekJobs(ctx, webhooks.JobKindWebhook, 10)
	bjobs, _ := src.PeekJobs(ctx, webhooks.JobKindWebhook, 10)
	jsonEq(t, "webhook lane jobs", bjobs, jobs)
	if len(jobs) != 1 || jobs[0].Attempts != 1 || jobs[0].LastError == "" {
		t.Errorf("job state: %+v", jobs)
	}
	if n, _ := rd.JobCount(ctx, "whlog:ep1"); n != 1 {
		t.Errorf("delivery log jobs: %d", n)
	}
	if rec, err := rd.ReserveIdempotencyKey(ctx, &grants.IdempotencyRecord{Key: "idem-1", RequestHash: "rh", ExpiresAt: time.Now().Add(time.Hour)}); err != nil || rec == nil || rec.Status != 201 {
		t.Errorf("idempotency key: %+v %v", rec, err)
	}
	if _, err := rd.GetBrowserSession(ctx, "bs-live"); err != nil {
		t.Errorf("live browser session: %v", err)
	}
	if rev, _ := rd.TokenRevoked(ctx, f.revokedFamily, ""); !rev {
		t.Error("revoked family is not revoked")
	}
	if rev, _ := rd.TokenRevoked(ctx, "", f.jti); !rev {
		t.Error("revoked jti is not revoked")
	}
	if _, err := rd.GetRefreshToken(ctx, f.revokedFamily, f.revokedRT); !errors.Is(err, sessions.ErrRevoked) {
		t.Errorf("token of the revoked family: %v", err)
	}
	if got, err := rd.GetRefreshToken(ctx, f.family, f.rt1); err != nil || got.RotatedAt == nil {
		t.Errorf("rotated token: %+v %v", got, err)
	}

	// Rerun: nothing copied, nothing duplicated.
	rep2, err := migrate.Run(ctx, src, rd, migrate.Options{})
	must(t, err)
	if rep2.Copied != 0 {
		t.Errorf("rerun copied %d", rep2.Copied)
	}
	for _, r := range rep2.Rows {
		if r.Present != r.Source || r.Target != r.Source || !r.OK() {
			t.Errorf("rerun %s: %+v", r.Kind, r)
		}
	}

	// Back to a new bolt file: the same hashes as the original.
	back := openBolt(t, filepath.Join(dir, "back.db"))
	rep3, err := migrate.Run(ctx, rd, back, migrate.Options{})
	out.Reset()
	if rep3 != nil {
		rep3.Print(&out)
	}
	t.Logf("redis → bolt:\n%s", out.String())
	must(t, err)
	for _, r := range rep3.Rows {
		orig := row(t, rep, r.Kind)
		if r.TargetHash != orig.SourceHash || r.Target != orig.Source {
			t.Errorf("%s: back in bolt %d records hash %s, the original %d hash %s", r.Kind, r.Target, r.TargetHash, orig.Source, orig.SourceHash)
		}
	}

	// Changes from here on.
	if u, created, err := rd.ResolveIdentity(ctx, grants.Identity{Issuer: "https://google", Subject: "g-alice"}, grants.Profile{}, "u_new", time.Now()); err != nil || created || u.ID != f.userID {
		t.Errorf("resolve a migrated identity: %v %v %v", u, created, err)
	}

	// Refresh semantics hold on both copies: presenting the rotated token
	// again is reuse (family revoked); the current one rotates.
	next := func(hash string) *sessions.RefreshToken {
		return &sessions.RefreshToken{Hash: hash, FamilyID: f.family, ClientID: "spa", Subject: f.userID, ExpiresAt: time.Now().Add(time.Hour), FamilyExpiresAt: time.Now().Add(2 * time.Hour)}
	}
	if err := back.RotateRefreshToken(ctx, f.rt2, next("rt-4")); err != nil {
		t.Errorf("rotate the current token in bolt: %v", err)
	}
	for name, st := range map[string]sessions.Store{"redis": rd, "bolt": back} {
		if err := st.RotateRefreshToken(ctx, f.rt1, next("rt-5")); !errors.Is(err, sessions.ErrRefreshReused) {
			t.Errorf("%s: reuse of the rotated token: %v", name, err)
		}
		if _, err := st.GetRefreshToken(ctx, f.family, f.rt2); !errors.Is(err, sessions.ErrRevoked) {
			t.Errorf("%s: after reuse: %v", name, err)
		}
	}
	// Sign-out reaches the families through the rebuilt session links.
	must(t, rd.RevokeFamily(ctx, "unrelated", time.Now().Add(time.Hour)))
	back2 := openBolt(t, filepath.Join(dir, "back2.db"))
	_, err = migrate.Run(ctx, src, back2, migrate.Options{})
	must(t, err)
	must(t, back2.RevokeSessionFamilies(ctx, "sess-1", time.Now().Add(time.Hour)))
	if _, err := back2.GetRefreshToken(ctx, f.family, f.rt2); !errors.Is(err, sessions.ErrRevoked) {
		t.Errorf("sign-out after migration: %v", err)
	}
}

// TestRefusesForeignTarget: a target holding records the source does not
// have is refused unless Merge; merging keeps them.
func TestRefusesForeignTarget(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src := openBolt(t, filepath.Join(dir, "src.db"))
	seed(t, ctx, src)
	rd := openRedis(t, testkit.StartRedis(t), "")
	must(t, rd.AppendAudit(ctx, &grants.AuditRecord{ID: "foreign", At: time.Now(), Action: "x"}))

	_, err := migrate.Run(ctx, src, rd, migrate.Options{})
	if !errors.Is(err, migrate.ErrNotEmpty) || !strings.Contains(err.Error(), "1 audit") {
		t.Fatalf("non-empty target: %v", err)
	}
	if n, _ := rd.SigningKeys(ctx); len(n) != 0 {
		t.Fatal("refused, yet copied")
	}
	rep, err := migrate.Run(ctx, src, rd, migrate.Options{Merge: true})
	must(t, err)
	if r := row(t, rep, store.Audit); r.Copied != 3 || r.Target != 4 || !r.OK() {
		t.Errorf("merge: %+v", r)
	}
}
