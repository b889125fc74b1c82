package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/internal/testkit"
	"github.com/usher-oidc/usher/store"
)

// migrSeed is what phase 1 leaves in the bbolt store, as the outside world
// sees it: links, tokens, the user and the published keys.
type migrSeed struct {
	pending, redeemed, revoked map[string]any    // the invitations as created
	timelines                  map[string]string // invitation ID → status and event types
	sub, email, password       string            // the invitee who redeemed
	refreshToken               string
	idToken, accessToken       string   // from the redemption sign-in
	preRotation, postRotation  string   // client_credentials tokens of the first and the rotated key
	kids                       []string // the JWKS, sorted
}

const migrUser = "kept@example.com"

// A team outgrows one process: usher on bbolt is used through its real flows
// (a pending, a redeemed and a revoked invitation, a user with a grant and a
// refresh token, signing keys rotated with `usher keys rotate`, an invitation
// mail waiting for its retry), stopped, copied with `usher store migrate` to
// Redis, and restarted as three replicas under the same issuer. Every link, token and grant still works, the
// redeemed link stays spent, the keys (same kids) verify old tokens and the
// replicas send the mail.
func TestMigrateBoltToRedisReplicas(t *testing.T) {
	t.Parallel()
	kek := base64.StdEncoding.EncodeToString([]byte("migrate-keeps-this-kek-32-bytes!"))
	boltPath := filepath.Join(t.TempDir(), "usher.db")
	boltStore := fmt.Sprintf(`{driver: bolt, path: "%s", key_encryption_key: "%s"}`, boltPath, kek)
	redisURL := "redis://" + testkit.StartRedis(t) + "/0"
	rs := newReplicaSet(t, "{invite_per_minute: 1000, authorize_per_minute: 1000, failed_redemptions_per_hour: 1000}")
	dev := rs.asDev()

	seed := seedBolt(t, rs, boltStore)
	rs.stop()
	migrateStore(t, "bolt:"+boltPath, redisURL)
	rs.start(fmt.Sprintf(`{driver: redis, redis: {url: "%s"}, key_encryption_key: "%s"}`, redisURL, kek), 3)
	api := seed.postRotation // signed on bbolt: the replicas verify it with the migrated key

	t.Run("keys moved", func(t *testing.T) { checkMigratedKeys(t, rs, seed) })
	t.Run("invitations kept their state", func(t *testing.T) {
		for _, inv := range []map[string]any{seed.pending, seed.redeemed, seed.revoked} {
			// The queued mail may be delivered by now: events only add.
			if got := timeline(t, dev, api, inv["id"].(string)); !strings.HasPrefix(got, seed.timelines[inv["id"].(string)]) {
				t.Errorf("invitation %s after the migration: %s, before: %s", inv["id"], got, seed.timelines[inv["id"].(string)])
			}
		}
	})
	t.Run("refresh token rotates through the replicas", func(t *testing.T) { checkRefreshRotates(t, rs, seed) })
	t.Run("the user signs in again as the same user", func(t *testing.T) {
		a := newAgent(t, rs.spaURL)
		code, v := a.signIn(dev, seed.email, seed.password, false)
		tr := exchangeCode(t, dev, code, v)
		checkGrantClaims(t, "new sign-in", jwtClaims(t, tr.IDToken), seed.sub)
		if kid, want := jwtHeader(t, tr.IDToken)["kid"], jwtHeader(t, seed.idToken)["kid"]; kid != want {
			t.Errorf("ID token kid %v after the migration, %v before: the rotated key no longer signs", kid, want)
		}
		g := apiCall(t, dev, http.MethodGet, "/api/users/"+seed.sub+"/grants", api, nil)
		if claims, _ := g.body["claims"].(map[string]any); g.status != http.StatusOK || claims["tier"] != "gold" || claims["crm_id"] != "M-1" {
			t.Errorf("grant: %d %s", g.status, g.raw)
		}
	})
	t.Run("spent and revoked links stay refused", func(t *testing.T) { checkRefusedLinks(t, rs, seed, api) })
	// It waits for the retry that usher on bbolt scheduled (15 s), and
	// before the redemption: usher mails no invitation that is used.
	t.Run("the queued invitation mail is delivered", func(t *testing.T) {
		if link := rs.mailbox.waitFor(t, "later@example.com", 45*time.Second).inviteLink(t); link != seed.pending["url"] {
			t.Errorf("mailed link %s, API's %s", link, seed.pending["url"])
		}
	})
	t.Run("the pending link redeems", func(t *testing.T) { checkPendingRedeems(t, rs, seed, api) })
}

