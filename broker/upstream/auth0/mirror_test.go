package auth0_test

import (
	"context"
	"net"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/usher-oidc/usher/internal/testkit"

	"github.com/usher-oidc/usher/broker/upstream"
	"github.com/usher-oidc/usher/broker/upstream/auth0"

	"github.com/usher-oidc/usher/devidp"
	"github.com/usher-oidc/usher/grants"
)

const (
	mirrorClientID     = "usher-mirror"
	mirrorClientSecret = "usher-mirror-secret-0123456789abcdef"
	tenantIssuer       = "https://tenant.example/" // the issuer usher links identities under; any will do
)

// startTenant runs devidp as the Auth0 tenant, answering over plain http on
// loopback; it returns the domain (host:port) the mirror is configured with.
func startTenant(t *testing.T) (*devidp.Server, string) {
	t.Helper()
	return startTenantGranting(t, nil)
}

// startTenantGranting is startTenant with the mirror's application granted
// only scopes (nil: every scope).
func startTenantGranting(t *testing.T, scopes []string) (*devidp.Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	domain := ln.Addr().String()
	srv, err := devidp.New(devidp.Config{
		Issuer:            "http://" + domain + "/",
		ManagementClients: []devidp.Client{{ID: mirrorClientID, Secret: mirrorClientSecret, Scopes: scopes}},
	})
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(srv)
	hs.Listener.Close()
	hs.Listener = ln
	hs.Start()
	t.Cleanup(hs.Close)
	return srv, domain
}

// startMirror starts a tenant whose mirror application holds scopes (nil:
// every scope) and a mirror on a bolt store of its own, changed by mod.
func startMirror(t *testing.T, scopes []string, mod func(*auth0.MirrorOptions)) (*devidp.Server, string, grants.Store, *auth0.Mirror) {
	t.Helper()
	tenant, domain := startTenantGranting(t, scopes)
	st, _ := testkit.OpenBolt(t)
	return tenant, domain, st, newTestMirror(t, st, domain, mod)
}

