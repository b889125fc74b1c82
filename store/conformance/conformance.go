// Package conformance is the one test suite every store backend runs, so the
// bbolt and Redis backends behave the same to the broker. A backend's test
// calls RunSessions and RunGrants with a constructor that returns a fresh,
// empty store reading time from the given Clock; each subtest gets its own
// store and many run in parallel.
package conformance

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"
)

// Clock is a controllable clock, safe for concurrent use. Backends must read
// "now" from it (for expiry) wherever the interface does not pass a time.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock stopped at t.
func NewClock(t time.Time) *Clock { return &Clock{now: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// start is the clock's initial time: close to real time (so a backend that
// also sets server-side TTLs keeps the records alive), whole milliseconds (so
// backends that store milliseconds round-trip exactly).
func start() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }

// concurrently runs fn(0..n-1) in n goroutines released together and returns
// their errors by index.
func concurrently(n int, fn func(i int) error) []error {
	errs := make([]error, n)
	var ready, done sync.WaitGroup
	gate := make(chan struct{})
	ready.Add(n)
	done.Add(n)
	for i := range n {
		go func() {
			defer done.Done()
			defer func() {
				if p := recover(); p != nil {
					errs[i] = fmt.Errorf("panic: %v", p)
				}
			}()
			ready.Done()
			<-gate
			errs[i] = fn(i)
		}()
	}
	ready.Wait()
	close(gate)
	done.Wait()
	return errs
}

// countNil counts nil errors and fails on any error not in allowed.
func countNil(t *testing.T, what string, errs []error, allowed ...error) int {
	t.Helper()
	n := 0
	for i, err := range errs {
		if err == nil {
			n++
			continue
		}
		ok := false
		for _, a := range allowed {
			if errors.Is(err, a) {
				ok = true
			}
		}
		if !ok {
			t.Errorf("%s: call %d: unexpected error %v", what, i, err)
		}
	}
	return n
}

// wantErr fails unless errors.Is(err, target).
func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want %v", what, err, target)
	}
}

// must fails on err.
func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// same compares two records by their JSON form, with times compared as
// instants and empty values treated as absent: backends may return another
// time zone or nil for an empty slice and still be right.
func same(t *testing.T, what string, want, got any) {
	t.Helper()
	w, g := normalize(want), normalize(got)
	if !reflect.DeepEqual(w, g) {
		wj, _ := json.Marshal(w)
		gj, _ := json.Marshal(g)
		t.Fatalf("%s:\n got %s\nwant %s", what, gj, wj)
	}
}

func normalize(v any) any {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("unmarshalable: %v", err)
	}
	var x any
	if err := json.Unmarshal(raw, &x); err != nil {
		return fmt.Sprintf("undecodable: %v", err)
	}
	return walk(x)
}

func walk(x any) any {
	switch v := x.(type) {
	case map[string]any:
		for k, e := range v {
			e = walk(e)
			if empty(e) {
				delete(v, k)
			} else {
				v[k] = e
			}
		}
		return v
	case []any:
		for i, e := range v {
			v[i] = walk(e)
		}
		return v
	case string:
		if ts, err := time.Parse(time.RFC3339Nano, v); err == nil {
			return ts.UTC().Format(time.RFC3339Nano)
		}
	}
	return x
}

func empty(x any) bool {
	switch v := x.(type) {
	case nil:
		return true
	case []any:
		return len(v) == 0
	case map[string]any:
		return len(v) == 0
	}
	return false
}

// noPanic runs fn and turns a panic into a test failure.
func noPanic(t *testing.T, name string, fn func() error) (err error) {
	t.Helper()
	defer func() {
		if p := recover(); p != nil {
			t.Errorf("%s panicked: %v", name, p)
			err = errors.New("panicked")
		}
	}()
	return fn()
}

// badInput runs each call and requires an error (and no panic) from all.
func badInput(t *testing.T, calls map[string]func() error) {
	t.Helper()
	for name, call := range calls {
		if err := noPanic(t, name, call); err == nil {
			t.Errorf("%s: no error for bad input", name)
		}
	}
}
