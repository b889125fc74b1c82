package grants

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ServiceOptions configure the invitation service.
type ServiceOptions struct {
	Store             Store
	DefaultTTL        time.Duration
	MaxTTL            time.Duration
	DefaultEmailMatch string
	// RoleCatalog, when not empty, is the set of roles an invitation may grant.
	RoleCatalog []string
	// PrivilegedRoles need CreateRequest.MayGrantPrivileged.
	PrivilegedRoles []string
	// ClaimsNamespace prefixes claim names in tokens; claim names are checked
	// as they appear there (ValidateClaimName).
	ClaimsNamespace string
	// KnownClient reports whether client_id names a registered client.
	KnownClient func(string) bool
	// SealLink returns the invitation's link for token, sealed for the mail
	// queue; nil when this usher sends no mail.
	SealLink func(inv *Invitation, token string) (string, error)
	// UpstreamSubjects lists a user's upstream accounts a grant is mirrored
	// to (the Auth0 user IDs); nil when grants are not mirrored.
	UpstreamSubjects func(ctx context.Context, userID string) ([]string, error)
	// Recorded is called after a use case stored events (to wake this
	// process's outbox runner at once); optional.
	Recorded func()
	Now      func() time.Time
}

// Service is every invitation use case: Create, Check, Redeem, Decline,
// Revoke, Resend. Each one that changes an invitation records its events
// (audit, webhooks, mail, the Auth0 mirror consume them) in the same atomic
// store write as the change, and returns typed refusals (ErrNotFound,
// ErrInvitationRedeemed, *ValidationError, …) for the caller to explain.
type Service struct{ o ServiceOptions }

func NewService(o ServiceOptions) *Service {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.DefaultTTL <= 0 {
		o.DefaultTTL = 7 * 24 * time.Hour
	}
	if o.MaxTTL <= 0 {
		o.MaxTTL = 30 * 24 * time.Hour
	}
	if o.DefaultEmailMatch == "" {
		o.DefaultEmailMatch = MatchAny
	}
	return &Service{o: o}
}

// newEvent is an event of type typ by actor, now.
func (s *Service) newEvent(typ, actor string, at time.Time, detail map[string]string) OutboxEvent {
	return OutboxEvent{ID: "evt_" + randomID(), Type: typ, At: at, Actor: actor, Detail: detail}
}

func (s *Service) recorded() {
	if s.o.Recorded != nil {
		s.o.Recorded()
	}
}

// sealLink puts inv's link for token, sealed, on ev when inv is mailed
// (Invitation.record then stores the status "queued" with the event), or
// says why this usher cannot mail it.
func (s *Service) sealLink(inv *Invitation, token, hash string, ev *OutboxEvent) (failure string) {
	if !inv.SendEmail {
		return ""
	}
	if s.o.SealLink == nil {
		return "mail is not configured on this usher (mail.smtp.host)"
	}
	sealed, err := s.o.SealLink(inv, token)
	if err != nil {
		return "the link could not be sealed for the mail queue"
	}
	ev.SealedLink, ev.TokenHash = sealed, hash
	return ""
}

// Create validates and stores an invitation with its created event (and its
// mail, when it is mailed). When a pending invitation with the same
// external_id exists, it returns that one with existed=true and no token
// (its link was shown when it was created), and records nothing.
func (s *Service) Create(ctx context.Context, req CreateRequest, actor string) (inv *Invitation, token string, existed bool, err error) {
	inv, _, err = s.Validate(req)
	if err != nil {
		return nil, "", false, err
	}
	token, inv.TokenHash = NewToken()
	ev := s.newEvent(EventInvitationCreated, actor, inv.CreatedAt,
		map[string]string{"email": inv.Email, "roles": strings.Join(inv.Roles, " ")})
	if failure := s.sealLink(inv, token, inv.TokenHash, &ev); failure != "" {
		inv.EmailStatus, inv.EmailError = "failed", failure
	}
	inv.record([]OutboxEvent{ev})
	stored, err := s.o.Store.CreateInvitation(ctx, inv)
	if errors.Is(err, ErrConflict) && stored != nil {
		return stored, "", true, nil
	}
	if err != nil {
		return nil, "", false, fmt.Errorf("storing the invitation: %w", err)
	}
	s.recorded()
	return stored, token, false, nil
}

// Check looks a token up without consuming it and says why it is unusable:
// ErrNotFound (unknown, malformed, or replaced by a resend),
// ErrInvitationRedeemed, ErrInvitationRevoked, ErrInvitationDeclined or
// ErrInvitationExpired.
func (s *Service) Check(ctx context.Context, token string) (*Invitation, error) {
	hash, ok := ParseToken(token)
	if !ok {
		return nil, ErrNotFound
	}
	return s.CheckHash(ctx, hash)
}

// CheckHash is Check for a stored hash.
func (s *Service) CheckHash(ctx context.Context, hash string) (*Invitation, error) {
	inv, err := s.o.Store.GetInvitationByTokenHash(ctx, hash)
	if err != nil {
		return nil, err
	}
	switch inv.EffectiveStatus(s.o.Now()) {
	case StatusRedeemed:
		return inv, ErrInvitationRedeemed
	case StatusRevoked:
		return inv, ErrInvitationRevoked
	case StatusDeclined:
		return inv, ErrInvitationDeclined
	case StatusExpired:
		return inv, ErrInvitationExpired
	}
	return inv, nil
}

// Revoke revokes an invitation; ErrInvitationRedeemed once it was used.
// Revoking a revoked invitation changes and records nothing.
func (s *Service) Revoke(ctx context.Context, id, actor string) (*Invitation, error) {
	now := s.o.Now()
	inv, err := s.o.Store.RevokeInvitation(ctx, id, now, s.newEvent(EventInvitationRevoked, actor, now, nil))
	if err == nil {
		s.recorded()
	}
	return inv, err
}

// Resend gives a pending (or expired) invitation a new token and a new
// expiry of the default lifetime; the old link dies at once. It is mailed
// again when it was meant to be mailed.
func (s *Service) Resend(ctx context.Context, id, actor string) (*Invitation, string, error) {
	cur, err := s.o.Store.GetInvitation(ctx, id)
	if err != nil {
		return nil, "", err
	}
	ttl := s.o.DefaultTTL
	if orig := cur.ExpiresAt.Sub(cur.CreatedAt); orig > 0 && orig < ttl {
		ttl = orig // keep a deliberately short lifetime short
	}
	token, hash := NewToken()
	now := s.o.Now()
	ev := s.newEvent(EventInvitationResent, actor, now, nil)
	s.sealLink(cur, token, hash, &ev) // unmailable: the status stays what it was
	inv, err := s.o.Store.ReplaceInvitationToken(ctx, id, hash, now.Add(ttl), now, ev)
	if err != nil {
		return nil, "", err
	}
	s.recorded()
	return inv, token, nil
}

// Decline records the invitee's Decline of the invitation with this token
// hash (userID: the account signed in); it stays declined for good.
func (s *Service) Decline(ctx context.Context, hash, userID string, detail map[string]string) (*Invitation, error) {
	inv, err := s.o.Store.GetInvitationByTokenHash(ctx, hash)
	if err != nil {
		return nil, err
	}
	now := s.o.Now()
	inv, err = s.o.Store.DeclineInvitation(ctx, inv.ID, userID, now, s.newEvent(EventInvitationDeclined, userID, now, detail))
	if err == nil {
		s.recorded()
	}
	return inv, err
}