// seedBolt runs one usher on bbolt, rotates its keys with the CLI (which needs
// the bbolt file, so usher is stopped for it) and uses the real flows.
func seedBolt(t *testing.T, rs *replicaSet, boltStore string) migrSeed {
	t.Helper()
	dev := rs.asDev()
	s := migrSeed{email: migrUser, password: "kept-password-123456", timelines: map[string]string{}}
	rs.mailAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t)) // nothing listens
	defer func() { rs.mailAddr = "" }()
	rs.start(boltStore, 1)
	s.preRotation = rs.funnelToken(t)
	rs.stop()
	out, err := exec.Command(usherBinary(t), "keys", "rotate", "--config", rs.cfgPaths[0], "--activate-after", "0s").CombinedOutput()
	if err != nil || strings.Count(string(out), "added key") != 2 {
		t.Fatalf("usher keys rotate: %v\n%s", err, out)
	}
	rs.start(boltStore, 1)
	s.postRotation = rs.funnelToken(t)
	if jwtHeader(t, s.postRotation)["kid"] == jwtHeader(t, s.preRotation)["kid"] {
		t.Fatalf("the rotated key does not sign: kid %v", jwtHeader(t, s.postRotation)["kid"])
	}
	api := s.postRotation

	// The pending one is mailed, but the SMTP server is down: the mail job
	// waits for its retry, and has to move with the rest.
	s.pending = invite(t, dev, api, map[string]any{"email": "later@example.com", "roles": []string{"member"}, "claims": map[string]any{"crm_id": "M-2"}})
	if !testkit.Within(20*time.Second, func() bool {
		r := apiCall(t, dev, http.MethodGet, "/api/invitations/"+s.pending["id"].(string), api, nil)
		return r.body["email_status"] == "queued" && r.body["email_error"] != nil
	}) {
		t.Fatal("the invitation mail never failed against the stopped SMTP server")
	}
	s.revoked = invite(t, dev, api, map[string]any{"email": "gone@example.com", "roles": []string{"member"}, "send_email": false})
	if r := apiCall(t, dev, http.MethodDelete, "/api/invitations/"+s.revoked["id"].(string), api, nil); r.status != http.StatusOK {
		t.Fatalf("revoke: %d %s", r.status, r.raw)
	}
	s.redeemed = invite(t, dev, api, map[string]any{"email": migrUser, "roles": []string{"customer"}, "claims": map[string]any{"crm_id": "M-1"}, "send_email": false})
	a := newAgent(t, rs.spaURL)
	a.followInvite(s.redeemed["url"].(string))
	resp, body, v := a.signInWithInvitation(dev, tokenOf(s.redeemed["url"].(string)), "signup",
		url.Values{"email": {migrUser}, "password": {s.password}, "name": {"Kept"}})
	tr := exchangeCode(t, dev, a.callbackOf(resp, body).Get("code"), v)
	if tr.RefreshToken == "" || tr.IDToken == "" {
		t.Fatalf("redemption sign-in: %+v", tr)
	}
	s.refreshToken, s.idToken, s.accessToken = tr.RefreshToken, tr.IDToken, tr.AccessToken
	s.sub = claimString(jwtClaims(t, tr.IDToken), "sub")
	// The operator adds to the grant through the API.
	if r := apiCall(t, dev, http.MethodPut, "/api/users/"+s.sub+"/grants/claims/tier", api, map[string]any{"value": "gold"}); r.status != http.StatusOK {
		t.Fatalf("PUT claim: %d %s", r.status, r.raw)
	}
	for _, inv := range []map[string]any{s.pending, s.redeemed, s.revoked} {
		s.timelines[inv["id"].(string)] = timeline(t, dev, api, inv["id"].(string))
	}
	if !strings.HasPrefix(s.timelines[s.redeemed["id"].(string)], "redeemed ") || !strings.HasPrefix(s.timelines[s.revoked["id"].(string)], "revoked ") {
		t.Fatalf("before the migration: %v", s.timelines)
	}
	s.kids = publishedKids(t, rs.backends()[0].String(), rs.proxyURL)
	return s
}

// timeline is an invitation's status and event types, for comparing.
func timeline(t *testing.T, d *app.Dev, api, id string) string {
	t.Helper()
	st, events := invitationStatus(t, d, api, id)
	return st + " " + strings.Join(events, ",")
}

