package app

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
)

// A scrape reads the cached depth: it never queries the store itself.
func TestQueueDepthCached(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cases := []struct {
		name string
		n    int
		err  error
		want float64
	}{
		{"depth", 7, nil, 7},
		{"store error", 0, errors.New("down"), -1},
	}
	for _, tc := range cases {
		var calls atomic.Int64
		gauge := queueDepth(ctx, func(context.Context) (int, error) {
			calls.Add(1)
			return tc.n, tc.err
		})
		for range 100 {
			if got := gauge(); got != tc.want {
				t.Fatalf("%s: gauge = %v, want %v", tc.name, got, tc.want)
			}
		}
		if c := calls.Load(); c != 1 {
			t.Errorf("%s: 100 scrapes queried the store %d times, want 1 (then every %s)", tc.name, c, queueDepthEvery)
		}
	}
}