func newTestMirror(t *testing.T, st grants.Store, domain string, mod func(*auth0.MirrorOptions)) *auth0.Mirror {
	t.Helper()
	o := auth0.MirrorOptions{
		Store: st, Domain: domain, ClientID: mirrorClientID, ClientSecret: mirrorClientSecret,
		CreateRoles: true, Insecure: true, Logger: testkit.Logger(t),
		PollInterval: 20 * time.Millisecond, BaseBackoff: 20 * time.Millisecond,
		RatePerSecond: 1000, RateBurst: 100, // devidp enforces no budget unless a test asks
	}
	if mod != nil {
		mod(&o)
	}
	m, err := auth0.NewMirror(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// runMirror starts the worker; the returned stop (also run at cleanup) waits
// until it has returned.
func runMirror(t *testing.T, m *auth0.Mirror) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// signUp creates an Auth0 password user and the usher user linked to it.
func signUp(t *testing.T, tenant *devidp.Server, st grants.Store, email string) (sub, usherUser string) {
	t.Helper()
	sub, err := tenant.AddUser(devidp.User{Email: email, Password: "pw", EmailVerified: true})
	if err != nil {
		t.Fatal(err)
	}
	u, _, err := st.ResolveIdentity(context.Background(), grants.Identity{Issuer: tenantIssuer, Subject: sub},
		grants.Profile{Email: email, EmailVerified: true}, "usr_"+strings.ReplaceAll(sub, "|", "_"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return sub, u.ID
}

// redeem creates an invitation and redeems it for usherUser.
func redeem(t *testing.T, st grants.Store, usherUser, sub string, roles []string, claims map[string]any) *grants.Invitation {
	t.Helper()
	ctx := context.Background()
	_, hash := testkit.InvitationToken(t)
	now := time.Now()
	if _, err := st.CreateInvitation(ctx, &grants.Invitation{
		ID: "inv-" + hash[:12], TokenHash: hash, Email: "invitee@example.com", Roles: roles, Claims: claims,
		EmailMatch: grants.MatchAny, Status: grants.StatusPending, CreatedAt: now, ExpiresAt: now.Add(time.Hour),
	}); err != nil {
		t.Fatal(err)
	}
	inv, _, err := st.RedeemInvitation(ctx, hash, grants.Redemption{
		UserID: usherUser, Identity: tenantIssuer + "|" + sub, Connection: devidp.ConnectionPassword, At: now,
	})
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

func mirrorState(t *testing.T, st grants.Store, invID string) upstream.MirrorState {
	t.Helper()
	return upstream.MirrorStateOf(testkit.Invitation(t, st, invID))
}

func waitStatus(t *testing.T, m *auth0.Mirror, invID, want string) {
	t.Helper()
	var got string
	testkit.Eventually(t, "mirror status "+want, func() bool {
		var err error
		got, err = m.Status(context.Background(), invID)
		return err == nil && got == want
	})
}

func waitQueueDrained(t *testing.T, m *auth0.Mirror) {
	t.Helper()
	testkit.Eventually(t, "the mirror queue to drain", func() bool {
		n, err := m.QueueDepth(context.Background())
		return err == nil && n == 0
	})
}

func usherMD(t *testing.T, tenant *devidp.Server, sub string) map[string]any {
	t.Helper()
	u, _ := tenant.AppMetadata(sub)["usher"].(map[string]any)
	return u
}

// claimList is app_metadata.usher.claims as stored: name, value pairs in
// name order.
func claimList(nameValues ...any) []any {
	out := []any{}
	for i := 0; i+1 < len(nameValues); i += 2 {
		out = append(out, map[string]any{"name": nameValues[i], "value": nameValues[i+1]})
	}
	return out
}

// storedClaims reads app_metadata.usher.claims (the list) into a map.
func storedClaims(t *testing.T, tenant *devidp.Server, sub string) map[string]any {
	t.Helper()
	l, _ := usherMD(t, tenant, sub)["claims"].([]any)
	out := make(map[string]any, len(l))
	for _, e := range l {
		c, _ := e.(map[string]any)
		name, _ := c["name"].(string)
		out[name] = c["value"]
	}
	return out
}

func TestMirrorHasAccount(t *testing.T) {
	t.Parallel()
	tenant, _, _, m := startMirror(t, nil, nil)
	ctx := context.Background()
	if _, err := tenant.AddUser(devidp.User{Email: "bob@example.com", Password: "pw"}); err != nil {
		t.Fatal(err)
	}
	if _, err := tenant.AddSocialUser(devidp.ConnectionGoogle, "gina@example.com", "Gina", true); err != nil {
		t.Fatal(err)
	}
	// Auth0 keeps a social email as the provider gave it, and users-by-email
	// is case-sensitive: the invited spelling must be asked for as well.
	if _, err := tenant.AddSocialUser(devidp.ConnectionGoogle, "Mixed.Case@Example.com", "Mia", true); err != nil {
		t.Fatal(err)
	}
	for email, want := range map[string]bool{
		"bob@example.com": true, " BOB@Example.com ": true, "gina@example.com": true, "nobody@example.com": false,
		"Mixed.Case@Example.com": true, " Mixed.Case@Example.com": true, "Nobody@Example.com": false,
	} {
		got, err := m.HasAccount(ctx, email)
		if err != nil || got != want {
			t.Errorf("HasAccount(%q) = %v, %v; want %v", email, got, err, want)
		}
	}

	// Down: an error (the caller carries on without the answer), not a
	// wait; a positive answer from before still holds (cached).
	tenant.ManagementDown(true)
	if got, err := m.HasAccount(ctx, "nobody@example.com"); err == nil {
		t.Errorf("HasAccount while down = %v, nil error", got)
	}
	if got, err := m.HasAccount(ctx, "bob@example.com"); err != nil || !got {
		t.Errorf("HasAccount(bob) while down = %v, %v; want the cached true", got, err)
	}
	tenant.ManagementDown(false)
	if got, err := m.HasAccount(ctx, "nobody@example.com"); err != nil || got {
		t.Errorf("HasAccount back up = %v, %v", got, err)
	}
}

func TestMirrorRedemptionsAndRevocation(t *testing.T) {
	t.Parallel()
	tenant, _, st, m := startMirror(t, nil, nil)
	runMirror(t, m)
	ctx := context.Background()

	sub, usr := signUp(t, tenant, st, "carol@example.com")
	if err := tenant.PatchAppMetadata(sub, map[string]any{"plan": "gold"}); err != nil {
		t.Fatal(err)
	}
	inv1 := redeem(t, st, usr, sub, []string{"viewer", "editor"}, map[string]any{"tenant": "acme", "tier": 1})
	if err := m.EnqueueRedemption(ctx, sub, inv1); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, m, inv1.ID, "synced")
	if got := tenant.UserRoles(sub); !slices.Equal(got, []string{"editor", "viewer"}) {
		t.Errorf("Auth0 roles = %v", got)
	}
	want := map[string]any{
		"roles":          []any{"editor", "viewer"},
		"assigned_roles": []any{"editor", "viewer"},
		"claims":         claimList("tenant", "acme", "tier", float64(1)),
		"invitations":    []any{inv1.ID},
	}
	if got := usherMD(t, tenant, sub); !reflect.DeepEqual(got, want) {
		t.Errorf("app_metadata.usher = %v, want %v", got, want)
	}
	if tenant.AppMetadata(sub)["plan"] != "gold" {
		t.Errorf("unrelated app_metadata key lost: %v", tenant.AppMetadata(sub))
	}

	// A second invitation: roles are united, claims merged; a claim the user
	// already holds (tier) is kept, as in the grant.
	inv2 := redeem(t, st, usr, sub, []string{"admin", "viewer"}, map[string]any{"tier": 2, "region": "eu"})
	if err := m.EnqueueRedemption(ctx, sub, inv2); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, m, inv2.ID, "synced")
	if got := tenant.UserRoles(sub); !slices.Equal(got, []string{"admin", "editor", "viewer"}) {
		t.Errorf("Auth0 roles after the second = %v", got)
	}
	want = map[string]any{
		"roles":          []any{"admin", "editor", "viewer"},
		"assigned_roles": []any{"admin", "editor", "viewer"},
		"claims":         claimList("region", "eu", "tenant", "acme", "tier", float64(1)),
		"invitations":    []any{inv1.ID, inv2.ID},
	}
	if got := usherMD(t, tenant, sub); !reflect.DeepEqual(got, want) {
		t.Errorf("app_metadata.usher after the second = %v, want %v", got, want)
	}

	// Revocation through usher: the role and the claim go there too.
	if _, err := st.RemoveGrantRole(ctx, usr, "editor", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := m.EnqueueRevocation(ctx, sub, "editor", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := st.RemoveGrantClaim(ctx, usr, "region", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := m.EnqueueRevocation(ctx, sub, "", "region"); err != nil {
		t.Fatal(err)
	}
	waitQueueDrained(t, m)
	if got := tenant.UserRoles(sub); !slices.Equal(got, []string{"admin", "viewer"}) {
		t.Errorf("Auth0 roles after revocation = %v", got)
	}
	want = map[string]any{
		"roles":          []any{"admin", "viewer"},
		"assigned_roles": []any{"admin", "viewer"},
		"claims":         claimList("tenant", "acme", "tier", float64(1)),
		"invitations":    []any{inv1.ID, inv2.ID},
	}
	if got := usherMD(t, tenant, sub); !reflect.DeepEqual(got, want) {
		t.Errorf("app_metadata.usher after revocation = %v, want %v", got, want)
	}
	if tenant.AppMetadata(sub)["plan"] != "gold" {
		t.Errorf("unrelated app_metadata key lost: %v", tenant.AppMetadata(sub))
	}
	if s := mirrorState(t, st, inv1.ID); s.Status != "synced" || s.Attempts != 1 {
		t.Errorf("state of the first invitation = %+v", s)
	}
}

func TestMirrorHonoursRetryAfter(t *testing.T) {
	t.Parallel()
	tenant, _, st, m := startMirror(t, nil, nil)
	runMirror(t, m)

	sub, usr := signUp(t, tenant, st, "dave@example.com")
	inv := redeem(t, st, usr, sub, []string{"editor"}, nil)
	// go-auth0 tries each call three times: all three get 429, so the job
	// fails once and is retried at Retry-After.
	tenant.ManagementRateLimit(3, time.Second)
	if err := m.EnqueueRedemption(context.Background(), sub, inv); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, m, inv.ID, "synced")
	if s := mirrorState(t, st, inv.ID); s.Attempts != 2 {
		t.Errorf("attempts = %d, want 2 (one rate-limited, one delivered)", s.Attempts)
	}
	if got := tenant.UserRoles(sub); !slices.Equal(got, []string{"editor"}) {
		t.Errorf("Auth0 roles = %v", got)
	}

	// devidp saw every request after a 429 arrive no earlier than it asked.
	var api []devidp.ManagementCall
	for _, c := range tenant.ManagementCalls() {
		if strings.HasPrefix(c.Path, "/api/v2/") {
			api = append(api, c)
		}
	}
	limited := 0
	for i, c := range api {
		if c.Status != 429 {
			continue
		}
		limited++
		if c.RetryAfter != time.Second {
			t.Errorf("429 #%d told Retry-After %s", limited, c.RetryAfter)
		}
		if i+1 == len(api) {
			t.Fatalf("no request after 429 #%d", limited)
		}
		if next := api[i+1]; next.At.Before(c.At.Add(c.RetryAfter)) {
			t.Errorf("request %s %s came %s after 429 #%d, which asked for %s",
				next.Method, next.Path, next.At.Sub(c.At), limited, c.RetryAfter)
		}
	}
	if limited != 3 {
		t.Errorf("devidp answered %d calls with 429, want 3: %+v", limited, api)
	}
}

func TestMirrorDeliversAfterOutage(t *testing.T) {
	t.Parallel()
	tenant, _, st, m := startMirror(t, nil, nil)
	stop := runMirror(t, m)
	ctx := context.Background()

	sub, usr := signUp(t, tenant, st, "erin@example.com")
	tenant.ManagementDown(true)
	inv := redeem(t, st, usr, sub, []string{"editor", "viewer"}, map[string]any{"team": "red"})
	start := time.Now()
	if err := m.EnqueueRedemption(ctx, sub, inv); err != nil {
		t.Fatal(err)
	}
	enqueueTook := time.Since(start)
	var s upstream.MirrorState
	testkit.Eventually(t, "a failed attempt recorded on the pending status", func() bool {
		s = mirrorState(t, st, inv.ID)
		return s.Status == "pending" && s.LastError != "" && s.Attempts >= 2
	})
	if !strings.Contains(s.LastError, "503") {
		t.Errorf("last error = %q, want the 503", s.LastError)
	}
	if n, err := m.QueueDepth(ctx); err != nil || n != 1 {
		t.Errorf("queue depth while down = %d, %v", n, err)
	}
	// The login path is not held up: the lookup fails fast and enqueueing
	// never touched Auth0.
	if _, err := m.HasAccount(ctx, "erin@example.com"); err == nil {
		t.Error("HasAccount while down succeeded")
	}
	t.Logf("enqueue took %s while Auth0 was down", enqueueTook)

	// The job itself carries the error.
	stop()
	jobs, err := st.ClaimJobs(ctx, auth0.JobKindMirror, time.Now().Add(time.Hour), 10, time.Minute)
	if err != nil || len(jobs) != 1 {
		t.Fatalf("claim: %v %v", jobs, err)
	}
	if !strings.Contains(jobs[0].LastError, "503") || jobs[0].Attempts < 2 {
		t.Errorf("queued job = %+v", jobs[0])
	}
	if err := st.RetryJob(ctx, jobs[0].ID, time.Now(), jobs[0].LastError); err != nil {
		t.Fatal(err)
	}

	// A grant revoked while the job waited is not written back.
	if _, err := st.RemoveGrantRole(ctx, usr, "viewer", time.Now()); err != nil {
		t.Fatal(err)
	}
	tenant.ManagementDown(false)
	runMirror(t, m)
	waitStatus(t, m, inv.ID, "synced")
	if got := tenant.UserRoles(sub); !slices.Equal(got, []string{"editor"}) {
		t.Errorf("Auth0 roles = %v", got)
	}
	want := map[string]any{"roles": []any{"editor"}, "assigned_roles": []any{"editor"}, "claims": claimList("team", "red"), "invitations": []any{inv.ID}}
	if got := usherMD(t, tenant, sub); !reflect.DeepEqual(got, want) {
		t.Errorf("app_metadata.usher = %v, want %v", got, want)
	}
	waitQueueDrained(t, m)
}

func TestMirrorReportsMissingRoles(t *testing.T) {
	t.Parallel()
	tenant, _, st, m := startMirror(t, nil, func(o *auth0.MirrorOptions) { o.CreateRoles = false })
	runMirror(t, m)
	if _, err := tenant.CreateRole("viewer", ""); err != nil {
		t.Fatal(err)
	}
	sub, usr := signUp(t, tenant, st, "frank@example.com")
	inv := redeem(t, st, usr, sub, []string{"viewer", "ghost"}, nil)
	if err := m.EnqueueRedemption(context.Background(), sub, inv); err != nil {
		t.Fatal(err)
	}
	var status string
	testkit.Eventually(t, "a failed status", func() bool {
		status, _ = m.Status(context.Background(), inv.ID)
		return strings.HasPrefix(status, "failed: ")
	})
	if !strings.Contains(status, "ghost") || strings.Contains(status, "viewer") {
		t.Errorf("status = %q, want it to name the missing role ghost only", status)
	}
	if got := tenant.UserRoles(sub); !slices.Equal(got, []string{"viewer"}) {
		t.Errorf("Auth0 roles = %v", got)
	}
	if got := usherMD(t, tenant, sub)["roles"]; !reflect.DeepEqual(got, []any{"ghost", "viewer"}) {
		t.Errorf("app_metadata.usher.roles = %v", got)
	}
	waitQueueDrained(t, m)
}

func TestMirrorUnknownUserFails(t *testing.T) {
	t.Parallel()
	tenant, _, st, m := startMirror(t, nil, nil)
	runMirror(t, m)
	_, usr := signUp(t, tenant, st, "gail@example.com")
	ghost := "auth0|ffffffffffffffffffffffff"
	inv := redeem(t, st, usr, ghost, []string{"viewer"}, nil)
	if err := m.EnqueueRedemption(context.Background(), ghost, inv); err != nil {
		t.Fatal(err)
	}
	var status string
	testkit.Eventually(t, "a failed status", func() bool {
		status, _ = m.Status(context.Background(), inv.ID)
		return strings.HasPrefix(status, "failed: ")
	})
	if !strings.Contains(status, "not found") {
		t.Errorf("status = %q", status)
	}
	waitQueueDrained(t, m)
}

func TestNewMirrorValidates(t *testing.T) {
	t.Parallel()
	st, _ := testkit.OpenBolt(t)
	ok := auth0.MirrorOptions{Store: st, Domain: "acme.eu.auth0.com", ClientID: "id", ClientSecret: "secret"}
	if _, err := auth0.NewMirror(context.Background(), ok); err != nil {
		t.Fatalf("valid options: %v", err)
	}
	for name, mod := range map[string]func(*auth0.MirrorOptions){
		"no store":           func(o *auth0.MirrorOptions) { o.Store = nil },
		"no domain":          func(o *auth0.MirrorOptions) { o.Domain = "" },
		"no client id":       func(o *auth0.MirrorOptions) { o.ClientID = "" },
		"no secret":          func(o *auth0.MirrorOptions) { o.ClientSecret = "" },
		"a path":             func(o *auth0.MirrorOptions) { o.Domain = "acme.eu.auth0.com/api" },
		"http, not insecure": func(o *auth0.MirrorOptions) { o.Domain = "http://acme.eu.auth0.com" },
	} {
		o := ok
		mod(&o)
		if _, err := auth0.NewMirror(context.Background(), o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if s, err := newTestMirror(t, st, "127.0.0.1:1", nil).Status(context.Background(), "inv-missing"); err == nil {
		t.Errorf("status of a missing invitation = %q", s)
	}
}
