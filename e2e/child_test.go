package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
)

// The test binary doubles as an usher process for the multi-process tests:
// started with usherChildEnv naming a mode, it runs that mode (usher as
// `usher serve` runs it, with the options a test needs and `usher serve`
// has no setting for) instead of the tests.
const usherChildEnv = "USHER_E2E_CHILD"

var childModes = map[string]func(childEnv) error{
	"outbox": runOutboxChild, // outbox_crash_helpers_test.go
	"lease":  runLeaseChild,  // lease_replicas_test.go
}

func init() {
	mode := os.Getenv(usherChildEnv)
	if mode == "" {
		return
	}
	run, ok := childModes[mode]
	if !ok {
		fmt.Fprintf(os.Stderr, "unknown %s mode %q\n", usherChildEnv, mode)
		os.Exit(2)
	}
	env, stop, err := newChildEnv()
	if err == nil {
		err = run(env)
		stop()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s child: %v\n", mode, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// childEnv is what every child mode starts from: the config USHER_CONFIG
// names, a logger as `usher serve` makes it, and a context SIGTERM ends.
type childEnv struct {
	cfg *config.Config
	log *slog.Logger
	ctx context.Context
}

func newChildEnv() (childEnv, func(), error) {
	cfg, err := config.Load(os.Getenv("USHER_CONFIG"), os.LookupEnv)
	if err != nil {
		return childEnv{}, nil, err
	}
	log := app.NewLogger(os.Stderr, cfg.Log.Format, cfg.Log.Level)
	slog.SetDefault(log)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	return childEnv{cfg: cfg, log: log, ctx: ctx}, stop, nil
}
