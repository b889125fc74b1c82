package webhooks

// Event constructors, so every caller sends the same data for a type.

import (
	"strconv"
	"time"

	"github.com/usher-oidc/usher/grants"
)

func invitationData(inv *grants.Invitation) map[string]any {
	d := map[string]any{
		"invitation_id": inv.ID,
		"email":         inv.Email,
		"roles":         nonNil(inv.Roles),
		"expires_at":    inv.ExpiresAt.UTC(),
	}
	if inv.ExternalID != "" {
		d["external_id"] = inv.ExternalID
	}
	if inv.ClientID != "" {
		d["client_id"] = inv.ClientID
	}
	if inv.Inviter != "" {
		d["inviter"] = inv.Inviter
	}
	if len(inv.Metadata) > 0 {
		d["metadata"] = inv.Metadata
	}
	return d
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// InvitationCreatedEvent is invitation.created.
func InvitationCreatedEvent(inv *grants.Invitation) WebhookEvent {
	return idempotent(WebhookEvent{Type: WebhookInvitationCreated, Timestamp: inv.CreatedAt, Data: invitationData(inv)},
		"invitation.created:"+inv.ID)
}

// InvitationRedeemedEvent is invitation.redeemed for an invitation as
// RedeemInvitation returned it. signup: the redeemer's usher user was created
// by this sign-in. email and verified are what the upstream said about the
// redeemer; the outcome sent is "exact" (same address, verified), "domain"
// (same domain, verified) or "none" (allowed by the policy "any").
func InvitationRedeemedEvent(inv *grants.Invitation, signup bool, email string, verified bool) WebhookEvent {
	d := invitationData(inv)
	d["user_id"] = inv.RedeemedBy
	d["connection"] = inv.RedeemedConnection
	d["signup"] = signup
	outcome := "none"
	switch {
	case verified && email != "" && grants.SameEmail(email, inv.Email):
		outcome = "exact"
	case verified && grants.EmailDomain(email) != "" && grants.EmailDomain(email) == grants.EmailDomain(inv.Email):
		outcome = "domain"
	}
	d["email_match"] = map[string]any{"policy": inv.EmailMatch, "outcome": outcome}
	ts := time.Time{}
	if inv.RedeemedAt != nil {
		ts = *inv.RedeemedAt
	}
	return idempotent(WebhookEvent{Type: WebhookInvitationRedeemed, Timestamp: ts, Data: d}, "invitation.redeemed:"+inv.ID)
}

// InvitationRevokedEvent is invitation.revoked.
func InvitationRevokedEvent(inv *grants.Invitation) WebhookEvent {
	ts := time.Time{}
	if inv.RevokedAt != nil {
		ts = *inv.RevokedAt
	}
	return idempotent(WebhookEvent{Type: WebhookInvitationRevoked, Timestamp: ts, Data: invitationData(inv)}, "invitation.revoked:"+inv.ID)
}

// InvitationDeclinedEvent is invitation.declined: the invitee pressed
// Decline on the accept page; user_id is the account they were signed in with.
func InvitationDeclinedEvent(inv *grants.Invitation) WebhookEvent {
	d := invitationData(inv)
	ts := time.Time{}
	if inv.DeclinedAt != nil {
		ts = *inv.DeclinedAt
	}
	if inv.DeclinedBy != "" {
		d["user_id"] = inv.DeclinedBy
	}
	return idempotent(WebhookEvent{Type: WebhookInvitationDeclined, Timestamp: ts, Data: d}, "invitation.declined:"+inv.ID)
}

// InvitationAwaitingVerificationEvent is invitation.awaiting_verification:
// the account user_id (email) accepted, and the invitation is redeemed once
// the upstream says that email is verified. One per recorded event (an
// invitation may wait for more than one account over its life).
func InvitationAwaitingVerificationEvent(inv *grants.Invitation, ev grants.OutboxEvent) WebhookEvent {
	d := invitationData(inv)
	d["user_id"], d["account_email"] = ev.Detail["user_id"], ev.Detail["email"]
	return idempotent(WebhookEvent{Type: WebhookInvitationAwaitingVerification, Timestamp: ev.At, Data: d}, "invitation.awaiting_verification:"+ev.ID)
}

// idempotent gives e the ID when it has the timestamp that must come with one.
func idempotent(e WebhookEvent, id string) WebhookEvent {
	if !e.Timestamp.IsZero() {
		e.ID = id
	}
	return e
}

// InvitationExpiredEvent is invitation.expired (ExpireSweep sends it).
func InvitationExpiredEvent(inv *grants.Invitation) WebhookEvent {
	return WebhookEvent{Type: WebhookInvitationExpired, Timestamp: inv.ExpiresAt, Data: invitationData(inv),
		ID: "invitation.expired:" + inv.ID + ":" + strconv.FormatInt(inv.ExpiresAt.UnixNano(), 10)}
}

// UserCreatedEvent is user.created; connection is the upstream connection
// of the sign-up ("" if unknown).
func UserCreatedEvent(u *grants.User, connection string) WebhookEvent {
	d := map[string]any{"user_id": u.ID, "email": u.Email, "email_verified": u.EmailVerified}
	if u.Name != "" {
		d["name"] = u.Name
	}
	if connection != "" {
		d["connection"] = connection
	}
	return idempotent(WebhookEvent{Type: WebhookUserCreated, Timestamp: u.CreatedAt, Data: d}, "user.created:"+u.ID)
}

// GrantChangedEvent is grant.changed with the grant as it is now; reason
// says why (e.g. "invitation_redeemed", "default_roles", "role_removed",
// "claim_removed").
func GrantChangedEvent(g *grants.Grant, reason string) WebhookEvent {
	claims := g.Claims
	if claims == nil {
		claims = map[string]any{}
	}
	return WebhookEvent{Type: WebhookGrantChanged, Timestamp: g.UpdatedAt, Data: map[string]any{
		"user_id": g.UserID, "roles": nonNil(g.Roles), "claims": claims,
		"invitations": nonNil(g.Invitations), "reason": reason,
	}}
}
