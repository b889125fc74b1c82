package grants

import (
	"context"
	"strings"
)

// Redeemer is the person signing in.
type Redeemer struct {
	UserID     string
	Identity   string // iss|sub
	Connection string
	// ConnectionSource says where Connection came from ("management_api",
	// "sub_prefix"; "" when unknown), for the redeemed event.
	ConnectionSource string
	Email            string
	EmailVerified    bool
	// UpstreamUser is the upstream account's subject when the grant is
	// mirrored to it (the Auth0 user ID); "" when it is not.
	UpstreamUser string
	// Signup: this sign-in created the usher user.
	Signup bool
	// Approve, when set, is asked last, before the redemption commits (the
	// redemption hook): it may refuse (*DeniedError) or add claims.
	Approve func(ctx context.Context, inv *Invitation) (map[string]any, error)
}

// DeniedError is a refusal by the redemption hook, with the reason to show.
type DeniedError struct{ Reason string }

func (e *DeniedError) Error() string { return "redemption denied: " + e.Reason }

// Redeem applies the invitation's email policy, then redeems it atomically
// (single use under concurrency is the store's guarantee) with its redeemed
// event. conflicts are the offered claims the user already held with another
// value: they were kept.
func (s *Service) Redeem(ctx context.Context, hash string, who Redeemer) (inv *Invitation, g *Grant, conflicts []ClaimConflict, err error) {
	// The store may redeem from the record CheckHash read (ReadMemo).
	ctx = WithReadMemo(ctx)
	inv, err = s.CheckHash(ctx, hash)
	if err != nil {
		return inv, nil, nil, err
	}
	if err := EmailMatches(inv.EmailMatch, inv.Email, who.Email, who.EmailVerified); err != nil {
		return inv, nil, nil, err
	}
	var extra map[string]any
	if who.Approve != nil {
		if extra, err = who.Approve(ctx, inv); err != nil {
			return inv, nil, nil, err
		}
	}
	// The event is written with the redemption, so the conflicts it reports
	// come from the grant as it stands just before (a merge never changes a
	// held claim, so they are the ones the merge keeps).
	held, err := s.o.Store.GetGrant(ctx, who.UserID)
	if err != nil {
		return inv, nil, nil, err
	}
	conflicts = ClaimConflicts(held, RedemptionClaims(inv, extra))
	now := s.o.Now()
	detail := map[string]string{"connection": who.Connection}
	if len(conflicts) > 0 {
		detail["claims_kept"] = ConflictNames(conflicts)
	}
	ev := s.newEvent(EventInvitationRedeemed, who.UserID, now, detail)
	ev.ConnectionSource = who.ConnectionSource
	ev.UpstreamUser, ev.Signup, ev.Email, ev.EmailVerified, ev.Conflicts = who.UpstreamUser, who.Signup, who.Email, who.EmailVerified, conflicts
	inv, g, err = s.o.Store.RedeemInvitation(ctx, hash, Redemption{UserID: who.UserID, Identity: who.Identity,
		Connection: who.Connection, At: now, Claims: extra, Events: []OutboxEvent{ev}})
	if err != nil {
		return inv, nil, nil, err
	}
	s.recorded()
	return inv, g, conflicts, nil
}

// ConflictNames lists the conflicting claim names, comma-separated.
func ConflictNames(cs []ClaimConflict) string {
	names := make([]string, len(cs))
	for i, c := range cs {
		names[i] = c.Claim
	}
	return strings.Join(names, ",")
}
