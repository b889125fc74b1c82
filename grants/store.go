package grants

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/usher-oidc/usher/store/errs"
)

var (
	// ErrNotFound and ErrConflict are the store-wide sentinels (store/errs),
	// the same values as sessions.ErrNotFound and sessions.ErrConflict.
	ErrNotFound = errs.ErrNotFound
	ErrConflict = errs.ErrConflict
	// ErrLeaseLost: see CompleteClaimedJob.
	ErrLeaseLost = errs.ErrLeaseLost
	// Redemption outcomes. RedeemInvitation returns exactly one of these (or
	// nil) so the caller can tell the person which.
	ErrInvitationRedeemed = errors.New("invitation already used")
	ErrInvitationRevoked  = errors.New("invitation revoked")
	ErrInvitationExpired  = errors.New("invitation expired")
	// ErrInvitationDeclined: the invitee pressed Decline on the accept page.
	ErrInvitationDeclined = errors.New("invitation declined")
	// ErrIdempotencyMismatch: the Idempotency-Key was used with another body.
	ErrIdempotencyMismatch = errors.New("idempotency key reused with a different request")
	// ErrIdempotencyInProgress: the first request with that key has not finished.
	ErrIdempotencyInProgress = errors.New("a request with this idempotency key is in progress")
	// ErrSkipUpdate: an UpdateInvitation callback returns it to store nothing
	// because the invitation has moved on.
	ErrSkipUpdate = errors.New("invitation changed; update skipped")
)

// User is an usher user; ID is the `sub` usher issues and never changes.
type User struct {
	ID            string    `json:"id"`
	Email         string    `json:"email,omitempty"`
	EmailVerified bool      `json:"email_verified"`
	Name          string    `json:"name,omitempty"`
	Picture       string    `json:"picture,omitempty"`
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
	LastLoginAt   time.Time `json:"last_login_at,omitempty"`
}

// Identity is one upstream account (issuer + subject) linked to a user.
type Identity struct {
	Issuer        string    `json:"iss"`
	Subject       string    `json:"sub"`
	UserID        string    `json:"user_id"`
	Connection    string    `json:"connection,omitempty"`
	Email         string    `json:"email,omitempty"`
	EmailVerified bool      `json:"email_verified"`
	CreatedAt     time.Time `json:"created_at"`
}

// Profile is what the upstream said about the person at this sign-in.
type Profile struct {
	Email         string
	EmailVerified bool
	Name          string
	Picture       string
}

// Grant is what a user holds: the union of the roles of every invitation they
// redeemed (plus default roles) and their claims merged key by key, later wins.
type Grant struct {
	UserID      string         `json:"user_id"`
	Roles       []string       `json:"roles"`
	Claims      map[string]any `json:"claims"`
	Invitations []string       `json:"invitations"`
	UpdatedAt   time.Time      `json:"updated_at"`
	// SignedOutAt is the user's "not before": sessions and tokens usher
	// issued to them up to this instant are dead (see SignOutEverywhere).
	SignedOutAt *time.Time `json:"signed_out_at,omitempty"`
	// Outbox holds the events of grant changes not yet handed to every
	// consumer; the backends keep it with the grant (never in API answers).
	Outbox []OutboxEvent `json:"-"`
}

// FillEmpty gives g empty roles, claims and invitations where it has
// none (nil), so a grant reads and encodes the same whether it was stored
// with them empty, null or left out.
func (g *Grant) FillEmpty() {
	if g.Roles == nil {
		g.Roles = []string{}
	}
	if g.Claims == nil {
		g.Claims = map[string]any{}
	}
	if g.Invitations == nil {
		g.Invitations = []string{}
	}
}

// Status of an invitation as stored. "expired" is derived at read time from
// ExpiresAt (see Invitation.EffectiveStatus); it is never written.
type Status string

