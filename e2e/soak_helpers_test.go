package e2e

// Helpers of the soak test (soak_test.go): the rig (three `usher serve`
// replicas on one Redis, reached through a TCP proxy that can add latency,
// behind the round-robin proxy, with devidp upstream and a TLS webhook
// receiver), replica restarts, /metrics sampling, and the per-path request
// recorder the summary is built from.

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/demo"
	"github.com/usher-oidc/usher/devidp"
	"github.com/usher-oidc/usher/internal/testkit"
)

const (
	soakClientID     = "funnel"
	soakClientSecret = "soak-funnel-secret-0123456789abc"
)

// ---- the latency proxy between usher and Redis ------------------------------

// latencyProxy forwards TCP connections to Redis; while delay is set, every
// chunk read in either direction waits that long before it is written on.
type latencyProxy struct {
	addr   string
	target string
	delay  *atomic.Int64 // nanoseconds, shared by the rig's proxies
	ln     net.Listener
	conns  atomic.Int64 // connections accepted
}

func startLatencyProxy(t testing.TB, target string, delay *atomic.Int64) *latencyProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &latencyProxy{addr: ln.Addr().String(), target: target, ln: ln, delay: delay}
	var mu sync.Mutex
	var open []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.conns.Add(1)
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			open = append(open, c, up)
			mu.Unlock()
			go p.pipe(c, up)
			go p.pipe(up, c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
	})
	return p
}

