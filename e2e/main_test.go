package e2e

import (
	"log/slog"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	// The OIDC library logs through slog's default logger (route registration
	// at info); tests keep warnings and errors only.
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	os.Exit(m.Run())
}
