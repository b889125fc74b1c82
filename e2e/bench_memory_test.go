package e2e

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/usher-oidc/usher/client"
	"github.com/usher-oidc/usher/devidp"
	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/internal/testkit"
	"github.com/usher-oidc/usher/sessions"
	redisstore "github.com/usher-oidc/usher/store/redis"
)

// BenchmarkProcessMemory (issue 14): the memory an `usher serve` process
// holds while serving 100,000 pending invitations and 10,000 browser
// sessions on Redis. The records are written straight to the store the
// process uses (grants.Service.Create, SaveBrowserSession: the same writes
// the API makes, without the HTTP cost), then the process is exercised (a
// few pages of the invitation list, a few sign-in starts) and its VmRSS,
// VmHWM and Go heap in use read. The body runs once whatever b.N is.
func BenchmarkProcessMemory(b *testing.B) {
	const invitations, browserSessions = 100_000, 10_000
	redisAddr := testkit.StartRedis(b)
	st, err := redisstore.Open(redisstore.Config{URL: "redis://" + redisAddr + "/0"}, redisstore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	fillStore(b, st, invitations, browserSessions)
	p := startServe(b, redisAddr)
	p.exercise(b)
	status := procStatus(b, p.cmd.Process.Pid)
	heap := p.metric(b, "go_memstats_heap_inuse_bytes")
	info, err := st.Client().Info(context.Background(), "memory").Result()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(status["VmRSS"])/1024, "rss_MiB")
	b.ReportMetric(float64(status["VmHWM"])/1024, "rss_peak_MiB")
	b.ReportMetric(heap/(1<<20), "heap_inuse_MiB")
	b.ReportMetric(float64(infoField(info, "used_memory"))/(1<<20), "redis_used_MiB")
}

// fillStore writes the pending invitations and browser sessions, 16 writers
// at once.
func fillStore(b *testing.B, st *redisstore.Store, invitations, browserSessions int) {
	svc := grants.NewService(grants.ServiceOptions{Store: st})
	noMail := false
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			ctx := context.Background()
			for i := int(next.Add(1) - 1); i < invitations+browserSessions; i = int(next.Add(1) - 1) {
				var err error
				if i < invitations {
					_, _, _, err = svc.Create(ctx, grants.CreateRequest{Email: fmt.Sprintf("mem%d@example.com", i), Roles: []string{"customer"},
						Claims: map[string]any{"crm_id": fmt.Sprintf("C-%d", i)}, SendEmail: &noMail}, "client:funnel")
				} else {
					now := time.Now()
					err = st.SaveBrowserSession(ctx, &sessions.BrowserSession{ID: fmt.Sprintf("bench-session-%d", i),
						Values:    map[string]string{"user_id": fmt.Sprintf("usr_%d", i), "auth_time": strconv.FormatInt(now.Unix(), 10)},
						CreatedAt: now, ExpiresAt: now.Add(24 * time.Hour)})
				}
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
}

type servedProcess struct {
	cmd                *exec.Cmd
	base, metrics, idp string
}

// startServe runs `usher serve` on the Redis (default key prefix, as the
// store above) with devidp as its upstream and waits until it is ready.
func startServe(b *testing.B, redisAddr string) *servedProcess {
	idpLn, _ := net.Listen("tcp", "127.0.0.1:0")
	port, metricsPort := freePort(b), freePort(b)
	p := &servedProcess{base: fmt.Sprintf("http://127.0.0.1:%d", port), metrics: fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort),
		idp: "http://" + idpLn.Addr().String() + "/"}
	idp, err := devidp.New(devidp.Config{Issuer: p.idp,
		Clients: []devidp.Client{{ID: "usher", Secret: "memory-upstream-secret", RedirectURIs: []string{p.base + "/callback"}}}})
	if err != nil {
		b.Fatal(err)
	}
	idpSrv := &http.Server{Handler: idp}
	go idpSrv.Serve(idpLn)
	b.Cleanup(func() { idpSrv.Close() })
	cfgPath := filepath.Join(b.TempDir(), "usher.yaml")
	cfg := fmt.Sprintf(`issuer: %s
listen: 127.0.0.1:%d
metrics: {listen: "127.0.0.1:%d"}
log: {level: warn, format: json}
store: {driver: redis, redis: {url: "redis://%s/0"}}
sessions: {secret: "%s"}
upstream: {issuer: "%s", client_id: usher, client_secret: memory-upstream-secret}
clients:
  - {id: demo, type: public, redirect_uris: ["http://127.0.0.1:1/callback"]}
  - {id: funnel, type: confidential, secret: "memory-funnel-secret-0123456789ab", grant_types: [client_credentials], scopes: [invitations:write, invitations:read]}
`, p.base, port, metricsPort, redisAddr, base64.StdEncoding.EncodeToString([]byte("memory-bench-session-key-32bytes")), p.idp)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		b.Fatal(err)
	}
	p.cmd = exec.Command(usherBinary(b), "serve", "--config", cfgPath)
	w := newTestWriter(b)
	p.cmd.Stdout, p.cmd.Stderr = w, w
	if err := p.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.cmd.Process.Signal(syscall.SIGTERM); p.cmd.Wait() })
	if !testkit.Within(30*time.Second, func() bool { return get(p.base+"/readyz") == http.StatusOK }) {
		b.Fatal("usher serve never became ready")
	}
	return p
}

func get(u string) int {
	resp, err := http.Get(u)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// exercise lists five pages of invitations through the admin API and starts
// twenty sign-ins (authorize → redirect to the upstream).
func (p *servedProcess) exercise(b *testing.B) {
	token := p.funnelToken(b)
	cursor := ""
	for range 5 {
		req, _ := http.NewRequest(http.MethodGet, p.base+"/api/invitations?limit=100&status=pending&cursor="+url.QueryEscape(cursor), nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Fatalf("list invitations: %v %v", err, resp)
		}
		var page client.InvitationList
		jsonDecode(resp.Body, &page)
		resp.Body.Close()
		if len(page.Invitations) == 0 {
			b.Fatal("the invitation list is empty: usher does not see the store's invitations")
		}
		cursor = page.NextCursor
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for i := range 20 {
		q := url.Values{"client_id": {"demo"}, "response_type": {"code"}, "scope": {"openid"}, "redirect_uri": {"http://127.0.0.1:1/callback"},
			"state": {fmt.Sprint("s", i)}, "code_challenge": {"E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"}, "code_challenge_method": {"S256"}}
		resp, err := noRedirect.Get(p.base + "/authorize?" + q.Encode())
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode >= 400 {
			b.Fatalf("authorize: %d", resp.StatusCode)
		}
	}
}

func (p *servedProcess) funnelToken(b *testing.B) string {
	return clientTokenAt(b, p.base, "funnel", "memory-funnel-secret-0123456789ab", "")
}

// metric reads one unlabelled sample from the process's /metrics.
func (p *servedProcess) metric(b *testing.B, name string) float64 {
	resp, err := http.Get(p.metrics)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatal(err)
			}
			return f
		}
	}
	b.Fatalf("%s not in %s", name, p.metrics)
	return 0
}

// procStatus reads the kB fields of /proc/<pid>/status.
func procStatus(b *testing.B, pid int) map[string]int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	out := map[string]int64{}
	for line := range strings.Lines(string(raw)) {
		k, v, _ := strings.Cut(line, ":")
		if f := strings.Fields(v); len(f) == 2 && f[1] == "kB" {
			out[k], _ = strconv.ParseInt(f[0], 10, 64)
		}
	}
	return out
}

// infoField reads an integer field of a Redis INFO answer.
func infoField(info, field string) int64 {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}
