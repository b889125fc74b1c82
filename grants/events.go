package grants

import (
	"context"
	"slices"
	"time"
)

// Grant events. A use case of Service records them in the same atomic store
// write as the state change they describe: they travel inside the
// invitation's record (Invitation.Outbox) until the outbox runner has handed
// them to every consumer (audit log, mail, webhooks, the Auth0 mirror). So no
// state change is stored without its events, and no event without its
// state change.
const (
	EventInvitationCreated  = "invitation.created"
	EventInvitationResent   = "invitation.resent"
	EventInvitationRevoked  = "invitation.revoked"
	EventInvitationDeclined = "invitation.declined"
	EventInvitationRedeemed = "invitation.redeemed"
	// EventGrantChanged: an operator or usher itself changed a user's grant
	// (Detail says how: removed_role, removed_claim, set_claim, added_role,
	// and the reason).
	EventGrantChanged = "grant.changed"
)

// userOutboxPrefix marks a user's grant in the outbox index. Store keys
// never hold NUL, so it cannot be read as an invitation ID.
const userOutboxPrefix = "\x00user:"

// UserOutboxID is the outbox index ID of userID's grant events.
func UserOutboxID(userID string) string { return userOutboxPrefix + userID }

// OutboxUser returns the user whose grant events id stands for, or false
// when id is an invitation ID.
func OutboxUser(id string) (string, bool) {
	if len(id) > len(userOutboxPrefix) && id[:len(userOutboxPrefix)] == userOutboxPrefix {
		return id[len(userOutboxPrefix):], true
	}
	return "", false
}

// OutboxEvent is one recorded happening, waiting for its consumers. Its ID is
// unique and stable: consumers are idempotent by it, so an event handed over
// twice (a runner that crashed before its acknowledgement) is delivered once.
type OutboxEvent struct {
	ID   string    `json:"id"`
	Type string    `json:"type"`
	At   time.Time `json:"at"`
	// Actor is who did it: "client:<id>", a user ID, or "config:…".
	Actor string `json:"actor,omitempty"`
	// Detail is the audit log's detail (email, roles, connection…).
	Detail map[string]string `json:"detail,omitempty"`
	// SealedLink, on created/resent events of a mailed invitation: the
	// invitation link, sealed (the token is never stored in clear).
	SealedLink string `json:"sealed_link,omitempty"`
	// UpstreamUser, on redeemed events: the upstream account's subject (the
	// Auth0 user ID a grant mirror writes to).
	UpstreamUser string `json:"upstream_user,omitempty"`
	// TokenHash, with SealedLink: the token the link holds (a mail whose
	// token was replaced by a resend is not sent).
	TokenHash string `json:"token_hash,omitempty"`
	// Conflicts, on redeemed events: offered claims the user already held
	// with another value (kept).
	Conflicts []ClaimConflict `json:"claim_conflicts,omitempty"`
	// UserID, on grant events: whose grant changed.
	UserID string `json:"user_id,omitempty"`
	// UpstreamUsers, on grant events that take something back: the
	// upstream accounts (Auth0 user IDs) of the user to take it back from.
	UpstreamUsers []string `json:"upstream_users,omitempty"`
	// Signup, on redeemed events: this sign-in created the usher user.
	Signup bool `json:"signup,omitempty"`
	// ConnectionSource, on redeemed events: where the redeemer's connection
	// name came from ("management_api", "sub_prefix"; "" when unknown).
	ConnectionSource string `json:"connection_source,omitempty"`
	// Email and EmailVerified, on redeemed events: what the upstream said.
	Email         string `json:"email,omitempty"`
	EmailVerified bool   `json:"email_verified,omitempty"`
}

// OutboxStore is the part of Store the outbox runner uses.
type OutboxStore interface {
	// ClaimOutbox leases up to limit invitations (or users' grants) that
	// hold events not yet acknowledged and whose lease has lapsed (no other
	// runner works on them), for lease; it returns their IDs: an
	// invitation's ID, or UserOutboxID of a user whose grant holds events.
	ClaimOutbox(ctx context.Context, now time.Time, limit int, lease time.Duration) ([]string, error)
	// AckOutbox removes the events with these IDs from the invitation's
	// (or grant's) outbox in one atomic write; once none is left the entry
	// leaves the outbox index, if this runner still holds its lease (a
	// writer that added events since made it due again). Unknown IDs are
	// ignored.
	AckOutbox(ctx context.Context, invitationID string, eventIDs []string) error
}

// OutboxBatcher is an optional capability of an OutboxStore: reading and
// acknowledging the invitations of one claim in a few round trips instead of
// a few per invitation (Redis pipelines them; bbolt uses one transaction).
type OutboxBatcher interface {
	// GetInvitations reads the invitations with these IDs; a missing one is nil.
	GetInvitations(ctx context.Context, ids []string) ([]*Invitation, error)
	// AckOutboxBatch is AckOutbox for each invitation ID in acks.
	AckOutboxBatch(ctx context.Context, acks map[string][]string) error
}

// OutboxReadAcker is an optional capability of an OutboxBatcher: a claim's
// records are read once, and their acknowledgement is checked against that
// read instead of reading them again (Redis compares each record's version
// as read; a record written since takes AckOutbox's path).
type OutboxReadAcker interface {
	// ReadOutbox reads the invitations with these IDs for their events to
	// be handed over.
	ReadOutbox(ctx context.Context, ids []string) (*OutboxRead, error)
	// AckOutboxRead is AckOutboxBatch for the invitations of read, which it
	// may change (their acknowledged events are removed).
	AckOutboxRead(ctx context.Context, read *OutboxRead, acks map[string][]string) error
}

// OutboxRead is what ReadOutbox read: per ID, the invitation (nil when
// missing) and the store's own version of its record.
type OutboxRead struct {
	IDs         []string
	Invitations []*Invitation
	Versions    []string
}

// record appends events to the invitation's outbox. An event carrying a
// sealed link puts a mail in the queue, which the stored status says in the
// same write.
func (inv *Invitation) record(events []OutboxEvent) {
	inv.Outbox = append(inv.Outbox, events...)
	for _, e := range events {
		if e.SealedLink != "" {
			inv.EmailStatus, inv.EmailError = "queued", ""
		}
	}
}

// AckEvents removes the events with these IDs from inv's outbox (the
// backends' AckOutbox applies it inside their atomic step); it reports
// whether anything changed.
func (inv *Invitation) AckEvents(ids []string) bool {
	var changed bool
	inv.Outbox, changed = ackEvents(inv.Outbox, ids)
	return changed
}

// AckEvents is Invitation.AckEvents for a grant's outbox.
func (g *Grant) AckEvents(ids []string) bool {
	var changed bool
	g.Outbox, changed = ackEvents(g.Outbox, ids)
	return changed
}

func ackEvents(events []OutboxEvent, ids []string) ([]OutboxEvent, bool) {
	n := len(events)
	events = slices.DeleteFunc(events, func(e OutboxEvent) bool { return slices.Contains(ids, e.ID) })
	if len(events) == 0 {
		events = nil
	}
	return events, len(events) != n
}
