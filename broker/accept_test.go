package broker

import (
	"fmt"
	"testing"
	"time"
)

// Unanswered accept pages cannot grow a browser's session record without bound.
func TestPruneAcceptPages(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	values := map[any]any{"uid": "usr_1", "up:state": "{}"}
	for i := range 30 {
		exp := now.Add(time.Minute)
		if i%2 == 0 {
			exp = now.Add(-time.Second) // expired
		}
		enc, _ := jsonString(acceptState{CSRF: "c", Expires: exp})
		values[fmt.Sprintf("%s%d", acceptPrefix, i)] = enc
	}
	pruneAcceptPages(values, now)
	pages := 0
	for k := range values {
		if ks := k.(string); len(ks) > len(acceptPrefix) && ks[:len(acceptPrefix)] == acceptPrefix {
			pages++
		}
	}
	if pages > 10 || values["uid"] != "usr_1" || values["up:state"] != "{}" {
		t.Fatalf("after pruning: %d accept pages kept, other values %v %v", pages, values["uid"], values["up:state"])
	}
}
