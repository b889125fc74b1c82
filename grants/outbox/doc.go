// Package outbox hands the events grants.Service records to their
// consumers (relay.go), and holds what every durable queue shares (loop.go:
// the wake loop and the retry schedule).
//
// The flow of one event:
//
//  1. a use case stores a change and its events in one atomic write (the
//     events ride in the invitation's or grant's record; the store keeps an
//     index of records that hold events);
//  2. Relay claims due records with a lease (one runner at a time per
//     record, across replicas), reads their events and hands each, in order,
//     to every Consumer: the audit log (Audit), webhooks, mail, the Auth0
//     mirror;
//  3. when every consumer took an event, the relay acknowledges it (removed
//     from the record in one write). A consumer that refuses keeps it, and
//     the record comes back after the lease.
//
// Consumers are idempotent by the event's ID, so a crash between 2 and 3
// delivers nothing twice; the durable consumers (mail, webhooks, mirror) only
// queue their own jobs here and do their slow work in their own workers.
package outbox
