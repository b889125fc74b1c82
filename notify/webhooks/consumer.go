package webhooks

import (
	"context"
	"fmt"

	"github.com/usher-oidc/usher/grants"
)

// Consume turns a recorded grant event into its webhooks. Every webhook it
// emits has an ID derived from the event, so an event handed over twice is
// delivered once.
func (w *Webhooks) Consume(ctx context.Context, inv *grants.Invitation, ev grants.OutboxEvent) error {
	if inv == nil {
		return w.grantEvent(ctx, ev)
	}
	switch ev.Type {
	case grants.EventInvitationCreated:
		return w.Emit(ctx, InvitationCreatedEvent(inv))
	case grants.EventInvitationRevoked:
		return w.Emit(ctx, InvitationRevokedEvent(inv))
	case grants.EventInvitationDeclined:
		return w.Emit(ctx, InvitationDeclinedEvent(inv))
	case grants.EventInvitationRedeemed:
		return w.redeemed(ctx, inv, ev)
	case grants.EventInvitationAwaitingVerification:
		return w.Emit(ctx, InvitationAwaitingVerificationEvent(inv, ev))
	case grants.EventInvitationExpired:
		at := *inv
		at.ExpiresAt = ev.At // the expiry this event is about (a resend may have moved it)
		return w.Emit(ctx, InvitationExpiredEvent(&at))
	}
	return nil // e.g. resent: no webhook
}

func (w *Webhooks) redeemed(ctx context.Context, inv *grants.Invitation, ev grants.OutboxEvent) error {
	e := InvitationRedeemedEvent(inv, ev.Signup, ev.Email, ev.EmailVerified)
	if len(ev.Conflicts) > 0 {
		e.Data["claim_conflicts"] = ev.Conflicts
	}
	if ev.ConnectionSource != "" {
		e.Data["connection_source"] = ev.ConnectionSource
	}
	if err := w.Emit(ctx, e); err != nil {
		return err
	}
	g, err := w.o.Store.GetGrant(ctx, inv.RedeemedBy)
	if err != nil {
		return fmt.Errorf("webhooks: grant of %s: %w", inv.RedeemedBy, err)
	}
	gc := GrantChangedEvent(g, "invitation_redeemed")
	gc.ID, gc.Timestamp = "grant.changed:"+ev.ID, ev.At
	return w.Emit(ctx, gc)
}

// grantEvent sends grant.changed with the grant as it is now, and
// user.erased.
func (w *Webhooks) grantEvent(ctx context.Context, ev grants.OutboxEvent) error {
	if ev.Type == grants.EventUserErased {
		return w.Emit(ctx, WebhookEvent{ID: "user.erased:" + ev.ID, Type: WebhookUserErased, Timestamp: ev.At,
			Data: map[string]any{"user_id": ev.UserID}})
	}
	if ev.Type != grants.EventGrantChanged {
		return nil
	}
	g, err := w.o.Store.GetGrant(ctx, ev.UserID)
	if err != nil {
		return fmt.Errorf("webhooks: grant of %s: %w", ev.UserID, err)
	}
	gc := GrantChangedEvent(g, ev.Detail["reason"])
	gc.ID, gc.Timestamp = "grant.changed:"+ev.ID, ev.At
	return w.Emit(ctx, gc)
}
