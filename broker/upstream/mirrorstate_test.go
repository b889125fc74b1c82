package upstream_test

import (
	"testing"
	"time"

	"github.com/usher-oidc/usher/broker/upstream"
	"github.com/usher-oidc/usher/grants"
)

func TestMirrorStateOf(t *testing.T) {
	t.Parallel()
	at := time.Unix(1700000000, 0)
	ev := func(typ string, detail map[string]string) grants.Event {
		return grants.Event{Type: typ, At: at, Detail: detail}
	}
	for _, tc := range []struct {
		events []grants.Event
		want   string
	}{
		{nil, ""},
		{[]grants.Event{ev("created", nil)}, ""},
		{[]grants.Event{ev(upstream.EventMirrorQueued, map[string]string{"last_error": "503"}), ev("redeemed", nil)}, "pending"},
		{[]grants.Event{ev(upstream.EventMirrorQueued, nil), ev(upstream.EventMirrored, map[string]string{"attempts": "2"})}, "synced"},
		{[]grants.Event{ev(upstream.EventMirrored, nil), ev(upstream.EventMirrorFailed, map[string]string{"reason": "user gone"})}, "failed: user gone"},
	} {
		if got := upstream.MirrorStateOf(&grants.Invitation{Events: tc.events}).String(); got != tc.want {
			t.Errorf("%v: status %q, want %q", tc.events, got, tc.want)
		}
	}
	s := upstream.MirrorStateOf(&grants.Invitation{Events: []grants.Event{ev(upstream.EventMirrored, map[string]string{"attempts": "3"})}})
	if s.Attempts != 3 || !s.At.Equal(at) {
		t.Errorf("state = %+v", s)
	}
	if upstream.MirrorStateOf(nil) != (upstream.MirrorState{}) {
		t.Error("nil invitation has a state")
	}
}
