package upstream

import (
	"context"
	"errors"
	"time"
)

// Upstream is the identity provider usher delegates sign-in to: one
// authorization code round trip per sign-in (LoginURL, then Exchange at
// usher's callback).
type Upstream interface {
	// Issuer is the upstream's issuer exactly as its discovery document and
	// its ID tokens state it (RFC 9207's iss on the callback must equal it).
	Issuer() string
	// StoreIssuer is the issuer its identities are stored under (Issuer, or
	// the canonical tenant issuer behind a custom domain): what tells which
	// of a user's stored identities are this upstream's accounts.
	StoreIssuer() string
	// Ready prepares the upstream (discovery); it is lazy and retried, so
	// usher starts while the upstream is unreachable. LoginURL and Exchange
	// need a nil Ready first.
	Ready(ctx context.Context) error
	// LoginURL is the upstream authorize URL for one round trip.
	LoginURL(r LoginRequest) string
	// Exchange redeems the code the upstream sent to usher's callback and
	// verifies the ID token (signature, iss, aud, exp, nonce).
	Exchange(ctx context.Context, c Callback) (*Identity, error)
	// TokenClaims names what of a sign-in usher's tokens repeat.
	TokenClaims() TokenClaims
}

// AccountFinder is an upstream that can tell whether an email has an account
// there. Its answer steers an invitee to the sign-up screen; an error means
// "unknown" and the sign-in goes on without it.
type AccountFinder interface {
	HasAccount(ctx context.Context, email string) (bool, error)
}

// GrantMirror is an upstream that keeps a copy of what invitations grant
// (roles, claims) on its accounts. Redemptions reach it through the outbox
// (grants.Redeemer.UpstreamUser names the account); revocations come from
// the broker.
type GrantMirror interface {
	EnqueueRevocation(ctx context.Context, upstreamUserID, role, claimKey string) error
}

// ConnectionResolver is an upstream that can name the connection an
// account signed in through when its ID token leaves that ambiguous (an
// Auth0 database sub is auth0|… whatever the database connection). The
// broker asks it after Exchange; on any error the identity keeps the
// connection Exchange derived (ConnectionFromSubject).
type ConnectionResolver interface {
	// Connection names sub's connection; ErrConnectionKnown when Exchange's
	// answer is already exact (no lookup made).
	Connection(ctx context.Context, sub string) (name string, err error)
}

// EmailVerification is an upstream that can say, fresh, whether an
// account's email is verified now, and mail the person the verification
// link again (Auth0's Management API). Without it, usher learns about a
// verification only from a new upstream round trip.
type EmailVerification interface {
	// EmailVerified is the account's email and email_verified as the
	// upstream holds them now (the email may have changed since the sign-in).
	EmailVerified(ctx context.Context, sub string) (email string, verified bool, err error)
	// ResendVerification asks the upstream to mail sub a new verification link.
	ResendVerification(ctx context.Context, sub string) error
}

// ErrConnectionKnown: the subject alone names its connection.
var ErrConnectionKnown = errors.New("upstream: the subject names its connection")

// Identity.ConnectionSource values: where its Connection came from.
const (
	ConnectionFromSubject = "sub_prefix"     // the upstream sub's prefix
	ConnectionFromAPI     = "management_api" // asked of the upstream (ConnectionResolver)
)

// Organizations is an upstream whose sign-ins can go through an
// organization the app asks for (LoginRequest.Organization, and the
// upstream's own invitation to it). Without it, usher refuses an
// authorization request that names an organization.
type Organizations interface {
	// InOrganization: claims (a sign-in's Identity.Claims) are of a sign-in
	// through org, given by ID or by name; org "" means through none.
	InOrganization(org string, claims map[string]any) bool
}

// LogoutRedirector is an upstream with a logout usher sends the browser
// through when an usher session ends.
type LogoutRedirector interface {
	// LogoutURL is the upstream's logout URL that ends at r.Done carrying
	// r.State, or "" when the upstream has no logout (or is unreachable).
	LogoutURL(ctx context.Context, r LogoutRequest) string
}

// LoginRequest is one upstream round trip as the broker starts it.
type LoginRequest struct {
	// RedirectURL is usher's callback; State, Nonce and the PKCE
	// CodeVerifier are fresh for this round trip.
	RedirectURL  string
	State        string
	Nonce        string
	CodeVerifier string

	// OIDC authentication request parameters the app asked for (or usher
	// adds: an invitee's email as LoginHint, prompt=login for a fresh login).
	LoginHint string
	Prompt    []string
	UILocales string
	MaxAge    *uint

	// Auth0's /authorize parameters, which usher accepts as an Auth0 tenant
	// does: each upstream forwards those it understands.
	Connection string
	ScreenHint string
	// Organization and Invitation (the upstream's own invitation to it) are
	// set only for an upstream with Organizations.
	Organization string
	Invitation   string
	// Signup: the person is known to have no account at the upstream
	// (AccountFinder), so its sign-up screen is the one to show.
	Signup bool
}

// Callback is the upstream's answer at usher's callback, with what the
// broker remembered of the round trip.
type Callback struct {
	RedirectURL  string
	Code         string
	Nonce        string
	CodeVerifier string
}

// LogoutRequest asks for the upstream's logout, returning to Done with State.
type LogoutRequest struct {
	Done  string
	State string
	// SessionID is the upstream's session (Identity.SessionID), if known.
	SessionID string
}

// Identity is what a verified upstream ID token (and, where the upstream
// needs it, userinfo) says about who signed in.
type Identity struct {
	// Issuer is the ID token's iss; StoreIssuer is the issuer usher stores
	// and looks up the identity under: Issuer, or the stable issuer the
	// upstream was configured with for it (a custom domain's canonical one,
	// an earlier issuer of the same accounts).
	Issuer        string
	StoreIssuer   string
	Subject       string
	Email         string
	EmailVerified bool
	Name          string
	Picture       string
	// Connection is how the person signed in at the upstream (Auth0's
	// connection name), "" when the upstream does not say.
	Connection string
	// ConnectionSource says where Connection came from: ConnectionFromSubject,
	// ConnectionFromAPI, or "" when there is none.
	ConnectionSource string
	AuthTime         time.Time
	AMR              []string
	IDToken          string
	// SessionID is the upstream's session (its ID token's sid), if it names one.
	SessionID string
	// Claims are the upstream ID token's claims named by TokenClaims().Copied.
	Claims map[string]any
	// UserinfoErr: userinfo was asked and failed; the ID token's claims stand.
	UserinfoErr error
}

// TokenClaims names what of a sign-in usher's ID and access tokens and
// userinfo repeat. usher's own claims of the same name win.
type TokenClaims struct {
	// Copied are upstream ID token claims copied by name (Identity.Claims).
	Copied []string
	// Subject names the claim that carries the upstream `sub` of the
	// identity that signed in ("" = none).
	Subject string
}

// ErrHS256: the upstream signs ID tokens with the client secret (HS256).
// usher accepts only asymmetric signatures, so every sign-in fails until
// the upstream's setting changes; Advice says which one.
var ErrHS256 = errors.New("upstream ID token is signed with HS256")

// Advice is what an administrator should change about the upstream for err
// (an Exchange error), or "" when the upstream gives none.
func Advice(err error) string {
	var a interface{ Advice() string }
	if errors.As(err, &a) {
		return a.Advice()
	}
	return ""
}
