package e2e

import (
	"bytes"
	"context"
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
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
	"github.com/usher-oidc/usher/internal/testkit"
)

// sentinelCommand returns how to start a Sentinel: redis-sentinel when it is
// installed, else redis-server in sentinel mode (the same program: Debian's
// redis-sentinel package only adds the name and a system service).
func sentinelCommand(conf string) (*exec.Cmd, bool) {
	if p, err := exec.LookPath("redis-sentinel"); err == nil {
		return exec.Command(p, conf), true
	}
	if p, err := exec.LookPath("redis-server"); err == nil {
		return exec.Command(p, conf, "--sentinel"), true
	}
	return nil, false
}

// sentinelSet is a master, one replica and three Sentinels (quorum 2)
// watching them as "usher-master".
type sentinelSet struct {
	master, replica *redisProc
	sentinels       []string
}

func startSentinelSet(t *testing.T) *sentinelSet {
	t.Helper()
	if _, ok := sentinelCommand(""); !ok {
		t.Skip("neither redis-sentinel nor redis-server is installed (make test installs redis-server, which runs in sentinel mode)")
	}
	ss := &sentinelSet{}
	ss.master = newRedisProc(t, "--appendonly", "no")
	ss.replica = newRedisProc(t, "--appendonly", "no", "--replicaof", "127.0.0.1", strconv.Itoa(ss.master.port))
	waitReplicaSynced(t, ss.replica.addr())
	ss.sentinels = startSentinels(t, ss.master.port, 500*time.Millisecond, 2*time.Second, true)
	return ss
}

// waitReplicaSynced waits until the replica at addr has synced with its master.
func waitReplicaSynced(t *testing.T, addr string) {
	t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: addr})
	defer rc.Close()
	testkit.Eventually(t, "the replica to sync with the master", func() bool {
		info, err := rc.Info(context.Background(), "replication").Result()
		return err == nil && strings.Contains(info, "master_link_status:up")
	})
}

// startSentinels starts three Sentinels (quorum 2) watching the master on
// masterPort as "usher-master" and waits until each sees the replica and
// the two others (they find each other through the master's hello
// channel), which a failover needs. logs: their output goes to the test log.
func startSentinels(t *testing.T, masterPort int, downAfter, failoverTimeout time.Duration, logs bool) []string {
	t.Helper()
	var addrs []string
	for range 3 {
		port := freePort(t)
		dir := t.TempDir()
		conf := filepath.Join(dir, "sentinel.conf")
		content := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\n"+
			"sentinel monitor usher-master 127.0.0.1 %d 2\n"+
			"sentinel down-after-milliseconds usher-master %d\n"+
			"sentinel failover-timeout usher-master %d\n"+
			"sentinel parallel-syncs usher-master 1\n",
			port, dir, masterPort, downAfter.Milliseconds(), failoverTimeout.Milliseconds())
		if err := writeFile(conf, content); err != nil {
			t.Fatal(err)
		}
		cmd, _ := sentinelCommand(conf)
		if logs {
			w := newTestWriter(t)
			cmd.Stdout, cmd.Stderr = w, w
		}
		if err := cmd.Start(); err != nil {
			t.Fatalf("redis sentinel: %v", err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		addr := "127.0.0.1:" + strconv.Itoa(port)
		waitTCP(t, addr)
		addrs = append(addrs, addr)
	}
	for _, addr := range addrs {
		c := redis.NewSentinelClient(&redis.Options{Addr: addr})
		testkit.Eventually(t, "Sentinel "+addr+" to see the replica and the two other Sentinels", func() bool {
			m, err := c.Master(context.Background(), "usher-master").Result()
			return err == nil && m["num-slaves"] == "1" && m["num-other-sentinels"] == "2" && m["flags"] == "master"
		})
		c.Close()
	}
	return addrs
}

// sample is one HTTP exchange with usher during the load.
type sample struct {
	start, end time.Time
	method     string
	path       string
	status     int    // 0: no response
	retryAfter string // the 503's Retry-After
	err        error
}

// recorder is a RoundTripper that keeps every exchange with usher's host.
type recorder struct {
	host string
	next http.RoundTripper
	mu   sync.Mutex
	all  []sample
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	s := sample{start: time.Now(), method: req.Method, path: req.URL.Path}
	resp, err := r.next.RoundTrip(req)
	s.end = time.Now()
	if err != nil {
		s.err = err
	} else {
		s.status, s.retryAfter = resp.StatusCode, resp.Header.Get("Retry-After")
	}
	if req.URL.Host == r.host {
		r.mu.Lock()
		r.all = append(r.all, s)
		r.mu.Unlock()
	}
	return resp, err
}

func (r *recorder) samples() []sample {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.all)
}

