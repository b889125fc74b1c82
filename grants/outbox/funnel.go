package outbox

import "github.com/usher-oidc/usher/grants"

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
func Funnel(st grants.FunnelStore) Consumer { return funnelConsumer{st} }
