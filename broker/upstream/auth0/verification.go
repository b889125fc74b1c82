package auth0

import (
	"context"
	"fmt"
	"net/http"

	"github.com/auth0/go-auth0/management"
)

// EmailVerified reads the user's email_verified from the Management API
// (GET /api/v2/users/{id}, read:users): the ID token of the sign-in that
// showed the accept page predates the person's click in the verification
// mail. It takes a login-path permit, as Connection does.
func (m *Mirror) EmailVerified(ctx context.Context, sub string) (string, bool, error) {
	if m.o.Now().Before(m.pausedUntil()) {
		return "", false, ErrMirrorRateLimited
	}
	ctx, cancel := context.WithTimeout(ctx, mirrorLookupBudget)
	defer cancel()
	u, err := m.lookup.User.Read(ctx, sub, management.IncludeFields("user_id", "email", "email_verified"))
	if statusOf(err) == http.StatusNotFound {
		return m.linkedEmailVerified(ctx, sub, err)
	}
	if err != nil {
		return "", false, m.lookupError("read user", sub, err)
	}
	return u.GetEmail(), u.GetEmailVerified(), nil
}

// linkedEmailVerified answers for a sub linked into another account (its
// read answered 404): the secondary identity's profileData, as the primary
// lists it, holds the email and email_verified of the account the person
// signs in with. Without a holder, or without that profile, the 404 stands.
func (m *Mirror) linkedEmailVerified(ctx context.Context, sub string, notFound error) (string, bool, error) {
	_, id, err := linkedIdentity(ctx, m.lookup, sub)
	if err != nil {
		return "", false, m.lookupError("search linked user", sub, err)
	}
	if id == nil || id.ProfileData == nil {
		return "", false, m.lookupError("read user", sub, notFound)
	}
	profile := *id.ProfileData
	email, _ := profile["email"].(string)
	verified, _ := profile["email_verified"].(bool)
	if email == "" {
		return "", false, m.lookupError("read user", sub, notFound)
	}
	return email, verified, nil
}

// ResendVerification asks Auth0 to mail sub a new verification link
// (POST /api/v2/jobs/verification-email,
// https://auth0.com/docs/api/management/v2/jobs/post-verification-email).
// It needs the update:users scope, which the mirror does not otherwise
// need: without it Auth0 answers 403 and the person is told to use the
// mail they already have.
func (m *Mirror) ResendVerification(ctx context.Context, sub string) error {
	if m.o.Now().Before(m.pausedUntil()) {
		return ErrMirrorRateLimited
	}
	ctx, cancel := context.WithTimeout(ctx, mirrorLookupBudget)
	defer cancel()
	if err := m.lookup.Job.VerifyEmail(ctx, &management.Job{UserID: &sub}); err != nil {
		return m.lookupError("verification email", sub, err)
	}
	return nil
}

func (m *Mirror) lookupError(what, sub string, err error) error {
	if _, paced := pacedUntil(err); paced {
		return ErrMirrorRateLimited
	}
	if statusOf(err) == http.StatusNotFound {
		return fmt.Errorf("auth0 mirror: %s %s: %w", what, sub, errUserGone{sub})
	}
	return fmt.Errorf("auth0 mirror: %s %s: %w", what, sub, err)
}

func (m managed) EmailVerified(ctx context.Context, sub string) (string, bool, error) {
	return m.m.EmailVerified(ctx, sub)
}

func (m managed) ResendVerification(ctx context.Context, sub string) error {
	return m.m.ResendVerification(ctx, sub)
}