// flowT lets a load goroutine run the agent's helpers: a failed step ends
// the flow (a panic the worker recovers) instead of the test.
type flowT struct {
	testing.TB
}

type flowFailed struct{ msg string }

func (flowT) Helper()                          {}
func (f flowT) Fatalf(format string, a ...any) { panic(flowFailed{fmt.Sprintf(format, a...)}) }
func (f flowT) Fatal(a ...any)                 { panic(flowFailed{fmt.Sprint(a...)}) }
func (f flowT) Errorf(format string, a ...any) { panic(flowFailed{fmt.Sprintf(format, a...)}) }
func (f flowT) Logf(string, ...any)            {}

// runFlow runs fn, reporting a failed step as an error.
func runFlow(fn func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			ff, ok := r.(flowFailed)
			if !ok {
				panic(r)
			}
			err = fmt.Errorf("%s", clipText(ff.msg))
		}
	}()
	fn()
	return nil
}

// ack is a write usher acknowledged, with when.
type ack struct {
	sent time.Time // when the request that acknowledged it was sent
	at   time.Time
	what string // "invitation", "rotation", "redemption"
	id   string // invitation ID, or the chain's index
}

// usher on Redis Sentinel (master, replica, three Sentinels) under a load of
// invitation creates, refresh rotations and invitation sign-ups (redemption
// on the accept page): the master is killed mid-load. Sentinel promotes the
// replica, usher follows it, and the test reports the failed requests (503
// with Retry-After, never 500), the acknowledged writes missing after the
// failover, and the time from the kill to the first acknowledged write.
func TestSentinelFailoverUnderLoad(t *testing.T) {
	t.Parallel()
	ss := startSentinelSet(t)
	d := startDev(t, app.DevOptions{Configure: func(c *config.Config) {
		c.Store.Driver = "redis"
		c.Store.Redis.Addrs = ss.sentinels
		c.Store.Redis.MasterName = "usher-master"
		c.RateLimits = config.RateLimits{InvitePerMinute: 100000, FailedRedemptionsPerHour: 100000, APIPerMinute: 100000, AuthorizePerMinute: 100000}
	}})
	base := strings.TrimSuffix(d.IssuerURL, "/")
	u, _ := url.Parse(base)
	rec := &recorder{host: u.Host, next: http.DefaultTransport}
	client := &http.Client{Transport: rec, Timeout: 15 * time.Second}
	api := funnelToken(t, d, "invitations:write invitations:read")

	// Refresh chains: each one a sign-in of the dev user, rotated in a loop.
	const chains = 4
	tokens := make([]string, chains)
	for i := range tokens {
		a := newAgent(t, d.SPAURL)
		code, v := a.signIn(d, app.DevUserEmail, app.DevUserPassword, false)
		tokens[i] = exchangeCode(t, d, code, v).RefreshToken
	}

	var (
		mu     sync.Mutex
		acks   []ack
		broken []string // flows that failed, with why
		stop   atomic.Bool
		wg     sync.WaitGroup
		seq    atomic.Int64
		// errRedirects counts sign-ins usher sent back to the app with an
		// OAuth error instead of a code.
		errRedirects atomic.Int64
		ackedAt      = func(sent time.Time, what, id string) {
			mu.Lock()
			acks = append(acks, ack{sent, time.Now(), what, id})
			mu.Unlock()
		}
		fail = func(format string, a ...any) {
			mu.Lock()
			broken = append(broken, fmt.Sprintf(format, a...))
			mu.Unlock()
		}
	)
	createInvitation := func(email string, roles []string) (id, link string, err error) {
		body, _ := json.Marshal(map[string]any{"email": email, "roles": roles, "send_email": false})
		req, _ := http.NewRequest(http.MethodPost, base+"/api/invitations", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+api)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return "", "", err
		}
		defer resp.Body.Close()
		var out struct{ ID, URL string }
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusCreated || json.Unmarshal(raw, &out) != nil {
			return "", "", fmt.Errorf("create invitation: %d %s", resp.StatusCode, clipText(string(raw)))
		}
		return out.ID, out.URL, nil
	}
	pause := func() { time.Sleep(5 * time.Millisecond) }

	// Invitation creates.
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				n := seq.Add(1)
				sent := time.Now()
				if id, _, err := createInvitation(fmt.Sprintf("load%d@example.com", n), nil); err == nil {
					ackedAt(sent, "invitation", id)
				}
				pause()
			}
		})
	}
	// Refresh rotations: a 503 leaves the token as it was, so the chain
	// retries with it; an invalid_grant after a 503 means the rotation
	// happened but its answer was lost, and ends the chain.
	lastAcked := make([]string, chains)
	lastAckAt := make([]time.Time, chains)
	unsure := make([]bool, chains) // a 503 since the last acknowledged rotation
	reused := make([]bool, chains) // the retry after a 503 found its token already rotated
	for i := range chains {
		lastAcked[i] = tokens[i]
		wg.Go(func() {
			rt := tokens[i]
			after503 := false
			for !stop.Load() {
				sent := time.Now()
				resp, err := client.PostForm(base+"/oauth/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {app.DevSPAClientID}})
				if err != nil {
					pause()
					continue
				}
				var tr tokenResponse
				json.NewDecoder(resp.Body).Decode(&tr)
				resp.Body.Close()
				switch {
				case resp.StatusCode == http.StatusOK && tr.RefreshToken != "":
					rt, after503 = tr.RefreshToken, false
					mu.Lock()
					lastAcked[i], unsure[i], lastAckAt[i] = rt, false, time.Now()
					mu.Unlock()
					ackedAt(sent, "rotation", strconv.Itoa(i))
				case resp.StatusCode == http.StatusServiceUnavailable:
					after503 = true
					mu.Lock()
					unsure[i] = true
					mu.Unlock()
				case after503 && strings.Contains(tr.Description, "already used"):
					// The 503'd request's rotation was stored (a later step of
					// the token request failed): the retry is a reuse, and
					// reuse detection revokes the sign-in.
					mu.Lock()
					reused[i] = true
					mu.Unlock()
					return
				default:
					fail("refresh chain %d: %d %s %s (after a 503: %v)", i, resp.StatusCode, tr.Error, tr.Description, after503)
					return
				}
				pause()
			}
		})
	}
	// Sign-ups through an invitation: create, follow, sign up at devidp,
	// accept (the redemption), exchange the code.
	for range 3 {
		wg.Go(func() {
			for !stop.Load() {
				n := seq.Add(1)
				email := fmt.Sprintf("redeem%d@example.com", n)
				sent := time.Now()
				id, link, err := createInvitation(email, []string{"customer"})
				if err != nil {
					pause()
					continue
				}
				ackedAt(sent, "invitation", id)
				a := newAgent(flowT{t}, d.SPAURL)
				a.client.Transport = rec
				err = runFlow(func() {
					// The sign-in starts before the kill or after it; the
					// accept (the redemption) is its last request.
					sent := time.Now()
					resp, body, v := a.signInWithInvitation(d, tokenOf(link), "signup", urlValues("email", email, "password", "password-123456", "name", "L"))
					cb := a.callbackOf(resp, body)
					if cb.Get("code") == "" {
						// usher sent the person back to the app with an error
						// (an authorization error is answered by redirect).
						errRedirects.Add(1)
						panic(flowFailed{"back to the app with error=" + cb.Get("error") + ": " + cb.Get("error_description")})
					}
					// The accept page answered with the code: redemption acknowledged.
					ackedAt(sent, "redemption", id)
					form := url.Values{"grant_type": {"authorization_code"}, "code": {cb.Get("code")}, "code_verifier": {v},
						"client_id": {app.DevSPAClientID}, "redirect_uri": {d.SPAURL + "/callback"}}
					r, err := client.PostForm(base+"/oauth/token", form)
					if err != nil {
						panic(flowFailed{err.Error()})
					}
					var tr tokenResponse
					json.NewDecoder(r.Body).Decode(&tr)
					r.Body.Close()
					if r.StatusCode == http.StatusOK && !slices.Equal(rolesOf(jwtClaimsOf(tr.IDToken)), []string{"customer"}) {
						fail("redemption %s: ID token without the invitation's role", id)
					}
				})
				if err != nil {
					fail("sign-up with invitation %s: %v", id, err)
				}
				pause()
			}
		})
	}

	countAcks := func(after time.Time) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, a := range acks {
			if a.at.After(after) {
				n++
			}
		}
		return n
	}
	testkit.Eventually(t, "the load to get going", func() bool { return countAcks(time.Time{}) >= 50 })
	time.Sleep(500 * time.Millisecond)

	killedAt := time.Now()
	ss.master.stop() // SIGKILL
	var recovered time.Time
	testkit.Eventually(t, "a write acknowledged after the failover", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, a := range acks {
			if a.sent.After(killedAt) {
				recovered = a.at
				return true
			}
		}
		return false
	})
	// Keep the load on a little longer: usher must stay on the new master.
	time.Sleep(time.Second)
	stop.Store(true)
	wg.Wait()

	rc := redis.NewSentinelClient(&redis.Options{Addr: ss.sentinels[0]})
	if a, err := rc.GetMasterAddrByName(context.Background(), "usher-master").Result(); err != nil || a[1] != strconv.Itoa(ss.replica.port) {
		t.Errorf("master after the failover: %v %v, want the replica's port %d", a, err, ss.replica.port)
	}
	rc.Close()

	// Responses: failures must be 503 with Retry-After, and only around the failover.
	samples := rec.samples()
	var failed, no5xx []sample
	for _, s := range samples {
		if s.err != nil || s.status >= 500 {
			failed = append(failed, s)
		}
		if s.err != nil || s.status >= 500 && (s.status != http.StatusServiceUnavailable || s.retryAfter == "") {
			no5xx = append(no5xx, s)
		}
	}
	for _, s := range no5xx {
		t.Errorf("%s %s at kill%+v: %d Retry-After %q err %v; want 503 with Retry-After", s.method, s.path,
			s.start.Sub(killedAt).Round(time.Millisecond), s.status, s.retryAfter, s.err)
	}
	for _, s := range failed {
		if s.end.Before(killedAt) || s.start.After(recovered.Add(time.Second)) {
			t.Errorf("%s %s failed outside the failover (kill%+v): %d", s.method, s.path, s.start.Sub(killedAt).Round(time.Millisecond), s.status)
		}
	}

	// A store outage is no reason for a 4xx: the only one expected is the
	// reuse refusal after a rotation that was stored but answered 503.
	for _, s := range samples {
		if s.status >= 400 && s.status < 500 && !(s.path == "/oauth/token" && s.status == http.StatusBadRequest) &&
			s.end.After(killedAt) && s.start.Before(recovered.Add(time.Second)) {
			t.Errorf("%s %s at kill%+v: %d during the failover; a store outage must be a 503", s.method, s.path,
				s.start.Sub(killedAt).Round(time.Millisecond), s.status)
		}
	}

	// Acknowledged writes: every one must still be there on the new master.
	mu.Lock()
	acked := slices.Clone(acks)
	chainsAt := slices.Clone(lastAcked)
	chainsAckAt := slices.Clone(lastAckAt)
	chainsUnsure := slices.Clone(unsure)
	chainsReused := slices.Clone(reused)
	mu.Unlock()
	lost := map[string]int{}
	// Replication is asynchronous (usher sends no WAIT, see the README): a
	// write acknowledged in the instant before the kill may not have reached
	// the replica. One acknowledged well before the kill must never be lost.
	const replicationWindow = 250 * time.Millisecond
	early := 0
	lose := func(what string, at time.Time) {
		lost[what]++
		if killedAt.Sub(at) > replicationWindow {
			early++
		}
	}
	counted := map[string]int{}
	redeemedIDs := map[string]bool{}
	for _, a := range acked {
		if a.what == "redemption" {
			redeemedIDs[a.id] = true
		}
	}
	for _, a := range acked {
		counted[a.what]++
		switch a.what {
		case "invitation":
			g := apiCall(t, d, http.MethodGet, "/api/invitations/"+a.id, api, nil)
			if g.status != http.StatusOK {
				lose("invitation", a.at)
				t.Logf("lost invitation %s (acknowledged at kill%+v): %d", a.id, a.at.Sub(killedAt).Round(time.Millisecond), g.status)
			}
		case "redemption":
			g := apiCall(t, d, http.MethodGet, "/api/invitations/"+a.id, api, nil)
			if g.body["status"] != "redeemed" {
				lose("redemption", a.at)
				t.Logf("lost redemption of %s (acknowledged at kill%+v): %s", a.id, a.at.Sub(killedAt).Round(time.Millisecond), clipText(g.raw))
			}
		}
	}
	// The last acknowledged refresh token of each chain must still be
	// known: a lost rotation would leave it unknown (and the token before it
	// live). A chain whose last request was answered 503 may find it already
	// rotated: that request's rotation was stored though its answer failed.
	committed503 := 0
	for i, rt := range chainsAt {
		r := refresh(t, d, rt)
		switch {
		case r.RefreshToken != "":
		case chainsReused[i] || chainsUnsure[i] && strings.Contains(r.Description, "already used"):
			committed503++
			t.Logf("chain %d: a rotation answered 503 had been stored; the retry with the previous token revoked the sign-in", i)
		default:
			lose("rotation", chainsAckAt[i])
			t.Logf("chain %d: last acknowledged refresh token refused after the failover: %d %s %s", i, r.status, r.Error, r.Description)
		}
	}
	for _, b := range broken {
		t.Logf("flow ended: %s", b)
	}

	t.Logf("load: %d requests to usher, %d acknowledged writes (%d invitations, %d rotations, %d redemptions)",
		len(samples), len(acked), counted["invitation"], counted["rotation"], counted["redemption"])
	t.Logf("failover: %d requests failed (all 503 with Retry-After: %v), %d refresh chains ended by a stored rotation answered 503; first write sent after the kill acknowledged %s after it",
		len(failed), len(no5xx) == 0, committed503, recovered.Sub(killedAt).Round(time.Millisecond))
	t.Logf("sign-ins sent back to the app with an error instead of a code: %d", errRedirects.Load())
	t.Logf("acknowledged writes lost: invitations %d, rotations %d, redemptions %d", lost["invitation"], lost["rotation"], lost["redemption"])
	if early > 0 {
		t.Errorf("%d writes acknowledged more than %s before the kill were lost in the failover", early, replicationWindow)
	}
}

// jwtClaimsOf decodes a JWT's payload, or returns nil.
func jwtClaimsOf(jwt string) map[string]any {
	var m map[string]any
	if err := runFlow(func() { m = jwtClaims(flowT{}, jwt) }); err != nil {
		return nil
	}
	return m
}
