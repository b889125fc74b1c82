package grants

import (
	"context"
	"sync"
)

// A ReadMemo keeps, for one use case, records a store read, so that the
// write the use case ends with can start from them instead of reading
// again: Service.Redeem checks the invitation, then redeems it. A store
// takes from it only what its own compare-and-set guards (a write that
// finds the record changed since reads it again), and keeps its own
// encoding, never the caller's decoded value (which the caller, or a
// redemption hook, may change).
type ReadMemo struct {
	mu   sync.Mutex
	kept map[string]string
}

type readMemoKey struct{}

// WithReadMemo returns ctx carrying a new, empty memo.
func WithReadMemo(ctx context.Context) context.Context {
	return context.WithValue(ctx, readMemoKey{}, &ReadMemo{})
}

// ReadMemoOf is ctx's memo, nil when it carries none; a nil memo keeps
// nothing.
func ReadMemoOf(ctx context.Context) *ReadMemo {
	m, _ := ctx.Value(readMemoKey{}).(*ReadMemo)
	return m
}

// Keep remembers record under key.
func (m *ReadMemo) Keep(key, record string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.kept == nil {
		m.kept = map[string]string{}
	}
	m.kept[key] = record
}

// Take returns the record kept under key and forgets it: a kept record
// serves one write's first attempt, a retry reads again.
func (m *ReadMemo) Take(key string) (string, bool) {
	if m == nil {
		return "", false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	record, ok := m.kept[key]
	delete(m.kept, key)
	return record, ok
}