func (p *latencyProxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if d := time.Duration(p.delay.Load()); d > 0 {
				time.Sleep(d)
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// ---- Redis: master, replica, three Sentinels, all behind latency proxies ----

// soakRedis is a Redis master and replica, each reached only through its
// latency proxy (they announce the proxy's port, so the Sentinels, the
// replication link and usher all go through the proxies), and three
// Sentinels (quorum 2) watching them as usher-master.
type soakRedis struct {
	t         *testing.T
	delay     atomic.Int64
	nodes     [2]*redisProc
	proxies   [2]*latencyProxy
	master    int // index of the current master in nodes
	sentinels []string
}

func startSoakRedis(t *testing.T) *soakRedis {
	t.Helper()
	if _, ok := sentinelCommand(""); !ok {
		t.Skip("neither redis-sentinel nor redis-server is installed")
	}
	sr := &soakRedis{t: t}
	for i := range 2 {
		rp := &redisProc{t: t, port: freePort(t), dir: t.TempDir()}
		sr.proxies[i] = startLatencyProxy(t, rp.addr(), &sr.delay)
		_, pport, _ := net.SplitHostPort(sr.proxies[i].addr)
		rp.args = []string{"--appendonly", "no", "--replica-announce-ip", "127.0.0.1", "--replica-announce-port", pport}
		if i == 1 {
			_, mport, _ := net.SplitHostPort(sr.proxies[0].addr)
			rp.args = append(rp.args, "--replicaof", "127.0.0.1", mport)
		}
		rp.start()
		t.Cleanup(rp.stop)
		sr.nodes[i] = rp
	}
	waitReplicaSynced(t, sr.nodes[1].addr())
	_, mport, _ := net.SplitHostPort(sr.proxies[0].addr)
	masterPort, _ := strconv.Atoi(mport)
	sr.sentinels = startSentinels(t, masterPort, 5*time.Second, 10*time.Second, false)
	return sr
}

// failover moves the master to the replica as an operator would, without
// losing an acknowledged write: writes paused on the master (CLIENT PAUSE
// WRITE), the replica caught up, SENTINEL FAILOVER, the Sentinels agreeing
// on the new master, writes resumed (the old master, now a replica, answers
// them READONLY: usher's 503).
func (sr *soakRedis) failover() error {
	ctx := context.Background()
	old, next := sr.master, 1-sr.master
	mc := redis.NewClient(&redis.Options{Addr: sr.nodes[old].addr()})
	defer mc.Close()
	rc := redis.NewClient(&redis.Options{Addr: sr.nodes[next].addr()})
	defer rc.Close()
	if err := mc.Do(ctx, "CLIENT", "PAUSE", "15000", "WRITE").Err(); err != nil {
		return fmt.Errorf("CLIENT PAUSE: %w", err)
	}
	defer mc.Do(ctx, "CLIENT", "UNPAUSE")
	offset := func(c *redis.Client, field string) string {
		info, _ := c.Info(ctx, "replication").Result()
		for _, line := range strings.Split(info, "\r\n") {
			if v, ok := strings.CutPrefix(line, field+":"); ok {
				return v
			}
		}
		return "?"
	}
	if !testkit.Within(10*time.Second, func() bool {
		return offset(mc, "master_repl_offset") == offset(rc, "slave_repl_offset")
	}) {
		return fmt.Errorf("the replica never caught up")
	}
	sc := redis.NewSentinelClient(&redis.Options{Addr: sr.sentinels[0]})
	defer sc.Close()
	if err := sc.Failover(ctx, "usher-master").Err(); err != nil {
		return fmt.Errorf("SENTINEL FAILOVER: %w", err)
	}
	_, want, _ := net.SplitHostPort(sr.proxies[next].addr)
	for _, addr := range sr.sentinels {
		c := redis.NewSentinelClient(&redis.Options{Addr: addr})
		ok := testkit.Within(20*time.Second, func() bool {
			a, err := c.GetMasterAddrByName(ctx, "usher-master").Result()
			return err == nil && len(a) == 2 && a[1] == want
		})
		c.Close()
		if !ok {
			return fmt.Errorf("Sentinel %s never named the new master", addr)
		}
	}
	if !testkit.Within(10*time.Second, func() bool { return strings.Contains(offset(rc, "role"), "master") }) {
		return fmt.Errorf("the replica was never promoted")
	}
	sr.master = next
	return nil
}

// ---- the rig ----------------------------------------------------------------

// soakReplica is one `usher serve` process the chaos loop may restart.
type soakReplica struct {
	name    string
	cfgPath string
	base    string // http://127.0.0.1:port
	metrics string // http://127.0.0.1:port/metrics
	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	out     *procLog
	starts  int
}

type soakRig struct {
	t        *testing.T
	proxyURL string
	spaURL   string
	rr       *roundRobin
	replicas []*soakReplica
	hooks    *hookLog
	certFile string
	redis    *soakRedis
}

func newSoakRig(t *testing.T) *soakRig {
	t.Helper()
	bin := usherBinary(t)
	r := &soakRig{t: t, rr: &roundRobin{}, hooks: &hookLog{key: []byte("soak-tests-webhook-key-01234567!")}}
	r.redis = startSoakRedis(t)

	// `usher serve` posts webhooks over https only.
	hookSrv := httptest.NewTLSServer(r.hooks)
	t.Cleanup(hookSrv.Close)
	dir := t.TempDir()
	r.certFile = filepath.Join(dir, "receiver.pem")
	if err := os.WriteFile(r.certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: hookSrv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}

	proxyLn, _ := net.Listen("tcp", "127.0.0.1:0")
	r.proxyURL = "http://" + proxyLn.Addr().String()
	spa := httptest.NewServer(demo.Handler(demo.Config{Issuer: r.proxyURL, ClientID: "demo"}))
	t.Cleanup(spa.Close)
	r.spaURL = spa.URL
	idpLn, _ := net.Listen("tcp", "127.0.0.1:0")
	idpURL := "http://" + idpLn.Addr().String() + "/"
	idp, err := devidp.New(devidp.Config{Issuer: idpURL,
		Clients: []devidp.Client{{ID: "usher", Secret: "soak-upstream-secret", RedirectURIs: []string{r.proxyURL + "/callback"},
			PostLogoutRedirectURIs: []string{r.proxyURL + "/logout/done"}}}})
	if err != nil {
		t.Fatal(err)
	}
	idpSrv := &http.Server{Handler: idp}
	go idpSrv.Serve(idpLn)
	t.Cleanup(func() { idpSrv.Close() })

	secret := base64.StdEncoding.EncodeToString([]byte("soak-replicas-share-session-key!"))
	for i := range 3 {
		port, mport := freePort(t), freePort(t)
		rep := &soakReplica{name: fmt.Sprintf("replica%d", i), cfgPath: filepath.Join(dir, fmt.Sprintf("usher%d.yaml", i)),
			base: fmt.Sprintf("http://127.0.0.1:%d", port), metrics: fmt.Sprintf("http://127.0.0.1:%d/metrics", mport)}
		cfg := fmt.Sprintf(`issuer: %s
listen: 127.0.0.1:%d
metrics: {listen: "127.0.0.1:%d"}
rate_limits: {invite_per_minute: 1000000, api_per_minute: 1000000, authorize_per_minute: 1000000, failed_redemptions_per_hour: 1000000}
log: {level: warn, format: json}
store: {driver: redis, redis: {addrs: [%s], master_name: usher-master}}
sessions: {secret: "%s"}
upstream: {issuer: "%s", client_id: usher, client_secret: soak-upstream-secret}
clients:
  - {id: demo, type: public, redirect_uris: ["%s/callback"], post_logout_redirect_uris: ["%s/"], initiate_login_uri: "%s/login"}
  - {id: %s, type: confidential, secret: "%s", grant_types: [client_credentials], scopes: [invitations:write, invitations:read]}
webhooks:
  - {id: crm, url: "%s/hook", secrets: ["whsec_%s"]}
`, r.proxyURL, port, mport, `"`+strings.Join(r.redis.sentinels, `", "`)+`"`, secret, idpURL, spa.URL, spa.URL, spa.URL, soakClientID, soakClientSecret,
			hookSrv.URL, base64.StdEncoding.EncodeToString(r.hooks.key))
		if err := os.WriteFile(rep.cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		u, _ := url.Parse(rep.base)
		r.rr.backends = append(r.rr.backends, u)
		r.replicas = append(r.replicas, rep)
		r.start(rep, bin)
		t.Cleanup(func() { r.stop(rep) })
	}
	proxySrv := &http.Server{Handler: r.rr}
	go proxySrv.Serve(proxyLn)
	t.Cleanup(func() { proxySrv.Close() })
	return r
}

func (r *soakRig) start(rep *soakReplica, bin string) {
	r.t.Helper()
	rep.mu.Lock()
	defer rep.mu.Unlock()
	cmd := exec.Command(bin, "serve", "--config", rep.cfgPath)
	cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+r.certFile)
	if rep.out == nil {
		rep.out = &procLog{w: newTestWriter(r.t), name: rep.name}
	}
	cmd.Stdout, cmd.Stderr = rep.out, rep.out
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("starting %s: %v", rep.name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	rep.cmd, rep.done = cmd, done
	rep.starts++
	waitReady(r.t, rep.base+"/readyz")
}

// stop ends a replica as an orchestrator does: SIGTERM, then SIGKILL after 20 s.
func (r *soakRig) stop(rep *soakReplica) {
	rep.mu.Lock()
	cmd, done := rep.cmd, rep.done
	rep.cmd = nil
	rep.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

// kill ends a replica as a crash or the OOM killer does: SIGKILL.
func (r *soakRig) kill(rep *soakReplica) {
	rep.mu.Lock()
	cmd, done := rep.cmd, rep.done
	rep.cmd = nil
	rep.mu.Unlock()
	if cmd != nil {
		cmd.Process.Kill()
		<-done
	}
}

// restart stops a replica and starts it again on the same config. With
// crash, the replica is SIGKILLed instead: its requests in flight are cut,
// and the outbox records, webhook lanes and mail jobs it had leased stay
// its own until their leases lapse, then another replica takes them.
func (r *soakRig) restart(rep *soakReplica, crash bool) time.Duration {
	began := time.Now()
	if crash {
		r.kill(rep)
	} else {
		r.stop(rep)
	}
	r.start(rep, usherBinary(r.t))
	return time.Since(began)
}

func (r *soakRig) dev() *app.Dev { return &app.Dev{IssuerURL: r.proxyURL, SPAURL: r.spaURL} }

// ---- /metrics -----------------------------------------------------------------

type procSample struct {
	rss        float64 // bytes
	goroutines float64
}

var metricLineRE = regexp.MustCompile(`^(process_resident_memory_bytes|go_goroutines) ([0-9.eE+-]+)$`)

func scrapeProc(u string) (procSample, error) {
	var s procSample
	resp, err := http.Get(u)
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("%s: %d", u, resp.StatusCode)
	}
	found := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := metricLineRE.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		v, _ := strconv.ParseFloat(m[2], 64)
		found++
		if m[1] == "go_goroutines" {
			s.goroutines = v
		} else {
			s.rss = v
		}
	}
	if found < 2 {
		return s, fmt.Errorf("%s: process_resident_memory_bytes or go_goroutines missing", u)
	}
	return s, nil
}

// ---- the request recorder -------------------------------------------------------

// soakStats keeps every exchange with usher (through the proxy) by path
// pattern: outcomes and latencies.
type soakStats struct {
	host string
	next http.RoundTripper
	off  atomic.Bool // set: record nothing more
	mu   sync.Mutex
	lat  map[string][]time.Duration
	outc map[string]map[string]int // path → outcome → count
	errs map[string]int            // cause → count
}

var soakIDRE = regexp.MustCompile(`/(inv_[A-Za-z0-9_-]+|[A-Za-z0-9_-]{20,})`)

func soakPath(p string) string { return soakIDRE.ReplaceAllString(p, "/{id}") }

func newSoakStats(host string) *soakStats {
	return &soakStats{host: host, next: &http.Transport{MaxIdleConnsPerHost: 64}, lat: map[string][]time.Duration{},
		outc: map[string]map[string]int{}, errs: map[string]int{}}
}

func (s *soakStats) RoundTrip(req *http.Request) (*http.Response, error) {
	began := time.Now()
	resp, err := s.next.RoundTrip(req)
	if req.URL.Host != s.host || s.off.Load() {
		return resp, err
	}
	key := req.Method + " " + soakPath(req.URL.Path)
	outcome := ""
	if err != nil {
		outcome = "no answer"
	} else {
		outcome = strconv.Itoa(resp.StatusCode)
	}
	s.mu.Lock()
	s.lat[key] = append(s.lat[key], time.Since(began))
	if s.outc[key] == nil {
		s.outc[key] = map[string]int{}
	}
	s.outc[key][outcome]++
	s.mu.Unlock()
	return resp, err
}

// cause counts one failure by cause.
func (s *soakStats) cause(c string) {
	s.mu.Lock()
	s.errs[c]++
	s.mu.Unlock()
}

func (s *soakStats) summary() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	keys := make([]string, 0, len(s.lat))
	for k := range s.lat {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Fprintf(&b, "%-40s %7s %9s %9s  %s\n", "path", "count", "p50", "p99", "outcomes")
	for _, k := range keys {
		l := slices.Clone(s.lat[k])
		slices.Sort(l)
		q := func(p float64) time.Duration { return l[min(len(l)-1, int(p*float64(len(l))))] }
		var oc []string
		for o, n := range s.outc[k] {
			oc = append(oc, fmt.Sprintf("%s:%d", o, n))
		}
		sort.Strings(oc)
		fmt.Fprintf(&b, "%-40s %7d %9s %9s  %s\n", k, len(l), q(0.5).Round(100*time.Microsecond), q(0.99).Round(100*time.Microsecond), strings.Join(oc, " "))
	}
	var causes []string
	for c, n := range s.errs {
		causes = append(causes, fmt.Sprintf("  %6d  %s", n, c))
	}
	sort.Strings(causes)
	if len(causes) == 0 {
		causes = []string{"  none"}
	}
	fmt.Fprintf(&b, "errors by cause:\n%s\n", strings.Join(causes, "\n"))
	return b.String()
}

// status500s counts answers 500 (usher must answer a store outage 503).
func (s *soakStats) status500s() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, o := range s.outc {
		n += o["500"]
	}
	return n
}

func drain(r io.ReadCloser) { io.Copy(io.Discard, r); r.Close() }
