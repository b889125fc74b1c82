package redis_test

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/sessions"
	"github.com/usher-oidc/usher/store/conformance"
	redisstore "github.com/usher-oidc/usher/store/redis"
)

// standalone is the one redis-server the package's tests share; each store
// gets its own key prefix, so parallel tests never see each other's keys.
var standalone *server

// quietLogger drops go-redis's own log lines (dial failures the outage
// test provokes on purpose).
type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

func TestMain(m *testing.M) {
	redis.SetLogger(quietLogger{})
	dir, err := os.MkdirTemp("", "redisstore-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	standalone, err = startServer(dir, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "redisstore tests need redis-server on PATH:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	standalone.kill()
	os.RemoveAll(dir)
	os.Exit(code)
}

var prefixes atomic.Int64

// uniquePrefix returns a key prefix no other store in this process uses.
func uniquePrefix() string { return fmt.Sprintf("t%d:", prefixes.Add(1)) }

// newStandalone returns a fresh store on the shared server.
func newStandalone(t testing.TB, now func() time.Time) *redisstore.Store {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: standalone.addr()})
	s := redisstore.New(c, redisstore.Options{Now: now, Prefix: uniquePrefix()})
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestSessionsConformance(t *testing.T) {
	t.Parallel()
	conformance.RunSessions(t, func(t *testing.T, clock *conformance.Clock) sessions.Store { return newStandalone(t, clock.Now) })
}

func TestGrantsConformance(t *testing.T) {
	t.Parallel()
	conformance.RunGrants(t, func(t *testing.T, clock *conformance.Clock) grants.Store { return newStandalone(t, clock.Now) })
}

// TestClusterConformance runs both suites against a three-master Redis
// Cluster: any script touching keys of two slots fails there with CROSSSLOT.
// Grants run in v1 and v3, whose invitation indexes differ (v3: no ie:, the
// token lookup in shared buckets).
func TestClusterConformance(t *testing.T) {
	t.Parallel()
	addrs := startCluster(t)
	newStore := func(t *testing.T, clock *conformance.Clock, format string) *redisstore.Store {
		c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
		s := redisstore.New(c, redisstore.Options{Now: clock.Now, Prefix: uniquePrefix(), RecordFormat: format})
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	// Sessions at v1 and v4, which keeps login states (in the auth
	// request's hash: one key, one slot).
	for _, format := range []string{redisstore.RecordFormatV1, redisstore.RecordFormatV4} {
		t.Run("Sessions/"+format, func(t *testing.T) {
			t.Parallel()
			conformance.RunSessions(t, func(t *testing.T, clock *conformance.Clock) sessions.Store { return newStore(t, clock, format) })
		})
	}
	for _, format := range []string{redisstore.RecordFormatV1, redisstore.RecordFormatV3, redisstore.RecordFormatV5} {
		t.Run("Grants/"+format, func(t *testing.T) {
			t.Parallel()
			conformance.RunGrants(t, func(t *testing.T, clock *conformance.Clock) grants.Store { return newStore(t, clock, format) })
		})
	}
}

func TestOpen(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	for _, cfg := range []redisstore.Config{
		{URL: "redis://" + standalone.addr() + "/0"},
		{Addrs: []string{standalone.addr()}},
	} {
		s, err := redisstore.Open(cfg, redisstore.Options{Prefix: uniquePrefix()})
		if err != nil {
			t.Fatalf("Open(%+v): %v", cfg, err)
		}
		if err := s.Ping(ctx); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if err := s.Ping(ctx); err == nil {
			t.Fatal("Ping succeeded on a closed store")
		}
	}
	for _, cfg := range []redisstore.Config{
		{},
		{URL: "redis://" + standalone.addr(), Addrs: []string{standalone.addr()}},
		{URL: "http://nope"},
	} {
		if _, err := redisstore.Open(cfg, redisstore.Options{}); err == nil {
			t.Errorf("Open(%+v) succeeded", cfg)
		}
	}
	if _, err := redisstore.Open(redisstore.Config{URL: "redis://" + standalone.addr()}, redisstore.Options{Prefix: "a{b}:"}); err == nil {
		t.Error("Open accepted a prefix with braces")
	}
	// Nothing listens there: Open reports it instead of returning a dead store.
	port, _ := freePort()
	if _, err := redisstore.Open(redisstore.Config{URL: fmt.Sprintf("redis://127.0.0.1:%d", port)}, redisstore.Options{}); err == nil {
		t.Error("Open succeeded with no server")
	}
}

// ctxT is a context for one step of a test: a bound on a hang, generous
// because CI runs every package at once under -race.
func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}
