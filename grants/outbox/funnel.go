package outbox

import (
	"context"

	"github.com/usher-oidc/usher/grants"
)

// funnelStages maps the invitation events the funnel counts to its stages.
// Resends are not a stage; "opened" has no event (it is a timeline entry).
var funnelStages = map[string]string{
	grants.EventInvitationCreated:  grants.FunnelCreated,
	grants.EventInvitationRedeemed: grants.FunnelRedeemed,
	grants.EventInvitationDeclined: grants.FunnelDeclined,
	grants.EventInvitationExpired:  grants.FunnelExpired,
	grants.EventInvitationRevoked:  grants.FunnelRevoked,
}

// Funnel is the consumer that keeps the invitation funnel's counters: per
// UTC day of the event and inviting client, one count per stage, and for a
// redemption its time since the invitation was created. The store counts an
// event ID once, so a repeated hand-over changes nothing.
func Funnel(st grants.FunnelStore) Consumer {
	return ConsumerFunc(func(ctx context.Context, inv *grants.Invitation, ev grants.OutboxEvent) error {
		stage, ok := funnelStages[ev.Type]
		if !ok || inv == nil {
			return nil
		}
		secs := int64(-1)
		if stage == grants.FunnelRedeemed && !inv.CreatedAt.IsZero() && !ev.At.Before(inv.CreatedAt) {
			secs = int64(ev.At.Sub(inv.CreatedAt).Seconds())
		}
		return st.AddFunnel(ctx, ev.ID, ev.At, inv.ClientID, stage, secs)
	})
}
