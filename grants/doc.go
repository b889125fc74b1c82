// Package grants is the invitation and grant domain: users and their
// upstream identities, invitations and their state machine, the grants that
// redeemed invitations leave on a user (one merge rule, merge.go), the rules
// for claim names, and the durable job records the notifiers drain.
//
// Service (service.go, redeem.go, expire.go, grantchange.go) is every use
// case. Each one that changes state is ONE atomic store write that also
// records the change's events (OutboxEvent, events.go), inside the
// invitation's or the grant's own record:
//
//	Create       pending invitation + invitation.created (+ its sealed mail link)
//	Check        read-only: why a token is unusable, if it is
//	Redeem       pending → redeemed, grant merge + invitation.redeemed
//	AwaitVerification  accepted before the email was verified + invitation.awaiting_verification (verification.go)
//	Decline      pending → declined + invitation.declined
//	Revoke       pending → revoked + invitation.revoked
//	Resend       new token and expiry + invitation.resent (+ mail link)
//	Expire       the sweep: expiry noted once + invitation.expired
//	ChangeGrant  a role or claim added, set or taken back + grant.changed
//
// Side effects (audit log, webhooks, mail, the Auth0 mirror) are consumers
// of those events, run by grants/outbox; nothing here sends anything.
//
// The package defines the records and the Store interface; backends live
// under store/. It imports no other usher package but store/errs.
package grants
