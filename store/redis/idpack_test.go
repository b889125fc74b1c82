package redis

import (
	"strings"
	"testing"
)

func TestPackID(t *testing.T) {
	for _, tc := range []struct {
		id     string
		packed bool
		size   int
	}{
		{"inv-AbCdEfGhIjKlMnOp", true, 13},       // grants' form: 16 characters
		{"inv_0000000000000000000001", true, 18}, // 22 characters
		{"inv-_-zz", true, 4},                    // the alphabet's ends
		{"inv-abc", false, 0},                    // 3 characters: as many bytes as 4
		{"x", true, 2},                           // no prefix
		{"inv-a.b", false, 0},                    // not base64url
		{"inv-", true, 4},                        // no prefix: 4 base64url characters
		{"héllo", false, 0},                      // UTF-8
		{strings.Repeat("Z", 64), true, 49},
	} {
		p, ok := packID(tc.id)
		if ok != tc.packed {
			t.Fatalf("packID(%q) ok %v, want %v", tc.id, ok, tc.packed)
		}
		if !ok {
			if unpackID(tc.id) != tc.id {
				t.Fatalf("unpackID(%q) changed a text ID", tc.id)
			}
			continue
		}
		if len(p) != tc.size {
			t.Fatalf("packID(%q) is %d bytes, want %d", tc.id, len(p), tc.size)
		}
		if got := unpackID(p); got != tc.id {
			t.Fatalf("unpackID(packID(%q)) = %q", tc.id, got)
		}
	}
}
