// Package store names what a backend must offer so that `usher store migrate`
// can copy its state to another backend without knowing its internals: every
// record of a Kind exported as JSON, and imported create-if-absent.
//
// The JSON of each kind is the record type of package sessions or grants
// (Record below says which), so both backends speak the same form.
package store

import (
	"context"
	"encoding/json"
	"time"
)

// Kind is one kind of record.
type Kind string

// The kinds, in the order migrate copies them (a record's dependencies come
// first: users before identities, revocations before the tokens they revoke).
const (
	SigningKeys     Kind = "signing_keys"     // sessions.SigningKey, copied as stored (still encrypted)
	Users           Kind = "users"            // grants.User
	Identities      Kind = "identities"       // grants.Identity
	Grants          Kind = "grants"           // grants.Grant
	Invitations     Kind = "invitations"      // grants.Invitation, with its events
	Audit           Kind = "audit"            // grants.AuditRecord
	Idempotency     Kind = "idempotency_keys" // grants.IdempotencyRecord
	Jobs            Kind = "jobs"             // grants.Job (mail, webhook lanes and delivery log, mirror), with its state
	RevokedFamilies Kind = "revoked_families" // Revocation
	RevokedTokens   Kind = "revoked_access_tokens"
	RefreshTokens   Kind = "refresh_tokens"   // sessions.RefreshToken, RotatedAt included
	BrowserSessions Kind = "browser_sessions" // sessions.BrowserSession
)

// Kinds lists every kind migrate copies, in copy order.
var Kinds = []Kind{SigningKeys, Users, Identities, Grants, Invitations, Audit, Idempotency, Jobs,
	RevokedFamilies, RevokedTokens, RefreshTokens, BrowserSessions}

// Dropped are the kinds migrate does not copy, and why.
var Dropped = map[string]string{
	"auth_requests":        "live for minutes, between /authorize and the code exchange: a sign-in in flight starts again",
	"authorization_codes":  "single-use and live for a minute: the client restarts its sign-in",
	"session_families":     "not copied as such: rebuilt from the refresh tokens' session IDs on import",
	"grant_pending_merges": "Redis only: a redemption whose grant merge a crash interrupted; the source's next GetGrant of that user applies it, so read such grants (sign the user in) before migrating",
}

// Revocation is the exported form of a revoked family or access token.
type Revocation struct {
	ID    string    `json:"id"`
	Until time.Time `json:"until"`
}

// Exporter reads every stored record of a kind, expired ones included (the
// caller decides what is still live). Order is unspecified.
type Exporter interface {
	Export(ctx context.Context, kind Kind, fn func(rec json.RawMessage) error) error
}

// Importer stores one record of a kind exactly as exported (IDs, timestamps,
// status, state), with every index the backend keeps for it, unless a record
// with the same ID is already there: then it changes nothing and reports
// created false. Importing twice is therefore harmless.
type Importer interface {
	Import(ctx context.Context, kind Kind, rec json.RawMessage) (created bool, err error)
}
