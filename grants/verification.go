package grants

import (
	"context"
	"errors"
	"time"
)

// EventInvitationAwaitingVerification: a person accepted the invitation with
// an account whose email matches its policy but is not verified yet; it
// redeems once the upstream says the email is verified (Detail: user_id, email).
const EventInvitationAwaitingVerification = "invitation.awaiting_verification"

// AwaitingVerification records, on the invitation, who accepted it before
// their email was verified. It lives in the store, not in a cookie: the
// verification mail may be followed days later, in another browser.
type AwaitingVerification struct {
	UserID string `json:"user_id"`
	// Identity is the upstream account (iss|sub) that accepted.
	Identity string    `json:"identity"`
	Email    string    `json:"email"`
	Since    time.Time `json:"since"`
}

// AwaitVerification records that who accepted the invitation with this
// token hash but must verify their email first: one atomic write of the
// record, a timeline line and an invitation.awaiting_verification event.
// It returns the invitation's refusal when it cannot be redeemed at all
// (expired, used, another address: the EmailMatches error), nil without
// writing anything when who's email is already verified (redeem instead),
// and writes nothing when the same user already awaits it.
func (s *Service) AwaitVerification(ctx context.Context, hash string, who Redeemer) (*Invitation, error) {
	inv, err := s.CheckHash(ctx, hash)
	if err != nil {
		return inv, err
	}
	if err := EmailMatches(inv.EmailMatch, inv.Email, who.Email, false); !errors.Is(err, ErrEmailUnverified) {
		return inv, err // nil: "any" needs no verification; else a mismatch
	}
	if who.EmailVerified {
		return inv, nil
	}
	now := s.o.Now()
	ev := s.newEvent(EventInvitationAwaitingVerification, who.UserID, now, map[string]string{"user_id": who.UserID, "email": who.Email})
	updated, err := s.o.Store.UpdateInvitation(ctx, inv.ID, func(i *Invitation) error {
		switch {
		case i.TokenHash != hash:
			return ErrNotFound // replaced by a resend meanwhile
		case i.EffectiveStatus(now) != StatusPending:
			return ErrSkipUpdate
		case i.AwaitingVerification != nil && i.AwaitingVerification.UserID == who.UserID:
			return ErrSkipUpdate
		}
		i.AwaitingVerification = &AwaitingVerification{UserID: who.UserID, Identity: who.Identity, Email: who.Email, Since: now}
		i.Events = append(i.Events, Event{Type: "awaiting_verification", At: now, Detail: map[string]string{"user_id": who.UserID}})
		i.record([]OutboxEvent{ev})
		return nil
	})
	switch {
	case errors.Is(err, ErrSkipUpdate):
		return s.CheckHash(ctx, hash) // moved on (or already awaiting): say which
	case err != nil:
		return inv, err
	}
	s.recorded()
	return updated, nil
}

// AwaitsVerificationBy: inv is pending and userID accepted it before its
// email was verified. The stores' AwaitingVerification re-checks every
// index entry with it.
func (inv *Invitation) AwaitsVerificationBy(userID string, now time.Time) bool {
	a := inv.AwaitingVerification
	return a != nil && a.UserID == userID && inv.EffectiveStatus(now) == StatusPending
}

// AwaitingVerificationOf lists the pending invitations userID accepted
// before verifying its email, whatever address they were sent to.
func (s *Service) AwaitingVerificationOf(ctx context.Context, userID string) ([]Invitation, error) {
	if userID == "" {
		return nil, nil
	}
	return s.o.Store.AwaitingVerification(ctx, userID, s.o.Now())
}
