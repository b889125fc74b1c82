// Package sessions owns the short-lived state of a sign-in: browser sessions,
// authorization requests, authorization codes, refresh-token families, revoked
// access tokens and the signing keys that sign what the broker issues.
//
// It defines the records and the Store interface; backends (bbolt, Redis) live
// under store/ and all pass store/conformance.
package sessions

import (
	"context"
	"errors"
	"time"

	"github.com/usher-oidc/usher/store/errs"
)

// Errors every Store returns (wrapped or not) so callers can branch with errors.Is.
var (
	// ErrNotFound is the store-wide sentinel (store/errs), the same value as
	// grants.ErrNotFound.
	ErrNotFound = errs.ErrNotFound
	// ErrCodeReplayed: the authorization code was already exchanged once.
	ErrCodeReplayed = errors.New("authorization code already used")
	// ErrRefreshReused: a rotated refresh token was presented again; its whole
	// family has been revoked by the store.
	ErrRefreshReused = errors.New("refresh token reused")
	// ErrRevoked: the refresh token's family was revoked.
	ErrRevoked = errors.New("revoked")
	// ErrConflict: a create found a record already there. The store-wide
	// sentinel (store/errs), the same value as grants.ErrConflict.
	ErrConflict = errs.ErrConflict
)

// AuthRequest is one OIDC authorization request from a relying party (the SPA),
// from /authorize until its code is exchanged.
type AuthRequest struct {
	ID                  string   `json:"id"`
	ClientID            string   `json:"client_id"`
	RedirectURI         string   `json:"redirect_uri"`
	Scopes              []string `json:"scopes"`
	State               string   `json:"state,omitempty"`
	Nonce               string   `json:"nonce,omitempty"`
	ResponseType        string   `json:"response_type"`
	ResponseMode        string   `json:"response_mode,omitempty"`
	CodeChallenge       string   `json:"code_challenge,omitempty"`
	CodeChallengeMethod string   `json:"code_challenge_method,omitempty"`
	Prompt              []string `json:"prompt,omitempty"`
	MaxAge              *uint    `json:"max_age,omitempty"`
	LoginHint           string   `json:"login_hint,omitempty"`
	UILocales           string   `json:"ui_locales,omitempty"`
	Connection          string   `json:"connection,omitempty"`
	ScreenHint          string   `json:"screen_hint,omitempty"`
	// Audience is the API the access token is for (the `audience` parameter
	// of Auth0's SDKs); empty means the client itself.
	Audience []string `json:"audience,omitempty"`
	// InvitationHash is the SHA-256 (hex) of the invitation token that came with
	// this request, if any. The token itself is never stored.
	InvitationHash string    `json:"invitation_hash,omitempty"`
	CreatedAt      time.Time `json:"created_at"`
	ExpiresAt      time.Time `json:"expires_at"`

	// Set when the upstream sign-in completes.
	Done     bool      `json:"done,omitempty"`
	Subject  string    `json:"subject,omitempty"`
	AuthTime time.Time `json:"auth_time,omitempty"`
	AMR      []string  `json:"amr,omitempty"`
	// SessionID is the stable ID of the browser session that signed in (not
	// the cookie's rotating storage ID); set for public clients, so sign-out
	// can revoke their refresh tokens.
	SessionID string `json:"session_id,omitempty"`
	// Organization is Auth0's `organization` parameter (an org_… ID or, with
	// "Use Organization Names in Authentication API", a name), forwarded
	// upstream with UpstreamInvitation (an Auth0 organization invitation).
	Organization       string `json:"organization,omitempty"`
	UpstreamInvitation string `json:"upstream_invitation,omitempty"`
	// Upstream is what this sign-in's upstream ID token said that tokens
	// carry on (see Upstream); set with Subject.
	Upstream *Upstream `json:"upstream,omitempty"`
	// Purpose names what a request that is no client's is for ("admin":
	// the admin page's sign-in, stored only to hold its login state); ""
	// for a client's authorization request.
	Purpose string `json:"purpose,omitempty"`
}

