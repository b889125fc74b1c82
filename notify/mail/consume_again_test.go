package mail_test

import (
	"testing"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/internal/testkit"
	"github.com/usher-oidc/usher/notify/mail"
)

// The outbox hands an event over again when its runner died before the
// acknowledgement, possibly long after the mail it queued went out and its
// job was deleted. The mail of that token was sent: it is not sent again.
func TestMailerEventHandedOverAgainAfterItsMailWentOut(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	st, _ := testkit.OpenBolt(t)
	outbox := mail.NewOutbox()
	m := newMailer(t, st, outbox, nil)
	inv, _, link := testkit.PendingInvitation(t, st, "gina@example.com")
	sealed, err := m.SealLink(inv.ID, link)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.UpdateInvitation(ctx, inv.ID, func(i *grants.Invitation) error {
		i.EmailStatus = "queued" // as the created event's write stores it
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ev := grants.OutboxEvent{ID: "evt_gina", Type: grants.EventInvitationCreated, SealedLink: sealed, TokenHash: inv.TokenHash}
	runMailer(t, m)
	if err := m.Consume(ctx, testkit.Invitation(t, st, inv.ID), ev); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "EmailStatus sent", func() bool { return testkit.Invitation(t, st, inv.ID).EmailStatus == "sent" })
	waitQueueEmpty(t, m)

	if err := m.Consume(ctx, testkit.Invitation(t, st, inv.ID), ev); err != nil {
		t.Fatal(err)
	}
	waitQueueEmpty(t, m)
	if msgs := outbox.Messages(); len(msgs) != 1 {
		t.Fatalf("%d mails for one token, want 1", len(msgs))
	}
}
