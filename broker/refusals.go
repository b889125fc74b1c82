package broker

import (
	"errors"

	"github.com/usher-oidc/usher/grants"
)

// refusals are the reasons an invitation is not applied, each with its
// metric label and the words a person reads: one table, so the metric, the
// pages and the log never disagree about a refusal.
var refusals = []struct {
	err     error
	result  string
	message string
}{
	{grants.ErrEmailMismatch, "email_mismatch", "This invitation was sent to another email address than the account you signed in with."},
	{grants.ErrEmailUnverified, "email_unverified", "This account's email address is not verified yet. Verify it through the email the sign-in service sent, then sign in again."},
	{grants.ErrInvitationRedeemed, "already_used", "This invitation has already been used."},
	{grants.ErrInvitationRevoked, "revoked", "This invitation was withdrawn by the sender."},
	{grants.ErrInvitationDeclined, "declined", "This invitation was declined."},
	{grants.ErrInvitationExpired, "expired", "This invitation has expired. Ask the sender for a new one."},
	{grants.ErrNotFound, "not_found", "This invitation is not valid (it may have been replaced by a newer invitation email)."},
}

// redemptionResult is the metric label of a redemption's outcome.
func redemptionResult(err error) string {
	if err == nil {
		return "redeemed"
	}
	if errors.As(err, new(*grants.DeniedError)) {
		return "denied_by_hook"
	}
	for _, r := range refusals {
		if errors.Is(err, r.err) {
			return r.result
		}
	}
	return "error"
}

// refusalMessage says in plain words why an invitation was not applied.
func refusalMessage(err error) string {
	var denied *grants.DeniedError
	if errors.As(err, &denied) {
		return "This invitation was not accepted: " + denied.Reason + "."
	}
	for _, r := range refusals {
		if errors.Is(err, r.err) {
			return r.message
		}
	}
	return "The invitation could not be applied right now."
}
