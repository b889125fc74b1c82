package e2e

import (
	"bytes"
	"cmp"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/demo"
	"github.com/usher-oidc/usher/devidp"
	"github.com/usher-oidc/usher/internal/testkit"
)

var (
	buildOnce sync.Once
	usherBin  string
	buildErr  error
)

// usherBinary builds the usher command once per test run.
func usherBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "usher-bin-")
		if err != nil {
			buildErr = err
			return
		}
		usherBin = filepath.Join(dir, "usher")
		out, err := exec.Command("go", "build", "-o", usherBin, "github.com/usher-oidc/usher").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return usherBin
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func waitTCP(t testing.TB, addr string) {
	t.Helper()
	if !testkit.Within(20*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	}) {
		t.Fatalf("%s never accepted connections", addr)
	}
}

// roundRobin is the load balancer in front of the replicas: consecutive
// requests go to consecutive live backends; a dead one is skipped (idempotent
// requests are retried on the next).
type roundRobin struct {
	next     atomic.Int64
	mu       sync.Mutex
	backends []*url.URL
	served   []int // backend index per request, noted before its answer is sent
}

func (rr *roundRobin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Buffer the (small) body so a request refused by a dead backend can be
	// replayed on the next one: a refused connection never reached usher.
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	rr.mu.Lock()
	backends := rr.backends // replaced, never modified, when the set restarts
	rr.mu.Unlock()
	start := int(rr.next.Add(1))
	for i := range backends {
		idx := (start + i) % len(backends)
		target := backends[idx]
		var proxyErr error
		proxy := &httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.SetURL(target)
				pr.Out.Host = pr.In.Host // usher sees the public host
			},
			// Noted before the answer goes on to the client, so a test that
			// has its answer finds it in served.
			ModifyResponse: func(*http.Response) error {
				rr.mu.Lock()
				rr.served = append(rr.served, idx)
				rr.mu.Unlock()
				return nil
			},
			ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) { proxyErr = err },
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		proxy.ServeHTTP(w, r)
		if proxyErr == nil {
			return
		}
		if !nextBackend(r.Method, proxyErr) {
			http.Error(w, proxyErr.Error(), http.StatusBadGateway)
			return
		}
	}
	http.Error(w, "no live backend", http.StatusBadGateway)
}

// nextBackend: the request may go to the next backend after err, as a
// load balancer retries (nginx's proxy_next_upstream error): a refused
// connection never reached usher; a GET or HEAD whose connection was reset
// or closed (a pooled connection to a backend just killed) is safe to send
// again.
func nextBackend(method string, err error) bool {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return true
	}
	idempotent := method == http.MethodGet || method == http.MethodHead
	return idempotent && (errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF))
}

type replicaSet struct {
	t          *testing.T
	proxyURL   string
	idp        *devidp.Server
	idpURL     string
	spaURL     string
	secret     string
	rateLimits string
	dir        string
	started    int // processes started so far, for config file names
	cfgPaths   []string
	procs      []*exec.Cmd
	rr         *roundRobin
	mailbox    *mailbox
	mailAddr   string // SMTP host:port of the next start; "" means the mailbox
}

// startReplicas runs three `usher serve` processes sharing one Redis, behind
// a round-robin proxy, with devidp as the upstream and a demo SPA.
func startReplicas(t *testing.T, redisURL string) *replicaSet {
	t.Helper()
	// Every racer of the concurrent redemption comes from the test's proxy,
	// and the replicas share the limits: room for all 50 and their failures.
	return startReplicasWith(t, redisURL, "{invite_per_minute: 1000, authorize_per_minute: 1000, failed_redemptions_per_hour: 1000}")
}

// startReplicasWith is startReplicas with the replicas' rate_limits (YAML flow mapping).
func startReplicasWith(t *testing.T, redisURL, rateLimits string) *replicaSet {
	t.Helper()
	rs := newReplicaSet(t, rateLimits)
	rs.start(fmt.Sprintf(`{driver: redis, redis: {url: "%s"}}`, redisURL), 3)
	return rs
}