// migrateStore runs `usher store migrate` and checks its verification table:
// a row per kind, all copied, equal counts and hashes.
func migrateStore(t *testing.T, from, to string) {
	t.Helper()
	out, err := exec.Command(usherBinary(t), "store", "migrate", "--from", from, "--to", to).CombinedOutput()
	if err != nil {
		t.Fatalf("usher store migrate: %v\n%s", err, out)
	}
	rows := map[string][]string{}
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) == 9 && slices.Contains(store.Kinds, store.Kind(f[0])) {
			rows[f[0]] = f
		}
	}
	// At least what phase 1 created: two generations of two keys, the
	// invitee, its identity and grant, three invitations, a mail job, a
	// refresh token and the invitee's browser session.
	least := map[store.Kind]int{store.SigningKeys: 4, store.Users: 1, store.Identities: 1, store.Grants: 1,
		store.Invitations: 3, store.Audit: 1, store.Jobs: 1, store.RefreshTokens: 1, store.BrowserSessions: 1}
	for _, kind := range store.Kinds {
		f, ok := rows[string(kind)]
		if !ok {
			t.Fatalf("no verification row for %s:\n%s", kind, out)
		}
		source, _ := strconv.Atoi(f[1])
		if f[8] != "ok" || f[1] != f[3] || f[1] != f[5] || f[6] != f[7] || source < least[kind] {
			t.Errorf("%s: %v (want every record copied, equal counts and hashes, at least %d)", kind, f, least[kind])
		}
	}
	if t.Failed() {
		t.Logf("migrate output:\n%s", out)
	}
}

// checkMigratedKeys: every replica publishes the same keys as usher on bbolt
// did, and they verify every token signed before the migration — also the
// one from before the rotation — and the admin API accepts it.
func checkMigratedKeys(t *testing.T, rs *replicaSet, s migrSeed) {
	for _, b := range rs.backends() {
		if kids := publishedKids(t, b.String(), rs.proxyURL); !slices.Equal(kids, s.kids) {
			t.Errorf("replica %s publishes %v, usher on bbolt published %v", b, kids, s.kids)
		}
		for name, jwt := range map[string]string{"pre-rotation": s.preRotation, "client_credentials": s.postRotation, "ID": s.idToken, "access": s.accessToken} {
			if err := verifyWithJWKS(b.String(), rs.proxyURL, jwt); err != nil {
				t.Errorf("replica %s, %s token: %v", b, name, err)
			}
		}
		req, _ := http.NewRequest(http.MethodGet, b.String()+"/api/invitations/"+s.pending["id"].(string), nil)
		if resp := viaHost(t, req, rs.proxyURL, s.preRotation); resp.StatusCode != http.StatusOK {
			t.Errorf("replica %s refuses the pre-rotation token: %d", b, resp.StatusCode)
		}
	}
}

