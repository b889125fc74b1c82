package grants

import (
	"context"
	"testing"
)

// A memo serves each kept record once; a context without one keeps nothing.
func TestReadMemo(t *testing.T) {
	ctx := WithReadMemo(context.Background())
	m := ReadMemoOf(ctx)
	m.Keep("a", "record a")
	if got, ok := m.Take("a"); !ok || got != "record a" {
		t.Errorf("Take(a) = %q, %v; want the kept record", got, ok)
	}
	if got, ok := m.Take("a"); ok {
		t.Errorf("Take(a) again = %q; want nothing: a record serves one write", got)
	}
	none := ReadMemoOf(context.Background())
	none.Keep("b", "record b")
	if _, ok := none.Take("b"); ok || none != nil {
		t.Error("a context without a memo kept a record")
	}
}
