package broker

import (
	"testing"
	"time"

	"github.com/usher-oidc/usher/sessions"
)

// A just-created auth request is handed out once, a copy, and never after
// its expiry (the copy's or the request's own, whichever is first).
func TestFreshAuthRequests(t *testing.T) {
	now := time.Date(2026, 12, 2, 4, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name      string
		expiresIn time.Duration // the auth request's own
		after     time.Duration // when /login takes it
		want      bool
	}{
		{"at once", 10 * time.Minute, 0, true},
		{"within the copy's lifetime", 10 * time.Minute, freshAuthRequestTTL - time.Second, true},
		{"after the copy's lifetime", 10 * time.Minute, freshAuthRequestTTL, false},
		{"after the request's own expiry", 5 * time.Second, 5 * time.Second, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var f freshAuthRequests
			ar := &sessions.AuthRequest{ID: "ar-1", ClientID: "spa", ExpiresAt: now.Add(tc.expiresIn)}
			f.put(ar, "usr_1", now)
			ar.ClientID = "changed after put"
			got, user := f.take("ar-1", now.Add(tc.after))
			if (got != nil) != tc.want {
				t.Fatalf("take after %v: %+v, want found %v", tc.after, got, tc.want)
			}
			if got != nil && (got.ClientID != "spa" || user != "usr_1") {
				t.Errorf("took %q for %q: not a copy, or not its session's user", got.ClientID, user)
			}
			if again, _ := f.take("ar-1", now.Add(tc.after)); again != nil {
				t.Errorf("taken twice: %+v", again)
			}
		})
	}
	var f freshAuthRequests
	if got, _ := f.take("unknown", now); got != nil {
		t.Errorf("unknown: %+v", got)
	}
}