const (
	StatusPending  Status = "pending"
	StatusRedeemed Status = "redeemed"
	StatusRevoked  Status = "revoked"
	StatusExpired  Status = "expired"
	// StatusDeclined is final, like revoked: the invitee said no.
	StatusDeclined Status = "declined"
)

// Event is one line of an invitation's timeline.
type Event struct {
	Type   string            `json:"type"` // created, mailed, mail_failed, opened, redeemed, redemption_failed, deferred, declined, revoked, resent
	At     time.Time         `json:"at"`
	Detail map[string]string `json:"detail,omitempty"`
}

// Invitation binds roles and claims to whoever redeems its token.
type Invitation struct {
	ID string `json:"id"`
	// TokenHash is the SHA-256 (hex) of the current token; the token itself is
	// never stored.
	TokenHash  string         `json:"token_hash"`
	Email      string         `json:"email"`
	Roles      []string       `json:"roles"`
	Claims     map[string]any `json:"claims"`
	Metadata   map[string]any `json:"metadata"`
	ExternalID string         `json:"external_id,omitempty"`
	ClientID   string         `json:"client_id,omitempty"`
	EmailMatch string         `json:"email_match"` // any, exact, domain
	Inviter    string         `json:"inviter,omitempty"`
	// Link is the form of the link usher mails and shows: LinkInvite ("",
	// /invite/<token>) or LinkAuthorize. Kept so that resend keeps it.
	Link string `json:"link,omitempty"`
	// Locale is the BCP 47 language the invitation mail is written in
	// (when usher has its catalog; else English).
	Locale    string    `json:"locale,omitempty"`
	Status    Status    `json:"status"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	SendEmail bool      `json:"send_email"`
	// EmailStatus: "", queued, sent, failed.
	EmailStatus string `json:"email_status,omitempty"`
	EmailError  string `json:"email_error,omitempty"`

	RedeemedAt         *time.Time `json:"redeemed_at,omitempty"`
	RedeemedBy         string     `json:"redeemed_by,omitempty"`
	RedeemedIdentity   string     `json:"redeemed_identity,omitempty"` // iss|sub
	RedeemedConnection string     `json:"redeemed_connection,omitempty"`
	RevokedAt          *time.Time `json:"revoked_at,omitempty"`
	DeclinedAt         *time.Time `json:"declined_at,omitempty"`
	DeclinedBy         string     `json:"declined_by,omitempty"` // the signed-in user who declined
	// AwaitingVerification: a person accepted it with an account whose
	// email matches but is not verified yet (see Service.AwaitVerification);
	// the redemption clears it.
	AwaitingVerification *AwaitingVerification `json:"awaiting_verification,omitempty"`

	Events []Event `json:"events,omitempty"`
	// Outbox holds the events of this invitation's use cases that the
	// outbox runner has not yet handed to every consumer (see events.go).
	Outbox []OutboxEvent `json:"outbox,omitempty"`
}

// EffectiveStatus is Status with "expired" derived from the clock.
func (inv *Invitation) EffectiveStatus(now time.Time) Status {
	if inv.Status == StatusPending && !now.Before(inv.ExpiresAt) {
		return StatusExpired
	}
	return inv.Status
}

// HasEvent reports whether the timeline holds an event of type typ.
func (inv *Invitation) HasEvent(typ string) bool {
	for _, e := range inv.Events {
		if e.Type == typ {
			return true
		}
	}
	return false
}

// Redemption records who redeemed an invitation.
type Redemption struct {
	UserID     string
	Identity   string // iss|sub
	Connection string
	At         time.Time
	// Claims are merged into the grant after the invitation's own claims
	// (later wins): what a redemption hook added or overrode.
	Claims map[string]any
	// Events are recorded with the redemption, in the same atomic write.
	Events []OutboxEvent
}

// AuditRecord is one line of the audit log: who did what to whom.
type AuditRecord struct {
	ID     string            `json:"id"`
	At     time.Time         `json:"at"`
	Action string            `json:"action"` // invitation.created, invitation.redeemed, invitation.revoked, invitation.declined, invitation.resent, grant.changed, admin.signed_in…
	Actor  string            `json:"actor"`  // client ID or user ID
	Target string            `json:"target"` // invitation ID or user ID
	Detail map[string]string `json:"detail,omitempty"`
}

// AuditFilter selects audit records; empty fields match everything.
type AuditFilter struct {
	Action, Actor, Target string
	Since, Until          time.Time
	Limit                 int // default 50, capped at 1000
	Cursor                string
}

// InvitationFilter selects invitations for listing. Status "expired" matches
// pending invitations past their expiry; "pending" only unexpired ones.
type InvitationFilter struct {
	Status     Status
	Email      string // exact, case-insensitive
	ClientID   string
	ExternalID string
	// UnsafeClaims keeps only invitations holding a claim name that
	// ValidateClaimName refuses under ClaimsNamespace (stored before the rule).
	UnsafeClaims    bool
	ClaimsNamespace string
	// EmailPrefix and ExternalIDPrefix select by prefix (see search.go).
	EmailPrefix, ExternalIDPrefix string
	// CreatedSince (inclusive) and CreatedUntil (exclusive) bound CreatedAt;
	// the zero time leaves that side open.
	CreatedSince, CreatedUntil time.Time
	// Limit is the page size (the backend caps it at 1000); Cursor is the
	// opaque value NextCursor returned for the previous page.
	Limit  int
	Cursor string
}

// Matches applies the action, actor and target filters to one record (the
// backends apply the time window through their time-ordered indexes).
func (f *AuditFilter) Matches(rec *AuditRecord) bool {
	return (f.Action == "" || rec.Action == f.Action) && (f.Actor == "" || rec.Actor == f.Actor) && (f.Target == "" || rec.Target == f.Target)
}

// Matches applies the filter to one invitation; every backend lists with it,
// so the filters mean the same everywhere.
func (f *InvitationFilter) Matches(inv *Invitation, now time.Time) bool {
	switch {
	case f.Status != "" && inv.EffectiveStatus(now) != f.Status,
		f.Email != "" && !SameEmail(inv.Email, f.Email),
		f.ClientID != "" && inv.ClientID != f.ClientID,
		f.ExternalID != "" && inv.ExternalID != f.ExternalID,
		f.UnsafeClaims && len(UnsafeClaimNames(f.ClaimsNamespace, inv.Claims)) == 0,
		!f.matchesSearch(inv):
		return false
	}
	return true
}

// IdempotencyRecord remembers the first request made with an Idempotency-Key.
type IdempotencyRecord struct {
	Key         string          `json:"key"`
	RequestHash string          `json:"request_hash"`
	Status      int             `json:"status,omitempty"`   // HTTP status of the first answer; 0 while in progress
	Response    json.RawMessage `json:"response,omitempty"` // body of the first answer
	CreatedAt   time.Time       `json:"created_at"`
	ExpiresAt   time.Time       `json:"expires_at"`
}

// Job is a unit of durable background work (mail, webhook delivery, Auth0 mirror).
type Job struct {
	ID        string          `json:"id"`
	Kind      string          `json:"kind"`
	Payload   json.RawMessage `json:"payload"`
	RunAt     time.Time       `json:"run_at"`
	Attempts  int             `json:"attempts"`
	LastError string          `json:"last_error,omitempty"`
	CreatedAt time.Time       `json:"created_at"`
	// LeaseUntil: a claimed job is invisible to other workers until then, so a
	// worker that dies mid-job does not lose it.
	LeaseUntil time.Time `json:"lease_until,omitempty"`
}

// UserGrantReader is an optional capability of a Store: UserAndGrant reads a
// user (ErrNotFound if absent) and its grant (as GetGrant) together, where
// the backend can do it in one round trip (Redis: one pipeline). A token
// response needs both.
type UserGrantReader interface {
	UserAndGrant(ctx context.Context, userID string) (*User, *Grant, error)
}

// UserGrant is a user with its grant as UserAndGrant answers, Err
// included: what a store read beside something else.
type UserGrant struct {
	User  *User
	Grant *Grant
	Err   error
}

// SignInResolver is an optional capability of a Store: ResolveSignIn is
// ResolveIdentity that also says whether the user may have invitations
// awaiting its verified email (false: AwaitingVerification would list
// none), learnt in the same round trip as the user (Redis: its pipeline).
// A sign-in with a verified email asks.
type SignInResolver interface {
	ResolveSignIn(ctx context.Context, id Identity, p Profile, newUserID string, now time.Time) (u *User, created, mayAwait bool, err error)
}

// Store keeps users, invitations, grants and jobs. Implementations must be safe
// for concurrent use by several processes sharing the backend.
type Store interface {
	// ResolveIdentity returns the user linked to (id.Issuer, id.Subject),
	// creating the user (with newUserID) and the link when there is none, and
	// refreshing the user's profile from p. created reports a new user.
	ResolveIdentity(ctx context.Context, id Identity, p Profile, newUserID string, now time.Time) (u *User, created bool, err error)
	// LinkIdentity links an identity to an existing user (account linking).
	LinkIdentity(ctx context.Context, id Identity) error
	// RelinkIdentity moves the identity (id.Issuer, id.Subject) from the
	// user fromUserID to id.UserID in one atomic step (account linking once
	// an email is verified): ErrConflict when it is not linked to
	// fromUserID (any more), ErrNotFound when it or id.UserID does not exist.
	RelinkIdentity(ctx context.Context, id Identity, fromUserID string) error
	GetUser(ctx context.Context, id string) (*User, error)
	// UsersByEmail matches case-insensitively.
	UsersByEmail(ctx context.Context, email string) ([]User, error)
	Identities(ctx context.Context, userID string) ([]Identity, error)

	// GetGrant returns an empty grant (not ErrNotFound) for a user with none.
	GetGrant(ctx context.Context, userID string) (*Grant, error)
	// AddRoles adds roles to a user's grant (default roles at sign-up).
	// It and the three below record events with the change, in the same
	// atomic write, when something changed (see OutboxStore for the IDs
	// grant events are claimed under).
	AddRoles(ctx context.Context, userID string, roles []string, now time.Time, events ...OutboxEvent) (*Grant, error)
	RemoveGrantRole(ctx context.Context, userID, role string, now time.Time, events ...OutboxEvent) (*Grant, error)
	RemoveGrantClaim(ctx context.Context, userID, key string, now time.Time, events ...OutboxEvent) (*Grant, error)
	// SetGrantClaim sets (adds or changes) one claim of a user's grant: the
	// operator's way to change a held claim, which redemptions never do.
	SetGrantClaim(ctx context.Context, userID, key string, value any, now time.Time, events ...OutboxEvent) (*Grant, error)

	// CreateInvitation stores inv. If inv.ExternalID is set and a pending,
	// unexpired invitation with that ExternalID exists, it stores nothing and
	// returns that one with ErrConflict.
	CreateInvitation(ctx context.Context, inv *Invitation) (*Invitation, error)
	GetInvitation(ctx context.Context, id string) (*Invitation, error)
	GetInvitationByTokenHash(ctx context.Context, hash string) (*Invitation, error)
	// ListInvitations returns newest first (by email or external ID under a
	// prefix search, see search.go) and the cursor of the next page ("" at the end).
	ListInvitations(ctx context.Context, f InvitationFilter, now time.Time) ([]Invitation, string, error)
	// AwaitingVerification lists the pending invitations userID accepted
	// before its email was verified (AwaitingVerification.UserID), found
	// through an index kept with the invitation, whatever address it was
	// sent to (a domain policy matches others). Never a scan.
	AwaitingVerification(ctx context.Context, userID string, now time.Time) ([]Invitation, error)
	// RedeemInvitation atomically moves the invitation with this token hash
	// from pending to redeemed and merges its roles and claims into the
	// redeemer's grant, in one step: of N concurrent calls exactly one
	// succeeds. The others get ErrInvitationRedeemed; a revoked one
	// ErrInvitationRevoked; one past ExpiresAt at r.At ErrInvitationExpired.
	RedeemInvitation(ctx context.Context, tokenHash string, r Redemption) (*Invitation, *Grant, error)
	// RevokeInvitation: ErrInvitationRedeemed once redeemed, ErrInvitationDeclined
	// once declined; revoking twice is not an error.
	// events are recorded with the change, in the same atomic write (not
	// when the invitation already was revoked).
	RevokeInvitation(ctx context.Context, id string, at time.Time, events ...OutboxEvent) (*Invitation, error)
	// DeclineInvitation moves a pending, unexpired invitation to declined (the
	// invitee's answer, userID the account signed in): see ApplyDecline.
	DeclineInvitation(ctx context.Context, id, userID string, at time.Time, events ...OutboxEvent) (*Invitation, error)
	// ReplaceInvitationToken gives a pending (possibly expired) invitation a new
	// token hash and expiry; the old token stops working at once.
	// ErrInvitationRedeemed / ErrInvitationRevoked / ErrInvitationDeclined otherwise.
	ReplaceInvitationToken(ctx context.Context, id, newHash string, expiresAt, at time.Time, events ...OutboxEvent) (*Invitation, error)
	// UpdateInvitation applies fn to the stored invitation atomically (email
	// status, timeline events); fn must not change ID, TokenHash or Status.
	UpdateInvitation(ctx context.Context, id string, fn func(*Invitation) error) (*Invitation, error)

	// ReserveIdempotencyKey stores rec if the key is new (returns nil, nil).
	// Otherwise it returns the existing record and: ErrIdempotencyMismatch if
	// its RequestHash differs, ErrIdempotencyInProgress if it has no Status
	// yet, nil if it is complete (replay its Response).
	ReserveIdempotencyKey(ctx context.Context, rec *IdempotencyRecord) (*IdempotencyRecord, error)
	CompleteIdempotencyKey(ctx context.Context, key string, status int, response json.RawMessage) error
	// ReleaseIdempotencyKey forgets a reservation whose request failed, so a retry can run.
	ReleaseIdempotencyKey(ctx context.Context, key string) error

	EnqueueJob(ctx context.Context, j *Job) error
	// ClaimJobs leases up to limit jobs of kind whose RunAt <= now and whose
	// lease has lapsed, setting LeaseUntil = now+lease and Attempts++.
	ClaimJobs(ctx context.Context, kind string, now time.Time, limit int, lease time.Duration) ([]Job, error)
	CompleteJob(ctx context.Context, id string) error
	// RetryJob clears the lease and schedules the job again at runAt.
	RetryJob(ctx context.Context, id string, runAt time.Time, lastErr string) error
	// CompleteClaimedJob and RetryClaimedJob are CompleteJob and RetryJob
	// fenced by the claim: when the stored lease is no longer the one
	// ClaimJobs gave claimed (it lapsed and another worker claimed the job,
	// or the job was handed back), they change nothing and return
	// ErrLeaseLost. A worker that stalled past its lease therefore cannot
	// complete, or reschedule and so unlock, a job another worker now holds.
	CompleteClaimedJob(ctx context.Context, claimed *Job) error
	RetryClaimedJob(ctx context.Context, claimed *Job, runAt time.Time, lastErr string) error
	// JobCount counts queued jobs of kind (for queue-depth metrics).
	JobCount(ctx context.Context, kind string) (int, error)
	// PeekJobs reads up to limit queued jobs of kind in ID order, without
	// claiming or changing them (delivery logs, ordered lanes).
	PeekJobs(ctx context.Context, kind string, limit int) ([]Job, error)
	// GetJob reads one queued job by ID without claiming it; ErrNotFound
	// once it is completed.
	GetJob(ctx context.Context, id string) (*Job, error)

	OutboxStore
	FunnelStore
	UserStore

	// AppendAudit stores an audit record (ID and At set by the caller);
	// appending a record with an ID already stored changes nothing.
	AppendAudit(ctx context.Context, rec *AuditRecord) error
	// ListAudit returns records newest first and the cursor of the next page.
	ListAudit(ctx context.Context, f AuditFilter) ([]AuditRecord, string, error)
}

// The invitation state machine. Every backend applies these rules inside
// its own atomic step, so "what may happen to an invitation" is written once.

// redemptionRefusal says why inv cannot be redeemed at `at` (nil: it can).
func (inv *Invitation) redemptionRefusal(at time.Time) error {
	switch inv.EffectiveStatus(at) {
	case StatusPending:
		return nil
	case StatusRedeemed:
		return ErrInvitationRedeemed
	case StatusRevoked:
		return ErrInvitationRevoked
	case StatusDeclined:
		return ErrInvitationDeclined
	case StatusExpired:
		return ErrInvitationExpired
	}
	return fmt.Errorf("invitation %s has unknown status %q", inv.ID, inv.Status)
}

// ApplyRedemption moves a pending, unexpired invitation to redeemed by r
// (r.At must be set), or says why it cannot.
func (inv *Invitation) ApplyRedemption(r Redemption) error {
	if err := inv.redemptionRefusal(r.At); err != nil {
		return err
	}
	at := r.At
	inv.Status = StatusRedeemed
	inv.RedeemedAt = &at
	inv.RedeemedBy = r.UserID
	inv.RedeemedIdentity = r.Identity
	inv.RedeemedConnection = r.Connection
	inv.AwaitingVerification = nil
	inv.Events = append(inv.Events, Event{Type: "redeemed", At: at, Detail: map[string]string{"user_id": r.UserID, "connection": r.Connection}})
	inv.record(r.Events)
	return nil
}

// ApplyRevocation revokes inv; changed is false when it already was, and a
// redeemed invitation cannot be revoked (its grant is taken back instead).
func (inv *Invitation) ApplyRevocation(at time.Time, events []OutboxEvent) (changed bool, err error) {
	switch inv.Status {
	case StatusRedeemed:
		return false, ErrInvitationRedeemed
	case StatusRevoked:
		return false, nil
	case StatusDeclined:
		return false, ErrInvitationDeclined
	}
	inv.Status = StatusRevoked
	inv.RevokedAt = &at
	inv.Events = append(inv.Events, Event{Type: "revoked", At: at})
	inv.record(events)
	return true, nil
}

// ApplyDecline records the invitee's Decline: a pending, unexpired
// invitation becomes declined, a final status (it can no longer be redeemed,
// revoked or resent). changed is false when it already was declined;
// otherwise the refusal is the one a redemption would get.
func (inv *Invitation) ApplyDecline(userID string, at time.Time, events []OutboxEvent) (changed bool, err error) {
	if inv.Status == StatusDeclined {
		return false, nil
	}
	if err := inv.redemptionRefusal(at); err != nil {
		return false, err
	}
	inv.Status = StatusDeclined
	inv.DeclinedAt = &at
	inv.DeclinedBy = userID
	inv.Events = append(inv.Events, Event{Type: "declined", At: at, Detail: map[string]string{"user_id": userID}})
	inv.record(events)
	return true, nil
}

// ApplyNewToken gives a pending (possibly expired) invitation a new token
// hash and expiry: the old link dies.
func (inv *Invitation) ApplyNewToken(hash string, expiresAt, at time.Time, events []OutboxEvent) error {
	switch inv.Status {
	case StatusRedeemed:
		return ErrInvitationRedeemed
	case StatusRevoked:
		return ErrInvitationRevoked
	case StatusDeclined:
		return ErrInvitationDeclined
	}
	inv.TokenHash = hash
	inv.ExpiresAt = expiresAt
	inv.Events = append(inv.Events, Event{Type: "resent", At: at})
	inv.record(events)
	return nil
}