// newReplicaSet starts what outlives the usher processes: the round-robin
// proxy (the issuer), devidp, the demo SPA and the mailbox. start and stop
// then run sets of `usher serve` behind them, so a test can change the store
// under one issuer.
func newReplicaSet(t *testing.T, rateLimits string) *replicaSet {
	t.Helper()
	rs := &replicaSet{t: t, rr: &roundRobin{}, mailbox: startMailbox(t), rateLimits: rateLimits, dir: t.TempDir(),
		secret: base64.StdEncoding.EncodeToString([]byte("replicas-share-this-session-key!"))}
	proxyLn, _ := net.Listen("tcp", "127.0.0.1:0")
	rs.proxyURL = "http://" + proxyLn.Addr().String()
	spa := httptest.NewServer(demo.Handler(demo.Config{Issuer: rs.proxyURL, ClientID: "demo"}))
	t.Cleanup(spa.Close)
	rs.spaURL = spa.URL
	idpLn, _ := net.Listen("tcp", "127.0.0.1:0")
	rs.idpURL = "http://" + idpLn.Addr().String() + "/"
	var err error
	rs.idp, err = devidp.New(devidp.Config{Issuer: rs.idpURL,
		Clients: []devidp.Client{{ID: "usher", Secret: "replica-upstream-secret", RedirectURIs: []string{rs.proxyURL + "/callback"},
			PostLogoutRedirectURIs: []string{rs.proxyURL + "/logout/done"}}}})
	if err != nil {
		t.Fatal(err)
	}
	idpSrv := &http.Server{Handler: rs.idp}
	go idpSrv.Serve(idpLn)
	t.Cleanup(func() { idpSrv.Close() })
	proxySrv := &http.Server{Handler: rs.rr}
	go proxySrv.Serve(proxyLn)
	t.Cleanup(func() { proxySrv.Close() })
	return rs
}

// start runs n `usher serve` processes on the store (a YAML flow mapping for
// the config's store key) and puts them behind the proxy once all are ready;
// rs.cfgPaths names their config files.
func (rs *replicaSet) start(store string, n int) {
	t := rs.t
	t.Helper()
	bin := usherBinary(t)
	mbHost, mbPort, _ := strings.Cut(cmp.Or(rs.mailAddr, rs.mailbox.addr), ":")
	rs.procs, rs.cfgPaths = nil, nil
	var backends []*url.URL
	for range n {
		port := freePort(t)
		cfgPath := filepath.Join(rs.dir, fmt.Sprintf("usher%d.yaml", rs.started))
		rs.started++
		cfg := fmt.Sprintf(`issuer: %s
listen: 127.0.0.1:%d
metrics: {listen: "127.0.0.1:0"}
rate_limits: %s
log: {level: warn, format: json}
store: %s
sessions: {secret: "%s"}
upstream: {issuer: "%s", client_id: usher, client_secret: replica-upstream-secret}
clients:
  - {id: demo, type: public, redirect_uris: ["%s/callback"], post_logout_redirect_uris: ["%s/"], initiate_login_uri: "%s/login"}
  - {id: funnel, type: confidential, secret: "replica-funnel-secret-0123456789", grant_types: [client_credentials], scopes: [invitations:write, invitations:read]}
mail: {from: "usher <no-reply@example.com>", smtp: {host: "%s", port: %s, tls: none}}
`, rs.proxyURL, port, rs.rateLimits, store, rs.secret, rs.idpURL, rs.spaURL, rs.spaURL, rs.spaURL, mbHost, mbPort)
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "serve", "--config", cfgPath)
		w := newTestWriter(t)
		cmd.Stdout, cmd.Stderr = w, w
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		rs.procs = append(rs.procs, cmd)
		rs.cfgPaths = append(rs.cfgPaths, cfgPath)
		t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
		u, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", port))
		backends = append(backends, u)
	}
	for _, b := range backends {
		waitReady(t, b.String()+"/readyz")
	}
	rs.rr.mu.Lock()
	rs.rr.backends = backends
	rs.rr.mu.Unlock()
}

// backends lists the running processes' base URLs.
func (rs *replicaSet) backends() []*url.URL {
	rs.rr.mu.Lock()
	defer rs.rr.mu.Unlock()
	return rs.rr.backends
}

