package grants

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/usher-oidc/usher/store/errs"
)

// User events, recorded in the user's grant outbox (UserOutboxID) with the
// change they describe.
const (
	// EventUserSignedOutEverywhere: an operator ended every session and
	// refresh token of the user.
	EventUserSignedOutEverywhere = "user.signed_out_everywhere"
	// EventUserErased: an operator erased the user (GDPR art. 17). Detail
	// names the roles the user held (so the Auth0 mirror takes them back)
	// and never an email.
	EventUserErased = "user.erased"
)

// UserFilter selects users for the admin list.
type UserFilter struct {
	// Query is a case-insensitive prefix of the email ("" lists everyone).
	Query string
	// Limit is the page size (default 50, capped at 1000); Cursor the
	// opaque value the previous page returned.
	Limit  int
	Cursor string
}

// PageSize is f.Limit with the default and the cap applied.
func (f *UserFilter) PageSize() int {
	switch {
	case f.Limit <= 0:
		return 50
	case f.Limit > 1000:
		return 1000
	}
	return f.Limit
}

// UserStore is the part of Store behind the admin's user list, sign out
// everywhere and erase.
type UserStore interface {
	// ListUsers returns users ordered by lowercase email, then ID (users
	// without an email first), from a maintained index, and the cursor of
	// the next page ("" at the end). A malformed cursor is errs.ErrBadCursor.
	ListUsers(ctx context.Context, f UserFilter) ([]User, string, error)
	// SignOutUser sets the grant's SignedOutAt to at and records events with
	// it, in one atomic write.
	SignOutUser(ctx context.Context, userID string, at time.Time, events ...OutboxEvent) (*Grant, error)
	// EraseUser removes the user, its email index entries and identities,
	// and empties its grant (roles, claims, redeemed invitation IDs) down
	// to SignedOutAt = at and the events, which it records, in one atomic
	// write on bbolt; on Redis the grant's script is that write (the
	// decision and the events) and the other records follow in a sequence
	// that a repeated call completes. ErrNotFound when there is no user.
	EraseUser(ctx context.Context, userID string, at time.Time, events ...OutboxEvent) error
}

// SignedOut reports whether something usher issued to the grant's user at
// issued (a browser session, a refresh token family, an access token) was
// ended by a sign out everywhere. A zero issued (a record older than the
// field) counts as before any sign-out.
func (g *Grant) SignedOut(issued time.Time) bool {
	return g != nil && g.SignedOutAt != nil && !issued.After(*g.SignedOutAt)
}

// SignOutEverywhere ends every browser session, refresh token family and
// access token of the user. It is a per-user "not before" instant (as
// Keycloak's user not-before) kept with the grant rather than an index of
// the user's sessions and families: every token response, silent sign-in
// and introspection already reads the grant, so the check costs no extra
// read, the write is one record (with its event), and nothing has to be
// enumerated — a family or session created before the instant is dead
// wherever it lives. ErrNotFound when the user does not exist.
func (s *Service) SignOutEverywhere(ctx context.Context, userID, actor string) (*Grant, error) {
	if _, err := s.o.Store.GetUser(ctx, userID); err != nil {
		return nil, err
	}
	now := s.o.Now()
	ev := s.newEvent(EventUserSignedOutEverywhere, actor, now, nil)
	ev.UserID = userID
	g, err := s.o.Store.SignOutUser(ctx, userID, now, ev)
	if err != nil {
		return nil, fmt.Errorf("signing %s out everywhere: %w", userID, err)
	}
	s.recorded()
	return g, nil
}

// ErasedEmail is the pseudonym that replaces an erased user's email on the
// invitations they redeemed: stable per user, so the invitations of one
// erased person still group together, and not reversible to the address.
func ErasedEmail(userID string) string {
	sum := sha256.Sum256([]byte("usher-erased\x00" + userID))
	return "erased-" + hex.EncodeToString(sum[:6])
}

// EraseUser removes the user and their personal data from usher: it signs
// them out everywhere, replaces the email on the invitations they redeemed
// by ErasedEmail (status and timeline stay, the timeline's emails go), then
// erases the user, identities and grant in one write that records
// user.erased. The event names the roles held and the upstream accounts, so
// the Auth0 mirror removes usher's roles and app_metadata there (it never
// deletes the Auth0 user). ErrNotFound when there is no such user.
func (s *Service) EraseUser(ctx context.Context, userID, actor string) error {
	if _, err := s.o.Store.GetUser(ctx, userID); err != nil {
		return err
	}
	g, err := s.o.Store.GetGrant(ctx, userID)
	if err != nil {
		return fmt.Errorf("erasing %s: reading the grant: %w", userID, err)
	}
	pseudonym := ErasedEmail(userID)
	for _, id := range g.Invitations {
		if err := s.pseudonymize(ctx, id, userID, pseudonym); err != nil {
			return err
		}
	}
	now := s.o.Now()
	ev := s.newEvent(EventUserErased, actor, now, map[string]string{"roles": strings.Join(g.Roles, " ")})
	ev.UserID = userID
	if s.o.UpstreamSubjects != nil {
		if ev.UpstreamUsers, err = s.o.UpstreamSubjects(ctx, userID); err != nil {
			return fmt.Errorf("erasing %s: upstream accounts: %w", userID, err)
		}
	}
	if err := s.o.Store.EraseUser(ctx, userID, now, ev); err != nil {
		return fmt.Errorf("erasing %s: %w", userID, err)
	}
	s.recorded()
	return nil
}

// pseudonymize replaces the email of an invitation userID redeemed, and the
// emails its timeline recorded (failed attempts name the account's email).
func (s *Service) pseudonymize(ctx context.Context, invID, userID, pseudonym string) error {
	_, err := s.o.Store.UpdateInvitation(ctx, invID, func(inv *Invitation) error {
		if inv.RedeemedBy != userID || inv.Email == pseudonym {
			return ErrSkipUpdate
		}
		inv.Email = pseudonym
		for i := range inv.Events {
			for k := range inv.Events[i].Detail {
				if strings.Contains(k, "email") {
					inv.Events[i].Detail[k] = pseudonym
				}
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, ErrSkipUpdate) && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("erasing %s: pseudonymizing invitation %s: %w", userID, invID, err)
	}
	return nil
}

// UserIndexKey is a user's entry in the backends' user list index:
// lower(email) NUL userID, so entries sort by email and a prefix of the
// email is a prefix of the key.
func UserIndexKey(email, userID string) string { return EmailKey(email) + "\x00" + userID }

// EncodeUserCursor and DecodeUserCursor turn the last index entry of a page
// into the opaque cursor of the next one, and back.
func EncodeUserCursor(lastKey string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(lastKey))
}

func DecodeUserCursor(c string) (string, error) {
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || !strings.Contains(string(raw), "\x00") {
		return "", fmt.Errorf("user list cursor: %w", errs.ErrBadCursor)
	}
	return string(raw), nil
}

// LinkedIdentity is id as a new link to userID: the profile's email (and
// its verified flag) where id carries none, and now as its creation time
// where it has none. Both stores write a first sign-in's identity so.
func LinkedIdentity(id Identity, p Profile, userID string, now time.Time) Identity {
	id.UserID = userID
	if id.Email == "" {
		id.Email, id.EmailVerified = p.Email, p.EmailVerified
	}
	if id.CreatedAt.IsZero() {
		id.CreatedAt = now
	}
	return id
}