// viaHost sends req to a replica as the proxy would (public Host).
func viaHost(t *testing.T, req *http.Request, public, bearer string) *http.Response {
	t.Helper()
	u, _ := url.Parse(public)
	req.Host = u.Host
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func fetchJWKS(backend, public string) (jose.JSONWebKeySet, error) {
	var set jose.JSONWebKeySet
	req, _ := http.NewRequest(http.MethodGet, backend+"/.well-known/jwks.json", nil)
	u, _ := url.Parse(public)
	req.Host = u.Host
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return set, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return set, json.Unmarshal(b, &set)
}

func publishedKids(t *testing.T, backend, public string) []string {
	t.Helper()
	set, err := fetchJWKS(backend, public)
	if err != nil {
		t.Fatalf("JWKS of %s: %v", backend, err)
	}
	var kids []string
	for _, k := range set.Keys {
		kids = append(kids, k.KeyID)
	}
	slices.Sort(kids)
	return kids
}

// verifyWithJWKS checks jwt's signature with the key of its kid in the
// replica's JWKS, as a relying party would.
func verifyWithJWKS(backend, public, jwt string) error {
	set, err := fetchJWKS(backend, public)
	if err != nil {
		return err
	}
	sig, err := jose.ParseSigned(jwt, []jose.SignatureAlgorithm{jose.ES256, jose.RS256, jose.PS256, jose.EdDSA})
	if err != nil {
		return err
	}
	kid := sig.Signatures[0].Header.KeyID
	keys := set.Key(kid)
	if len(keys) == 0 {
		return fmt.Errorf("kid %s is not published", kid)
	}
	_, err = sig.Verify(keys[0].Key)
	return err
}

// checkRefreshRotates: the refresh token issued on bbolt rotates three times,
// once on each replica, and every answer carries the grant.
func checkRefreshRotates(t *testing.T, rs *replicaSet, seed migrSeed) {
	dev := rs.asDev()
	rt := seed.refreshToken
	rs.rr.mu.Lock()
	rs.rr.served = nil
	rs.rr.mu.Unlock()
	for i := range 3 {
		tr := refresh(t, dev, rt)
		if tr.status != http.StatusOK || tr.RefreshToken == "" || tr.RefreshToken == rt {
			t.Fatalf("refresh %d: %d %s %s", i, tr.status, tr.Error, tr.Description)
		}
		checkGrantClaims(t, "refreshed ID token", jwtClaims(t, tr.IDToken), seed.sub)
		checkGrantClaims(t, "refreshed access token", jwtClaims(t, tr.AccessToken), seed.sub)
		rt = tr.RefreshToken
	}
	rs.rr.mu.Lock()
	defer rs.rr.mu.Unlock()
	if slices.Sort(rs.rr.served); !slices.Equal(rs.rr.served, []int{0, 1, 2}) {
		t.Errorf("the refreshes went to replicas %v, want each once", rs.rr.served)
	}
}

// checkGrantClaims: the token is the invitee's and carries its grant.
func checkGrantClaims(t *testing.T, what string, c map[string]any, sub string) {
	t.Helper()
	if c["sub"] != sub || !slices.Equal(rolesOf(c), []string{"customer"}) || c["crm_id"] != "M-1" || c["tier"] != "gold" {
		t.Errorf("%s: sub %v (want %s), roles %v, crm_id %v, tier %v", what, c["sub"], sub, rolesOf(c), c["crm_id"], c["tier"])
	}
}

// checkRefusedLinks: the redeemed link answers as used and grants nothing
// when pushed through /authorize; the revoked one answers as withdrawn.
func checkRefusedLinks(t *testing.T, rs *replicaSet, s migrSeed, api string) {
	dev := rs.asDev()
	for _, tc := range []struct {
		name string
		inv  map[string]any
		text string
	}{{"redeemed", s.redeemed, "already been used"}, {"revoked", s.revoked, "withdrawn"}} {
		resp, body := newAgent(t, rs.spaURL).get(tc.inv["url"].(string))
		if resp.StatusCode != http.StatusGone || !strings.Contains(body, tc.text) {
			t.Errorf("%s link: %d, want 410 with %q\n%s", tc.name, resp.StatusCode, tc.text, clipText(body))
		}
	}
	a := newAgent(t, rs.spaURL)
	resp, body, v := a.signInWithInvitation(dev, tokenOf(s.redeemed["url"].(string)), "signup",
		url.Values{"email": {"latecomer@example.com"}, "password": {"latecomer-123456"}, "name": {"Late"}})
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "could not be used") {
		t.Fatalf("the spent token through /authorize: %d, want the interstitial\n%s", resp.StatusCode, clipText(body))
	}
	sub := subOf(t, dev, a, resp, body, v)
	if g := apiCall(t, dev, http.MethodGet, "/api/users/"+sub+"/grants", api, nil); strings.Contains(g.raw, "customer") {
		t.Errorf("the spent link granted again: %s", g.raw)
	}
	if got := timeline(t, dev, api, s.redeemed["id"].(string)); !strings.HasPrefix(got, "redeemed ") {
		t.Errorf("redeemed invitation now: %s", got)
	}
}

// checkPendingRedeems: a new person follows the link made on bbolt and
// redeems it on the replicas.
func checkPendingRedeems(t *testing.T, rs *replicaSet, s migrSeed, api string) {
	dev := rs.asDev()
	link := s.pending["url"].(string)
	a := newAgent(t, rs.spaURL)
	if q := a.followInvite(link); q.Get("login_hint") != "later@example.com" {
		t.Fatalf("pending link → %v", q)
	}
	resp, body, v := a.signInWithInvitation(dev, tokenOf(link), "signup",
		url.Values{"email": {"later@example.com"}, "password": {"later-password-123456"}, "name": {"Later"}})
	tr := exchangeCode(t, dev, a.callbackOf(resp, body).Get("code"), v)
	for _, jwt := range []string{tr.IDToken, tr.AccessToken} {
		if c := jwtClaims(t, jwt); !slices.Equal(rolesOf(c), []string{"member"}) || c["crm_id"] != "M-2" {
			t.Errorf("tokens of the pending link's invitee: roles %v, crm_id %v", rolesOf(c), c["crm_id"])
		}
	}
	if got := timeline(t, dev, api, s.pending["id"].(string)); !strings.HasPrefix(got, "redeemed ") {
		t.Errorf("pending invitation after its redemption: %s", got)
	}
}