// stop ends every process of the set (SIGTERM, as an orchestrator would) and
// waits for them: a bbolt file is free again afterwards.
func (rs *replicaSet) stop() {
	rs.rr.mu.Lock()
	rs.rr.backends = nil
	rs.rr.mu.Unlock()
	for _, cmd := range rs.procs {
		cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, cmd := range rs.procs {
		cmd.Wait()
	}
	rs.procs = nil
}

func waitReady(t *testing.T, u string) {
	t.Helper()
	if !testkit.Within(30*time.Second, func() bool {
		resp, err := http.Get(u)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}) {
		t.Fatalf("%s never became ready", u)
	}
}

func (rs *replicaSet) funnelToken(t *testing.T) string {
	t.Helper()
	return clientTokenAt(t, rs.proxyURL, "funnel", "replica-funnel-secret-0123456789", "")
}

// Three replicas, one Redis, a round-robin proxy: the invite flow works in a
// real browser while consecutive requests land on different replicas; a
// replica killed in the middle of a login does not stop it; 50 concurrent
// redemptions of one link through all replicas give exactly one grant.
func TestReplicasShareRedis(t *testing.T) {
	t.Parallel()
	redisAddr := testkit.StartRedis(t)
	rs := startReplicas(t, "redis://"+redisAddr+"/0")
	api := rs.funnelToken(t)
	dev := rs.asDev()

	t.Run("browser invite flow, a replica killed mid-login", func(t *testing.T) {
		inv := invite(t, dev, api, map[string]any{"email": "replica@example.com", "roles": []string{"customer"}, "claims": map[string]any{"crm_id": "R-1"}})
		msg := rs.mailbox.waitFor(t, "replica@example.com", 30*time.Second)
		link := msg.inviteLink(t)
		if link != inv["url"] {
			t.Fatalf("mailed link differs from the API's")
		}
		ctx := newBrowser(t)
		rs.rr.mu.Lock()
		rs.rr.served = nil
		rs.rr.mu.Unlock()
		do(t, ctx, "following the invitation link", chromedp.Navigate(link))
		// No Management API here: usher cannot know whether the invitee has
		// an account, so the upstream shows its login page, which links to
		// sign-up (as Auth0's does).
		do(t, ctx, "choosing sign-up on the login page",
			chromedp.WaitVisible(chromedp.CSS(`a[href^="/u/signup"]`)),
			chromedp.Click(chromedp.CSS(`a[href^="/u/signup"]`)))
		pollJS(t, ctx, "waiting for the devidp sign-up form", 20*time.Second,
			`!!document.querySelector('form[action="/u/signup"] input[name=email]')`)
		// The login's state lives in Redis: kill one replica now.
		if err := rs.procs[1].Process.Kill(); err != nil {
			t.Fatal(err)
		}
		signUpAtDevIDP(t, ctx, "replica@example.com", "replica-password-1", "Rep Lica")
		acceptInBrowser(t, ctx, "usher", "replica@example.com") // the replicas' client has no name: invitations.app_name
		st := waitSignedIn(t, ctx)
		if !slices.Equal(rolesOf(st.IDClaims), []string{"customer"}) || st.IDClaims["crm_id"] != "R-1" {
			t.Fatalf("ID token through the replicas: %v", st.IDClaims)
		}
		rs.rr.mu.Lock()
		served := slices.Clone(rs.rr.served)
		rs.rr.mu.Unlock()
		distinct := map[int]bool{}
		for _, s := range served {
			distinct[s] = true
		}
		if len(distinct) < 2 {
			t.Fatalf("the flow was served by replicas %v only", served)
		}
	})

	t.Run("50 concurrent redemptions", func(t *testing.T) {
		inv := invite(t, dev, api, map[string]any{"email": "race@example.com", "roles": []string{"winner"}, "send_email": false})
		tok := tokenOf(inv["url"].(string))
		const n = 50
		type pending struct {
			a              *agent
			resp           *http.Response
			body, verifier string
		}
		ready := make([]pending, n)
		for i := range n {
			a := newAgent(t, rs.spaURL)
			u, verifier, _ := authorizeURL(dev, url.Values{"invitation": {tok}, "screen_hint": {"signup"}})
			resp, body := a.get(u)
			resp, body = a.devidpForm(resp, body, "signup", url.Values{"email": {fmt.Sprintf("r%d@example.com", i)}, "password": {"password-123456"}, "name": {"R"}})
			ready[i] = pending{a, resp, body, verifier}
		}
		// Everyone is on the accept page; all press Accept at once, on
		// whichever replica the balancer picks.
		var wins atomic.Int64
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				p := ready[i]
				resp, _ := p.a.answerAccept(p.resp, p.body, "accept")
				if resp.StatusCode == http.StatusFound {
					wins.Add(1)
				}
			}(i)
		}
		wg.Wait()
		if wins.Load() != 1 {
			t.Fatalf("%d redemptions won, want exactly 1", wins.Load())
		}
		got := apiCall(t, dev, http.MethodGet, "/api/invitations/"+inv["id"].(string), api, nil)
		if got.body["status"] != "redeemed" {
			t.Fatalf("invitation: %s", got.raw)
		}
	})
}

func jsonDecode(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }

// asDev lets the shared helpers (invite, apiCall, authorizeURL) address the
// replica set through its proxy.
func (rs *replicaSet) asDev() *app.Dev {
	return &app.Dev{IssuerURL: rs.proxyURL, SPAURL: rs.spaURL}
}
