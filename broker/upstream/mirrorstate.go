package upstream

import (
	"strconv"
	"time"

	"github.com/usher-oidc/usher/grants"
)

// A GrantMirror records its progress on each invitation's timeline with
// these events; the latest of them is the invitation's mirror status
// (MirrorStateOf), which the admin API and page show.
const (
	EventMirrorQueued = "mirror_queued" // Detail: upstream_user; while retrying also attempts, last_error, retry_at
	EventMirrored     = "mirrored"      // Detail: upstream_user, attempts
	EventMirrorFailed = "mirror_failed" // Detail: upstream_user, reason, attempts
)

// MirrorState is an invitation's mirror status, derived from its timeline.
type MirrorState struct {
	// Status: "" (never mirrored), "pending", "synced" or "failed".
	Status string
	// Reason says why it failed.
	Reason string
	// LastError is the latest failed attempt while it is still pending.
	LastError string
	Attempts  int
	At        time.Time // of the latest mirror event
}

// String is "", "pending", "synced" or "failed: reason" (mirror_status in the API).
func (s MirrorState) String() string {
	if s.Status == "failed" {
		return "failed: " + s.Reason
	}
	return s.Status
}

// MirrorStateOf reads the latest mirror event of an invitation.
func MirrorStateOf(inv *grants.Invitation) MirrorState {
	if inv == nil {
		return MirrorState{}
	}
	for i := len(inv.Events) - 1; i >= 0; i-- {
		e := inv.Events[i]
		attempts, _ := strconv.Atoi(e.Detail["attempts"])
		switch e.Type {
		case EventMirrorQueued:
			return MirrorState{Status: "pending", LastError: e.Detail["last_error"], Attempts: attempts, At: e.At}
		case EventMirrored:
			return MirrorState{Status: "synced", Attempts: attempts, At: e.At}
		case EventMirrorFailed:
			return MirrorState{Status: "failed", Reason: e.Detail["reason"], Attempts: attempts, At: e.At}
		}
	}
	return MirrorState{}
}
