package broker

import (
	"errors"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/internal/messages"
)

// refusals are the reasons an invitation is not applied, each with its
// metric label, which also names the words a person reads in the message
// catalog ("refusal.<result>"): one table, so the metric, the pages and the
// log never disagree about a refusal.
var refusals = []struct {
	err    error
	result string
}{
	{grants.ErrEmailMismatch, "email_mismatch"},
	{grants.ErrEmailUnverified, "email_unverified"},
	{grants.ErrInvitationRedeemed, "already_used"},
	{grants.ErrInvitationRevoked, "revoked"},
	{grants.ErrInvitationDeclined, "declined"},
	{grants.ErrInvitationExpired, "expired"},
	{grants.ErrNotFound, "not_found"},
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

// refusalMessage says in plain words, in p's language, why an invitation
// was not applied.
func refusalMessage(p messages.Printer, err error) string {
	var denied *grants.DeniedError
	if errors.As(err, &denied) {
		return p.Text("refusal.denied", "reason", denied.Reason)
	}
	for _, r := range refusals {
		if errors.Is(err, r.err) {
			return p.Text("refusal." + r.result)
		}
	}
	return p.Text("refusal.error")
}
