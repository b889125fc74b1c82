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
