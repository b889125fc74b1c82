package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
	"github.com/usher-oidc/usher/internal/testkit"
)

// redisProc is a private redis-server the test can stop and restart on the
// same port and directory.
type redisProc struct {
	t    *testing.T
	port int
	dir  string
	args []string
	cmd  *exec.Cmd
}

func newRedisProc(t *testing.T, extra ...string) *redisProc {
	rp := &redisProc{t: t, port: freePort(t), dir: t.TempDir(), args: extra}
	rp.start()
	t.Cleanup(rp.stop)
	return rp
}

func (rp *redisProc) addr() string { return "127.0.0.1:" + strconv.Itoa(rp.port) }

func (rp *redisProc) start() {
	args := append([]string{"--port", strconv.Itoa(rp.port), "--bind", "127.0.0.1", "--save", "", "--dir", rp.dir}, rp.args...)
	rp.cmd = exec.Command("redis-server", args...)
	if err := rp.cmd.Start(); err != nil {
		rp.t.Fatalf("redis-server: %v (make test installs it)", err)
	}
	waitTCP(rp.t, rp.addr())
}

func (rp *redisProc) stop() {
	if rp.cmd != nil && rp.cmd.Process != nil {
		rp.cmd.Process.Kill()
		rp.cmd.Wait()
		rp.cmd = nil
	}
}

// usher on Redis: with Redis stopped it answers 503 (OIDC error or problem
// JSON), never 500, and /readyz fails; with Redis back it recovers without
// a restart, and what was stored (AOF) is still there.
func TestRedisOutage(t *testing.T) {
	t.Parallel()
	rp := newRedisProc(t, "--appendonly", "yes", "--appendfsync", "always")
	d := startDev(t, app.DevOptions{Configure: func(c *config.Config) {
		c.Store.Driver = "redis"
		c.Store.Redis.URL = "redis://" + rp.addr() + "/0"
	}})
	api := funnelToken(t, d, "invitations:write invitations:read")
	inv := invite(t, d, api, map[string]any{"email": "outage@example.com", "send_email": false})
	a := newAgent(t, d.SPAURL)
	code, v := a.signIn(d, app.DevUserEmail, app.DevUserPassword, false)
	tr := exchangeCode(t, d, code, v)

	rp.stop()
	base := strings.TrimSuffix(d.IssuerURL, "/")
	if resp, err := http.Get(base + "/readyz"); err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz with Redis down: %v %v", resp, err)
	}
	r := refresh(t, d, tr.RefreshToken)
	if r.status != http.StatusServiceUnavailable || r.Error != "server_error" {
		t.Errorf("refresh with Redis down: %d %+v, want 503 server_error", r.status, r)
	}
	for _, call := range []struct{ method, path string }{
		{http.MethodGet, "/api/invitations"},
		{http.MethodPost, "/api/invitations"},
	} {
		res := apiCall(t, d, call.method, call.path, api, map[string]any{"email": "x@example.com"})
		if res.status != http.StatusServiceUnavailable || res.header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s %s with Redis down: %d %s, want a 503 problem", call.method, call.path, res.status, res.raw)
		}
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	u, _, _ := authorizeURL(d, nil)
	if resp, err := client.Get(u); err != nil || resp.StatusCode >= 500 && resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/authorize with Redis down: %v %v", resp, err)
	}

	rp.start()
	if !testkit.Within(15*time.Second, func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}) {
		t.Fatalf("usher did not recover after Redis came back")
	}
	if r := refresh(t, d, tr.RefreshToken); r.RefreshToken == "" {
		t.Fatalf("refresh after recovery (token kept by the AOF): %+v", r)
	}
	if g := apiCall(t, d, http.MethodGet, "/api/invitations/"+inv["id"].(string), api, nil); g.status != http.StatusOK || g.body["status"] != "pending" {
		t.Fatalf("invitation after recovery: %d %s", g.status, g.raw)
	}
}

// startRedisCluster starts three masters and joins them.
// freeClusterPort is a free port whose cluster bus port (port+10000, which a
// cluster node listens on too) is free as well: a node whose bus port is
// taken aborts.
func freeClusterPort(t *testing.T) int {
	t.Helper()
	for range 50 {
		port := freePort(t)
		if port+10000 > 65535 {
			continue
		}
		if bus, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+10000)); err == nil {
			bus.Close()
			return port
		}
	}
	t.Fatal("no free port with a free cluster bus port")
	return 0
}

