package broker

import (
	"time"

	"github.com/usher-oidc/usher/sessions"
)

// sealedRequest is the part of a completed auth request a sealed code
// carries: what its exchange and tokens read, under one- and two-letter
// names, times as unix nanoseconds. Left out is what only /authorize and
// the pages read, all settled before a code is issued: the client's state,
// the sign-in page's hints (login_hint, ui_locales, screen_hint,
// connection), prompt and max_age, the upstream's parameters (organization,
// its invitation), the invitation, and the purpose (a client's requests
// have none). The code stays about half as long as with the request's own
// JSON (TestSealedRequest lists every field).
type sealedRequest struct {
	ID                  string             `json:"i"`
	ClientID            string             `json:"c"`
	RedirectURI         string             `json:"r"`
	Scopes              []string           `json:"s,omitempty"`
	Nonce               string             `json:"n,omitempty"`
	ResponseType        string             `json:"t,omitempty"`
	ResponseMode        string             `json:"m,omitempty"`
	CodeChallenge       string             `json:"cc,omitempty"`
	CodeChallengeMethod string             `json:"cm,omitempty"`
	Audience            []string           `json:"a,omitempty"`
	CreatedAt           int64              `json:"ct,omitempty"`
	ExpiresAt           int64              `json:"ex,omitempty"`
	Subject             string             `json:"u"`
	AuthTime            int64              `json:"at,omitempty"`
	AMR                 []string           `json:"amr,omitempty"`
	SessionID           string             `json:"sid,omitempty"`
	Upstream            *sessions.Upstream `json:"up,omitempty"`
}

func sealRequest(ar *sessions.AuthRequest) *sealedRequest {
	return &sealedRequest{
		ID: ar.ID, ClientID: ar.ClientID, RedirectURI: ar.RedirectURI, Scopes: ar.Scopes, Nonce: ar.Nonce,
		ResponseType: ar.ResponseType, ResponseMode: ar.ResponseMode,
		CodeChallenge: ar.CodeChallenge, CodeChallengeMethod: ar.CodeChallengeMethod, Audience: ar.Audience,
		CreatedAt: unixNanos(ar.CreatedAt), ExpiresAt: unixNanos(ar.ExpiresAt),
		Subject: ar.Subject, AuthTime: unixNanos(ar.AuthTime), AMR: ar.AMR, SessionID: ar.SessionID, Upstream: ar.Upstream,
	}
}

// authRequest is the completed request r carries.
func (r *sealedRequest) authRequest() *sessions.AuthRequest {
	return &sessions.AuthRequest{
		ID: r.ID, ClientID: r.ClientID, RedirectURI: r.RedirectURI, Scopes: r.Scopes, Nonce: r.Nonce,
		ResponseType: r.ResponseType, ResponseMode: r.ResponseMode,
		CodeChallenge: r.CodeChallenge, CodeChallengeMethod: r.CodeChallengeMethod, Audience: r.Audience,
		CreatedAt: fromUnixNanos(r.CreatedAt), ExpiresAt: fromUnixNanos(r.ExpiresAt),
		Done: true, Subject: r.Subject, AuthTime: fromUnixNanos(r.AuthTime), AMR: r.AMR, SessionID: r.SessionID, Upstream: r.Upstream,
	}
}

// unixNanos is t in unix nanoseconds, 0 for the zero time.
func unixNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}
