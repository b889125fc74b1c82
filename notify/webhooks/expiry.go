package webhooks

import (
	"context"
	"errors"
	"fmt"

	"github.com/usher-oidc/usher/grants"
)

// ExpireSweep finds pending invitations past their expiry without an
// "expired" timeline event for that expiry, emits invitation.expired and then
// appends the event. The emit is idempotent (its ID is derived from the
// invitation and its expiry), so a sweep that crashes between the two steps,
// or two replicas sweeping at once, still deliver it once.
func (w *Webhooks) ExpireSweep(ctx context.Context) error {
	now := w.o.Now()
	cursor := ""
	for {
		invs, next, err := w.o.Store.ListInvitations(ctx, grants.InvitationFilter{Status: grants.StatusExpired, Limit: 500, Cursor: cursor}, now)
		if err != nil {
			return fmt.Errorf("webhooks: expiry sweep: %w", err)
		}
		for i := range invs {
			if err := ctx.Err(); err != nil {
				return err
			}
			inv := &invs[i]
			if expiryNoted(inv) || inv.EffectiveStatus(now) != grants.StatusExpired {
				continue
			}
			if err := w.Emit(ctx, InvitationExpiredEvent(inv)); err != nil {
				w.log.ErrorContext(ctx, "emit invitation.expired", "invitation_id", inv.ID, "error", err)
				continue // not marked: the next sweep tries again
			}
			expiresAt := inv.ExpiresAt
			_, err := w.o.Store.UpdateInvitation(ctx, inv.ID, func(i *grants.Invitation) error {
				if expiryNoted(i) || !i.ExpiresAt.Equal(expiresAt) || i.EffectiveStatus(now) != grants.StatusExpired {
					return grants.ErrSkipUpdate
				}
				i.Events = append(i.Events, grants.Event{Type: "expired", At: i.ExpiresAt})
				return nil
			})
			if err != nil && !errors.Is(err, grants.ErrSkipUpdate) && !errors.Is(err, grants.ErrNotFound) {
				w.log.ErrorContext(ctx, "note invitation expiry", "invitation_id", inv.ID, "error", err)
			}
		}
		if next == "" {
			return nil
		}
		cursor = next
	}
}

// expiryNoted: the timeline already has the "expired" event of the current
// expiry (a resend gives a new expiry, which expires anew).
func expiryNoted(inv *grants.Invitation) bool {
	for _, e := range inv.Events {
		if e.Type == "expired" && e.At.Equal(inv.ExpiresAt) {
			return true
		}
	}
	return false
}