// Upstream is the part of one upstream sign-in that usher's tokens repeat:
// the upstream `sub` and the allow-listed upstream claims (pass-through
// claims, org_id, org_name). It travels with the sign-in (auth request,
// browser session, refresh token family), so a refresh repeats the claims
// of the sign-in it continues, whichever identity of the user that was.
type Upstream struct {
	Subject string         `json:"sub,omitempty"`
	Claims  map[string]any `json:"claims,omitempty"`
}

// Code is an authorization code, stored by the SHA-256 (hex) of its value.
type Code struct {
	Hash          string    `json:"hash"`
	AuthRequestID string    `json:"auth_request_id"`
	ExpiresAt     time.Time `json:"expires_at"`
	// Used is set by ConsumeCode; the record is kept until ExpiresAt so a replay
	// is recognised (and the tokens issued from it revoked) instead of looking
	// like an unknown code.
	Used bool `json:"used,omitempty"`
	// AuthRequest is the completed authorization request the code was
	// issued for, as it was then (nothing changes it after): the token
	// request reads it with the code instead of reading it again. Codes
	// saved without it (before this field existed) are answered from
	// the auth request's own record.
	AuthRequest *AuthRequest `json:"auth_request,omitempty"`
	// AuthRequestNeverStored: AuthRequest was answered in the HTTP request
	// that made it (a login the browser session answered at once), so it
	// has no record of its own and the code is the only place it is kept:
	// SaveCode writes none for it (a store whose readers may predate
	// AuthRequest creates one instead). Not part of the record.
	AuthRequestNeverStored bool `json:"-"`
}

// StoredAuthRequest is c's AuthRequest as SaveCode stores it: expiring
// with the code at the latest. The code carries the request from then on,
// so the request's own record outlives the code for nothing, and the
// code's exchange need not delete it (one write less per login).
func (c *Code) StoredAuthRequest() *AuthRequest {
	ar := c.AuthRequest
	if ar == nil || !c.ExpiresAt.Before(ar.ExpiresAt) {
		return ar
	}
	bounded := *ar
	bounded.ExpiresAt = c.ExpiresAt
	return &bounded
}

// CodeSpend is the single use of a sealed authorization code: a code that
// carries its completed auth request, encrypted and authenticated by the
// broker, so that issuing it writes nothing. Spending it records the hash
// until the code expires; a second spend is a replay.
type CodeSpend struct {
	// Hash names the spend: the broker's hash of the request the code
	// answers (one code per request), not of the code's text.
	Hash      string
	Epoch     string // the CodeEpoch the code was issued in
	ExpiresAt time.Time
	// Refresh, when set, is the refresh token the exchange issues, created
	// with the spend.
	Refresh *RefreshToken
}

// RefreshToken is one link of a refresh-token family. Every token issued from
// one authorization shares FamilyID; rotation creates the next link.
type RefreshToken struct {
	// Hash is the SHA-256 (hex) of the token value.
	Hash      string    `json:"hash"`
	FamilyID  string    `json:"family_id"`
	ClientID  string    `json:"client_id"`
	Subject   string    `json:"subject"`
	Scopes    []string  `json:"scopes"`
	Audience  []string  `json:"audience"`
	AMR       []string  `json:"amr,omitempty"`
	AuthTime  time.Time `json:"auth_time"`
	CreatedAt time.Time `json:"created_at"`
	// ExpiresAt is this link's idle expiry; FamilyExpiresAt the absolute
	// lifetime of the family, never extended by rotation.
	ExpiresAt       time.Time `json:"expires_at"`
	FamilyExpiresAt time.Time `json:"family_expires_at"`
	// RotatedAt is set when the token was exchanged for its successor.
	RotatedAt *time.Time `json:"rotated_at,omitempty"`
	// FamilyCreatedAt: when the family's first token was issued (every link
	// carries it); a sign out everywhere ends families created up to then.
	FamilyCreatedAt time.Time `json:"family_created_at,omitzero"`
	// SessionID: the browser session the family was issued through (see
	// AuthRequest.SessionID); every link of a family carries the first's.
	SessionID string `json:"session_id,omitempty"`
	// Upstream: the sign-in's upstream sub and claims (AuthRequest.Upstream),
	// copied to every link of the family.
	Upstream *Upstream `json:"upstream,omitempty"`
}

