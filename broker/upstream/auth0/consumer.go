package auth0

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/usher-oidc/usher/broker/upstream"
	"github.com/usher-oidc/usher/grants"
)

// Consume queues the mirroring of a redemption onto the Auth0 user that
// redeemed (events whose redeemer is not an Auth0 identity carry no
// UpstreamUser). The job's ID is the event's, and the timeline's "queued"
// entry names the event, so an event handed over twice queues one job.
func (m *Mirror) Consume(ctx context.Context, inv *grants.Invitation, ev grants.OutboxEvent) error {
	if inv == nil && ev.Type == grants.EventUserErased {
		return m.erasure(ctx, ev)
	}
	if inv == nil {
		return m.revocations(ctx, ev)
	}
	if ev.Type != grants.EventInvitationRedeemed || ev.UpstreamUser == "" {
		return nil
	}
	p := mirrorPayload{
		Op: opRedeem, UpstreamUser: ev.UpstreamUser, InvitationID: inv.ID, UsherUser: inv.RedeemedBy,
		Roles: slices.Clone(inv.Roles), Claims: inv.Claims,
	}
	now := m.o.Now()
	// Queued before the job exists: another replica's worker may finish it
	// the moment it is stored, and its "mirrored" must come last.
	_, err := m.o.Store.UpdateInvitation(ctx, inv.ID, func(i *grants.Invitation) error {
		if slices.ContainsFunc(i.Events, func(e grants.Event) bool {
			return e.Type == upstream.EventMirrorQueued && e.Detail["event_id"] == ev.ID
		}) {
			return grants.ErrSkipUpdate
		}
		i.Events = append(i.Events, grants.Event{Type: upstream.EventMirrorQueued, At: now,
			Detail: map[string]string{"upstream_user": ev.UpstreamUser, "event_id": ev.ID}})
		return nil
	})
	if err != nil && !errors.Is(err, grants.ErrSkipUpdate) {
		return fmt.Errorf("auth0 mirror: queue redemption of %s: %w", inv.ID, err)
	}
	payload, err := json.Marshal(p)
	if err != nil {
		return err
	}
	job := &grants.Job{ID: "auth0_" + ev.ID, Kind: JobKindMirror, Payload: payload, RunAt: now, CreatedAt: now}
	if err := m.o.Store.EnqueueJob(ctx, job); err != nil && !errors.Is(err, grants.ErrConflict) {
		return fmt.Errorf("auth0 mirror: queue redemption of %s: %w", inv.ID, err)
	}
	m.log.Info("auth0 update queued", "job_id", job.ID, "op", p.Op, "upstream_user", p.UpstreamUser, "invitation_id", p.InvitationID)
	m.loop.Poke()
	return nil
}

// revocations queues, for a grant change that took a role or a claim back,
// its removal from each of the user's Auth0 accounts (job IDs derived from
// the event, so a repeated hand-over queues each once).
func (m *Mirror) revocations(ctx context.Context, ev grants.OutboxEvent) error {
	role, claim := ev.Detail["removed_role"], ev.Detail["removed_claim"]
	if ev.Type != grants.EventGrantChanged || (role == "" && claim == "") {
		return nil
	}
	now := m.o.Now()
	for i, sub := range ev.UpstreamUsers {
		payload, err := json.Marshal(mirrorPayload{Op: opRevoke, UpstreamUser: sub, UsherUser: ev.UserID, Role: role, ClaimKey: claim})
		if err != nil {
			return err
		}
		job := &grants.Job{ID: fmt.Sprintf("auth0_%s_%d", ev.ID, i), Kind: JobKindMirror, Payload: payload, RunAt: now, CreatedAt: now}
		if err := m.o.Store.EnqueueJob(ctx, job); err != nil && !errors.Is(err, grants.ErrConflict) {
			return fmt.Errorf("auth0 mirror: queue revocation for %s: %w", sub, err)
		}
	}
	if len(ev.UpstreamUsers) > 0 {
		m.loop.Poke()
	}
	return nil
}
