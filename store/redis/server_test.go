package redis_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/internal/testkit"
)

// server is a redis-server process the tests started themselves.
type server struct {
	port int
	dir  string
	args []string
	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File
}

func (s *server) addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// freePort asks the kernel for a port that is free right now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// freeClusterPort is a free port whose cluster bus port (port+10000, which
// a cluster node listens on too) is free as well: a node whose bus port is
// taken aborts.
func freeClusterPort() (int, error) {
	for range 50 {
		port, err := freePort()
		if err != nil {
			return 0, err
		}
		if port+10000 > 65535 {
			continue
		}
		if bus, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port+10000)); err == nil {
			bus.Close()
			return port, nil
		}
	}
	return 0, fmt.Errorf("no free port with a free cluster bus port")
}

// startServer runs redis-server on a free port (or port, if non-zero) with
// its files in dir and extra arguments, and waits until it answers PING.
func startServer(dir string, port int, extra ...string) (*server, error) {
	if port == 0 {
		var err error
		if port, err = freePort(); err != nil {
			return nil, err
		}
	}
	s := &server{port: port, dir: dir, args: extra}
	return s, s.start()
}

func (s *server) start() error {
	args := append([]string{"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--dir", s.dir,
		"--save", "", "--protected-mode", "no"}, s.args...)
	// Later options win, so callers may override --appendonly/--save.
	if !hasFlag(args, "--appendonly") {
		args = append(args, "--appendonly", "no")
	}
	log, err := os.OpenFile(filepath.Join(s.dir, fmt.Sprintf("redis-%d.log", s.port)), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	s.log = log
	s.cmd = exec.Command("redis-server", args...)
	s.cmd.Stdout, s.cmd.Stderr = log, log
	// No Pdeathsig: it fires when the OS thread that started the child
	// exits, which the Go runtime may do at any time.
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	s.done = make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	c := redis.NewClient(&redis.Options{Addr: s.addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	var pingErr error
	exited := false
	// Within, not Eventually: TestMain starts the shared server, with no test to fail.
	testkit.Within(10*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		pingErr = c.Ping(ctx).Err()
		cancel()
		select {
		case <-s.done:
			exited = true
		default:
		}
		return pingErr == nil || exited
	})
	switch {
	case pingErr == nil:
		return nil
	case exited:
		raw, _ := os.ReadFile(log.Name())
		return fmt.Errorf("redis-server on %d exited: %s", s.port, lastLines(string(raw), 5))
	default:
		s.kill()
		return fmt.Errorf("redis-server on %d: no PONG: %w", s.port, pingErr)
	}
}

func hasFlag(args []string, flag string) bool {
	for _, a := range args {
		if a == flag {
			return true
		}
	}
	return false
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// stop sends SIGTERM (Redis saves/fsyncs and exits) and waits for the exit.
func (s *server) stop() error {
	if s.cmd == nil || s.cmd.Process == nil {
		return nil
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		s.kill()
		return errors.New("redis-server did not stop on SIGTERM")
	}
	if s.log != nil {
		_ = s.log.Close()
	}
	return nil
}

func (s *server) kill() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	if s.log != nil {
		_ = s.log.Close()
	}
}

// startServerT is startServer for one test, stopped in t.Cleanup.
func startServerT(t testing.TB, port int, extra ...string) *server {
	t.Helper()
	s, err := startServer(t.TempDir(), port, extra...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.kill)
	return s
}

// startCluster starts three cluster-enabled masters, joins them with
// redis-cli --cluster create, and waits for cluster_state:ok everywhere.
func startCluster(t testing.TB) []string {
	t.Helper()
	dir := t.TempDir()
	var addrs []string
	for range 3 {
		port, err := freeClusterPort()
		if err != nil {
			t.Fatal(err)
		}
		s, err := startServer(dir, port, "--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(dir, fmt.Sprintf("nodes-%d.conf", port)),
			"--cluster-node-timeout", "5000")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.kill)
		addrs = append(addrs, s.addr())
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, a := range addrs {
		c := redis.NewClient(&redis.Options{Addr: a})
		var info string
		var err error
		ok := testkit.Within(time.Until(deadline), func() bool {
			info, err = c.ClusterInfo(context.Background()).Result()
			return err == nil && strings.Contains(info, "cluster_state:ok")
		})
		c.Close()
		if !ok {
			t.Fatalf("cluster node %s not ok: %v %s", a, err, info)
		}
	}
	return addrs
}
