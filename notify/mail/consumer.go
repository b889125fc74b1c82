package mail

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/usher-oidc/usher/grants"
)

// SealLink seals an invitation's link for the mail queue (the token is never
// stored in clear); grants.Service records it with the created or resent
// event.
func (m *Mailer) SealLink(invitationID, link string) (string, error) {
	if m.o.Sealer == nil {
		return "", errors.New("mailer: no sealer configured")
	}
	return m.o.Sealer.Encode(sealName(invitationID), link)
}

// Consume queues the mail of an event that carries a sealed link (created
// or resent, for an invitation that is mailed). The job's ID is the event's,
// so an event handed over twice queues one mail.
func (m *Mailer) Consume(ctx context.Context, inv *grants.Invitation, ev grants.OutboxEvent) error {
	if inv == nil || ev.SealedLink == "" {
		return nil
	}
	payload, err := json.Marshal(mailPayload{InvitationID: inv.ID, TokenHash: ev.TokenHash, SealedLink: ev.SealedLink})
	if err != nil {
		return fmt.Errorf("mailer: queue mail of %s: %w", inv.ID, err)
	}
	now := m.o.Now()
	job := &grants.Job{ID: "mail_" + ev.ID, Kind: JobKindMail, Payload: payload, RunAt: now, CreatedAt: now}
	if err := m.o.Store.EnqueueJob(ctx, job); err != nil && !errors.Is(err, grants.ErrConflict) {
		return fmt.Errorf("mailer: queue mail of %s: %w", inv.ID, err)
	}
	m.loop.Poke()
	return nil
}