// SigningKey is a private key the broker signs tokens with.
type SigningKey struct {
	ID        string `json:"id"`
	Algorithm string `json:"alg"`
	// PrivateKeyPEM is PKCS#8 PEM. Backends store it as given (callers encrypt
	// it first when a key-encryption key is configured).
	PrivateKeyPEM []byte    `json:"private_key_pem"`
	CreatedAt     time.Time `json:"created_at"`
	// NotBefore: the key is published from CreatedAt but signs only from NotBefore,
	// so every replica's JWKS lists it before any token carries its kid.
	NotBefore time.Time `json:"not_before"`
}

// BrowserSession is the server side of a browser's session cookie; the cookie
// carries only the opaque ID.
type BrowserSession struct {
	ID        string            `json:"id"`
	Values    map[string]string `json:"values"`
	CreatedAt time.Time         `json:"created_at"`
	ExpiresAt time.Time         `json:"expires_at"`
	// Transient: the session holds nothing but the state of sign-ins in
	// flight (no account): a store may keep it as it keeps auth requests
	// (bbolt: in the flow file, without fdatasync, discarded after a
	// crash with the auth requests it points at). Not stored.
	Transient bool `json:"-"`
}

// LoginState is what usher keeps of an upstream sign-in it started for an
// auth request until the upstream answers (the callback): the nonce and PKCE
// verifier it sent. It lives with its auth request.
type LoginState struct {
	Nonce    string `json:"nonce"`
	Verifier string `json:"verifier"`
}

// MaxLoginStates bounds the login states one auth request holds: saving one
// more drops the others (a person retrying the upstream again and again
// keeps only the newest sign-in).
const MaxLoginStates = 8

