package broker

import (
	"sync"
	"time"

	"github.com/usher-oidc/usher/sessions"
)

// freshAuthRequests holds the auth requests this process has just created,
// for the /login the /authorize redirect leads to: taken there once, the
// copy saves that request's read from the store. Nothing changes an auth
// request between its creation and its first /login, so the copy is what
// the store holds; every other read (a reload, a second tab, a /login that
// reaches another replica, one after the copy's expiry) goes to the store.
type freshAuthRequests struct {
	mu      sync.Mutex
	entries map[string]freshAuthRequest
}

type freshAuthRequest struct {
	ar sessions.AuthRequest
	// sessionUser: the user the browser's session signed in when the
	// request was created ("" for none), a hint for /login's reads.
	sessionUser string
	until       time.Time
}

const (
	// freshAuthRequestTTL: a browser follows the redirect at once; one that
	// takes longer reads the store.
	freshAuthRequestTTL = 30 * time.Second
	maxFreshAuthRequest = 10_000
)

func (f *freshAuthRequests) put(ar *sessions.AuthRequest, sessionUser string, now time.Time) {
	until := now.Add(freshAuthRequestTTL)
	if ar.ExpiresAt.Before(until) {
		until = ar.ExpiresAt
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.entries == nil || len(f.entries) >= maxFreshAuthRequest {
		f.entries = make(map[string]freshAuthRequest) // simplest bound: start over
	}
	f.entries[ar.ID] = freshAuthRequest{ar: *ar, sessionUser: sessionUser, until: until}
}

// take returns the copy of auth request id, with its session user hint,
// and forgets it; nil when there is none or it expired.
func (f *freshAuthRequests) take(id string, now time.Time) (*sessions.AuthRequest, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.entries[id]
	if !ok {
		return nil, ""
	}
	delete(f.entries, id)
	if !now.Before(e.until) {
		return nil, ""
	}
	return &e.ar, e.sessionUser
}
