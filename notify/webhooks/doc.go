// Package webhooks delivers Standard Webhooks (webhooks.go: signing, the
// endpoints and their event filters; runner.go: one ordered lane per
// endpoint and invitation, retries with backoff for 24 hours; log.go: the
// delivery log and manual redelivery).
//
// It is a consumer of grant events (consumer.go): invitation.created,
// .redeemed (with grant.changed), .revoked, .declined, .expired and
// grant.changed become webhooks whose IDs derive from the event, so an event
// handed over twice is delivered once. user.created is still emitted by the
// broker when a user is stored.
package webhooks