// Store is what the broker needs to keep sign-in state. Implementations must be
// safe for concurrent use by several processes sharing the same backend, and
// must treat a record whose ExpiresAt has passed as absent.
type Store interface {
	CreateAuthRequest(ctx context.Context, ar *AuthRequest) error
	GetAuthRequest(ctx context.Context, id string) (*AuthRequest, error)
	// UpdateAuthRequest replaces an existing auth request (ErrNotFound if gone).
	UpdateAuthRequest(ctx context.Context, ar *AuthRequest) error
	DeleteAuthRequest(ctx context.Context, id string) error
	// SaveLoginState keeps ls under key with the live auth request arID
	// (ErrNotFound if it is gone or expired). Login states go with their
	// request: when it expires or is deleted, and when it is replaced
	// (UpdateAuthRequest, and SaveCode completing it). At MaxLoginStates
	// already, the others are dropped first. errors.ErrUnsupported (stdlib):
	// the store writes a record format some replicas may not read yet; the
	// caller keeps the state elsewhere (the browser session, as before).
	SaveLoginState(ctx context.Context, arID, key string, ls *LoginState) error
	// TakeLoginState atomically removes the login state key of auth request
	// arID and returns it with the request: of concurrent takes exactly one
	// gets it. ErrNotFound with a nil request when the request is gone or
	// expired; ErrNotFound with the (live) request when it holds no such state.
	TakeLoginState(ctx context.Context, arID, key string) (*AuthRequest, *LoginState, error)

	// SaveCode stores a new code (ErrConflict over a live one). A code with
	// its AuthRequest also replaces that auth request, as UpdateAuthRequest
	// does (ErrNotFound if gone), in the same write: issuing the code
	// completes the request, which then expires with the code at the latest
	// (Code.StoredAuthRequest), so its exchange need not delete it.
	SaveCode(ctx context.Context, c *Code) error
	// ConsumeCode atomically marks the code used and returns it. A second call
	// returns the record and ErrCodeReplayed; an unknown or expired code ErrNotFound.
	ConsumeCode(ctx context.Context, hash string) (*Code, error)
	// CodeEpoch names the store's current flow state. A sealed code (one
	// that carries its own request, so nothing of it is stored until it is
	// spent) names the epoch it was issued in; when the store loses its
	// flow state (bbolt's flow file after a crash, a Redis that lost its
	// data), the epoch changes and codes of the old one are refused, so a
	// spent code never comes back unspent.
	CodeEpoch(ctx context.Context) (string, error)
	// SpendCode marks the sealed code sp.Hash spent until sp.ExpiresAt and,
	// when sp.Refresh is set, creates that refresh token as
	// CreateRefreshToken does, both or neither where the store can (one
	// Redis script; bbolt spends in its flow file first, as ConsumeCode,
	// then creates durably). ErrCodeReplayed when already spent (nothing
	// created); ErrNotFound when sp.Epoch is not the current one.
	SpendCode(ctx context.Context, sp *CodeSpend) error

	// CreateRefreshToken stores rt; ErrConflict over a live token of rt's
	// family with its hash.
	CreateRefreshToken(ctx context.Context, rt *RefreshToken) error
	// GetRefreshToken returns the token with this hash in family familyID
	// (the token value names its family, so no store needs a hash → family
	// lookup): ErrNotFound for unknown or expired tokens and for a hash of
	// another family, ErrRevoked if the family was revoked. A rotated token
	// is returned with RotatedAt set.
	GetRefreshToken(ctx context.Context, familyID, hash string) (*RefreshToken, error)
	// RotateRefreshToken atomically marks oldHash, a token of next's family
	// (rotation keeps the family), rotated and stores next. If oldHash was
	// already rotated, it revokes the family and returns ErrRefreshReused;
	// ErrRevoked if the family is revoked; ErrNotFound if gone or not in
	// next's family.
	RotateRefreshToken(ctx context.Context, oldHash string, next *RefreshToken) error
	// RevokeFamily revokes every refresh and access token of a family until `until`.
	RevokeFamily(ctx context.Context, familyID string, until time.Time) error
	// RevokeSessionFamilies revokes until `until` every family whose first
	// token was created with this SessionID (sign-out). CreateRefreshToken
	// records the link; unknown sessions are not an error.
	RevokeSessionFamilies(ctx context.Context, sessionID string, until time.Time) error
	// RevokeAccessToken marks one access token (by jti) revoked until its expiry.
	RevokeAccessToken(ctx context.Context, jti string, until time.Time) error
	// TokenRevoked reports whether the access token jti, or its family, is revoked.
	TokenRevoked(ctx context.Context, familyID, jti string) (bool, error)

	GetBrowserSession(ctx context.Context, id string) (*BrowserSession, error)
	SaveBrowserSession(ctx context.Context, s *BrowserSession) error
	DeleteBrowserSession(ctx context.Context, id string) error
	// ReplaceBrowserSession saves s and deletes the session oldID (gone
	// already is fine) in one write: a sign-in's new session ID.
	ReplaceBrowserSession(ctx context.Context, s *BrowserSession, oldID string) error

	// SigningKeys lists all stored keys, oldest first.
	SigningKeys(ctx context.Context) ([]SigningKey, error)
	// AddSigningKey stores a key; ErrConflict if its ID exists. With
	// onlyIfNone, it stores nothing and returns ErrConflict when a key of the
	// same Algorithm exists, so the first of several replicas wins the initial
	// generation of each algorithm's key.
	AddSigningKey(ctx context.Context, k *SigningKey, onlyIfNone bool) error
	// DeleteSigningKey removes a retired key.
	DeleteSigningKey(ctx context.Context, id string) error

	// Ping reports whether the backend is reachable.
	Ping(ctx context.Context) error
}
