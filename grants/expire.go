package grants

import (
	"context"
	"errors"
	"fmt"
	"strconv"
)

// EventInvitationExpired is recorded once per expiry of a pending
// invitation (a resend gives it a new expiry, which expires anew).
const EventInvitationExpired = "invitation.expired"

// Expire notes every pending invitation past its expiry: the timeline gets
// "expired" and the outbox an invitation.expired event, in one write per
// invitation. Replicas may sweep at once: an expiry is noted once (the write
// re-checks inside the store's atomic step). It returns how many it noted.
func (s *Service) Expire(ctx context.Context) (int, error) {
	now := s.o.Now()
	noted, cursor := 0, ""
	for {
		invs, next, err := s.o.Store.ListInvitations(ctx, InvitationFilter{Status: StatusExpired, Limit: 500, Cursor: cursor}, now)
		if err != nil {
			return noted, fmt.Errorf("expiry sweep: %w", err)
		}
		for i := range invs {
			if err := ctx.Err(); err != nil {
				return noted, err
			}
			inv := &invs[i]
			if ExpiryNoted(inv) {
				continue
			}
			expiresAt := inv.ExpiresAt
			_, err := s.o.Store.UpdateInvitation(ctx, inv.ID, func(i *Invitation) error {
				if ExpiryNoted(i) || !i.ExpiresAt.Equal(expiresAt) || i.EffectiveStatus(now) != StatusExpired {
					return ErrSkipUpdate
				}
				i.Events = append(i.Events, Event{Type: "expired", At: i.ExpiresAt})
				i.record([]OutboxEvent{{ID: "evt_expired_" + strconv.FormatInt(i.ExpiresAt.UnixNano(), 36) + "_" + i.ID,
					Type: EventInvitationExpired, At: i.ExpiresAt, Actor: "usher", Detail: map[string]string{"email": i.Email}}})
				return nil
			})
			switch {
			case err == nil:
				noted++
			case errors.Is(err, ErrSkipUpdate), errors.Is(err, ErrNotFound):
			default:
				return noted, fmt.Errorf("expiry sweep: noting %s: %w", inv.ID, err)
			}
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if noted > 0 {
		s.recorded()
	}
	return noted, nil
}

// ExpiryNoted: the timeline already has the "expired" event of the current
// expiry.
func ExpiryNoted(inv *Invitation) bool {
	for _, e := range inv.Events {
		if e.Type == "expired" && e.At.Equal(inv.ExpiresAt) {
			return true
		}
	}
	return false
}