func startRedisCluster(t *testing.T) []string {
	t.Helper()
	var addrs []string
	for range 3 {
		rp := &redisProc{t: t, port: freeClusterPort(t), dir: t.TempDir()}
		rp.args = []string{"--appendonly", "no", "--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(rp.dir, "nodes.conf"), "--cluster-node-timeout", "5000"}
		rp.start()
		t.Cleanup(rp.stop)
		addrs = append(addrs, rp.addr())
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	if out, err := exec.Command("redis-cli", append(args, "--cluster-replicas", "0", "--cluster-yes")...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, a := range addrs {
		c := redis.NewClient(&redis.Options{Addr: a})
		var err error
		ok := testkit.Within(time.Until(deadline), func() bool {
			var info string
			info, err = c.ClusterInfo(context.Background()).Result()
			return err == nil && strings.Contains(info, "cluster_state:ok")
		})
		c.Close()
		if !ok {
			t.Fatalf("cluster node %s not ok: %v", a, err)
		}
	}
	return addrs
}

// The invite flow on a Redis Cluster of three masters: every multi-key step
// of sign-in, redemption and refresh is slot-safe, at record format v1 and
// at v5 (token lookups in the shared ih: hashes), one after the other on
// the same keys.
func TestInviteFlowOnRedisCluster(t *testing.T) {
	t.Parallel()
	addrs := startRedisCluster(t)
	for _, format := range []string{"", "v5"} {
		d := startDev(t, app.DevOptions{Configure: func(c *config.Config) {
			c.Store.Driver = "redis"
			c.Store.Redis.Addrs = addrs
			c.Store.RecordFormat = format
		}})
		api := funnelToken(t, d, "invitations:write invitations:read")
		for i := range 3 {
			email := fmt.Sprintf("cluster%s-%d@example.com", format, i)
			inv := invite(t, d, api, map[string]any{"email": email, "roles": []string{"customer"}, "claims": map[string]any{"n": i}, "send_email": false})
			a := newAgent(t, d.SPAURL)
			q := a.followInvite(inv["url"].(string))
			resp, body, v := a.signInWithInvitation(d, q.Get("invitation"), "signup", urlValues("email", email, "password", "password-123456", "name", "C"))
			cb := a.callbackOf(resp, body)
			tr := exchangeCode(t, d, cb.Get("code"), v)
			if c := jwtClaims(t, tr.IDToken); !slices.Equal(rolesOf(c), []string{"customer"}) {
				t.Fatalf("cluster redemption %d at %q: %v", i, format, c)
			}
			if r := refresh(t, d, tr.RefreshToken); r.RefreshToken == "" {
				t.Fatalf("cluster refresh %d at %q: %+v", i, format, r)
			}
			if r := refresh(t, d, tr.RefreshToken); r.Error != "invalid_grant" {
				t.Fatalf("cluster reuse detection %d at %q: %+v", i, format, r)
			}
		}
	}
}

// startSentinel runs a Redis master and one Sentinel watching it as
// "usher-master"; it returns the Sentinel's address.
func startSentinel(t *testing.T) string {
	t.Helper()
	master := newRedisProc(t, "--appendonly", "no")
	port := freePort(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	content := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor usher-master 127.0.0.1 %d 1\nsentinel down-after-milliseconds usher-master 5000\n",
		port, dir, master.port)
	if err := writeFile(conf, content); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("redis-server", conf, "--sentinel")
	if err := cmd.Start(); err != nil {
		t.Fatalf("redis sentinel: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := "127.0.0.1:" + strconv.Itoa(port)
	waitTCP(t, addr)
	// Wait until the Sentinel names the master.
	c := redis.NewSentinelClient(&redis.Options{Addr: addr})
	defer c.Close()
	if !testkit.Within(20*time.Second, func() bool {
		a, err := c.GetMasterAddrByName(context.Background(), "usher-master").Result()
		return err == nil && len(a) == 2
	}) {
		t.Fatal("sentinel never reported the master")
	}
	return addr
}

// usher configured with Sentinel addresses (store.redis.addrs + master_name)
// finds the master through the Sentinel and runs the invite flow on it.
func TestInviteFlowThroughRedisSentinel(t *testing.T) {
	t.Parallel()
	sentinel := startSentinel(t)
	d := startDev(t, app.DevOptions{Configure: func(c *config.Config) {
		c.Store.Driver = "redis"
		c.Store.Redis.Addrs = []string{sentinel}
		c.Store.Redis.MasterName = "usher-master"
	}})
	api := funnelToken(t, d, "invitations:write invitations:read")
	inv := invite(t, d, api, map[string]any{"email": "sentinel@example.com", "roles": []string{"customer"}, "send_email": false})
	a := newAgent(t, d.SPAURL)
	resp, body, v := a.signInWithInvitation(d, tokenOf(inv["url"].(string)), "signup",
		urlValues("email", "sentinel@example.com", "password", "password-123456", "name", "S"))
	tr := exchangeCode(t, d, a.callbackOf(resp, body).Get("code"), v)
	if c := jwtClaims(t, tr.IDToken); !slices.Equal(rolesOf(c), []string{"customer"}) {
		t.Fatalf("redemption through Sentinel: %v", c)
	}
}

func writeFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o600) }
