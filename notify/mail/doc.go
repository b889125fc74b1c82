// Package mail sends invitation mail: templates (templates.go, overridable
// by mail.templates_dir), the SMTP sender on go-mail (smtp.go), the durable
// mail queue and its worker (mailer.go), and the dev outbox page that `usher
// dev` shows instead of sending (devoutbox.go).
//
// It is a consumer of grant events (consumer.go): an invitation.created or
// invitation.resent event that carries a sealed link becomes one mail job,
// whose ID is the event's, so an event handed over twice is mailed once.
// The worker then sends it, retries with backoff, and records mailed /
// mail_failed on the invitation's timeline; a mail whose token was replaced
// by a resend is dropped, never sent.
package mail
