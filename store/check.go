package store

import (
	"fmt"

	"github.com/usher-oidc/usher/sessions"
	"github.com/usher-oidc/usher/store/errs"
)

// KeyCheck is a backend's check of the parts it builds keys from (each
// backend refuses what its keys cannot hold).
type KeyCheck func(op string, parts ...string) error

// CheckBrowserSession refuses, with errs.ErrInvalid, a browser session no
// backend may store: nil, an ID keys refuses, or no expiry.
func CheckBrowserSession(op string, bs *sessions.BrowserSession, keys KeyCheck) error {
	if bs == nil {
		return fmt.Errorf("%s: nil: %w", op, errs.ErrInvalid)
	}
	if err := keys(op, bs.ID); err != nil {
		return err
	}
	if bs.ExpiresAt.IsZero() {
		return fmt.Errorf("%s: no expiry: %w", op, errs.ErrInvalid)
	}
	return nil
}

// CheckCode refuses, with errs.ErrInvalid, an authorization code no backend
// may store: nil, a hash keys refuses, no expiry, a carried auth request
// that is another one or has no expiry, or a request never stored that
// the code does not carry (it would be kept nowhere).
func CheckCode(op string, c *sessions.Code, keys KeyCheck) error {
	if c == nil {
		return fmt.Errorf("%s: nil: %w", op, errs.ErrInvalid)
	}
	if err := keys(op, c.Hash); err != nil {
		return err
	}
	if c.ExpiresAt.IsZero() {
		return fmt.Errorf("%s: no expiry: %w", op, errs.ErrInvalid)
	}
	if ar := c.AuthRequest; ar != nil && (ar.ID != c.AuthRequestID || ar.ExpiresAt.IsZero()) {
		return fmt.Errorf("%s: its auth request is not %s or has no expiry: %w", op, c.AuthRequestID, errs.ErrInvalid)
	}
	if c.AuthRequestNeverStored && c.AuthRequest == nil {
		return fmt.Errorf("%s: an auth request never stored is carried by the code: %w", op, errs.ErrInvalid)
	}
	return nil
}

// CheckCodeSpend is what both stores check of a sealed code's spend
// before any write: its hash, epoch and expiry (the refresh token it
// carries is checked as CreateRefreshToken checks one).
func CheckCodeSpend(op string, sp *sessions.CodeSpend, keys KeyCheck) error {
	if sp == nil {
		return fmt.Errorf("%s: nil: %w", op, errs.ErrInvalid)
	}
	if err := keys(op, sp.Hash, sp.Epoch); err != nil {
		return err
	}
	if sp.ExpiresAt.IsZero() {
		return fmt.Errorf("%s: no expiry: %w", op, errs.ErrInvalid)
	}
	return nil
}
