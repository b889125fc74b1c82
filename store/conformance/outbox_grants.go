package conformance

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/usher-oidc/usher/grants"
)

// testOutboxGrants: a grant change records its events with the change, in
// the grant's own write, under the user's outbox ID; a change that changes
// nothing records nothing; acknowledging empties it and drops the entry.
func testOutboxGrants(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	now := clock.Now()
	uid := "usr-outbox"
	key := grants.UserOutboxID(uid)
	ev := func(id string) grants.OutboxEvent {
		e := outboxEvent(id, grants.EventGrantChanged, now)
		e.UserID, e.UpstreamUsers = uid, []string{"auth0|1"}
		return e
	}
	_, err := s.AddRoles(ctx, uid, []string{"viewer"}, now, ev("g-1"))
	must(t, "add roles", err)
	_, err = s.AddRoles(ctx, uid, []string{"viewer"}, now, ev("g-noop")) // already held: no change
	must(t, "add held role", err)
	_, err = s.SetGrantClaim(ctx, uid, "crm_id", "C-1", now, ev("g-2"))
	must(t, "set claim", err)
	_, err = s.RemoveGrantClaim(ctx, uid, "absent", now, ev("g-noop2"))
	must(t, "remove absent claim", err)
	g, err := s.GetGrant(ctx, uid)
	must(t, "get grant", err)
	if got := eventIDs(g.Outbox); !slices.Equal(got, []string{"g-1", "g-2"}) {
		t.Fatalf("grant outbox = %v, want [g-1 g-2]", got)
	}
	sameEvents(t, "grant events", []grants.OutboxEvent{ev("g-1"), ev("g-2")}, g.Outbox)
	if !slices.Equal(g.Roles, []string{"viewer"}) || g.Claims["crm_id"] != "C-1" {
		t.Fatalf("grant = %+v", g)
	}
	if uid2, ok := grants.OutboxUser(key); !ok || uid2 != uid {
		t.Fatalf("OutboxUser(%q) = %q, %v", key, uid2, ok)
	}
	wantClaim(t, ctx, s, "after the changes", now, key, true)
	must(t, "ack one", s.AckOutbox(ctx, key, []string{"g-1"}))
	wantClaim(t, ctx, s, "with an event left", now.Add(farFuture), key, true)
	_, err = s.RemoveGrantRole(ctx, uid, "viewer", now, ev("g-3"))
	must(t, "remove role", err)
	later := now.Add(2 * farFuture) // the runner's next claim, after its lease
	wantClaim(t, ctx, s, "after another change", later, key, true)
	must(t, "ack the rest", s.AckOutbox(ctx, key, []string{"g-2", "g-3"}))
	g, err = s.GetGrant(ctx, uid)
	must(t, "get grant", err)
	if len(g.Outbox) != 0 || len(g.Roles) != 0 {
		t.Fatalf("after ack: outbox %v roles %v", eventIDs(g.Outbox), g.Roles)
	}
	wantClaim(t, ctx, s, "after the last ack", later.Add(farFuture), key, false)
	must(t, "ack a user without events", s.AckOutbox(ctx, grants.UserOutboxID("usr-none"), []string{"x"}))
}

// testOutboxBatch: a backend that reads and acknowledges a claim in one go
// does what GetInvitation and AckOutbox do one by one.
func testOutboxBatch(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	b, ok := s.(grants.OutboxBatcher)
	if !ok {
		t.Skip("no OutboxBatcher")
	}
	now := clock.Now()
	for _, id := range []string{"inv-b1", "inv-b2", "inv-b3"} {
		_, err := s.CreateInvitation(ctx, withOutbox(id, now, id+"-e1", id+"-e2"))
		must(t, "create", err)
	}
	claimed := claimAll(t, ctx, s, now)
	invs, err := b.GetInvitations(ctx, []string{"inv-b1", "nope", "inv-b3"})
	must(t, "get invitations", err)
	if len(invs) != 3 || invs[0] == nil || invs[0].ID != "inv-b1" || invs[1] != nil || invs[2] == nil || len(invs[2].Outbox) != 2 {
		t.Fatalf("GetInvitations = %+v", invs)
	}
	must(t, "ack batch", b.AckOutboxBatch(ctx, map[string][]string{
		"inv-b1": {"inv-b1-e1", "inv-b1-e2"}, // all
		"inv-b2": {"inv-b2-e1"},              // some
		"inv-b3": nil,                        // none (a refused first event)
		"nope":   nil,                        // gone
	}))
	wantOutbox(t, ctx, s, "all acked", "inv-b1")
	wantOutbox(t, ctx, s, "some acked", "inv-b2", "inv-b2-e2")
	wantOutbox(t, ctx, s, "none acked", "inv-b3", "inv-b3-e1", "inv-b3-e2")
	later := now.Add(farFuture)
	got := claimAll(t, ctx, s, later)
	if slices.Contains(got, "inv-b1") || !slices.Contains(got, "inv-b2") || !slices.Contains(got, "inv-b3") {
		t.Fatalf("after the batch (claimed first %v): claim = %v; want inv-b2 and inv-b3, not inv-b1", claimed, got)
	}
}

// testOutboxReadAck: a backend that acknowledges against its read
// (grants.OutboxReadAcker) loses nothing written between the read and the
// ack: an event added meanwhile stays due, a change made meanwhile (the
// mail's status) stays, and what was acknowledged is gone.
func testOutboxReadAck(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	ra, ok := s.(grants.OutboxReadAcker)
	if !ok {
		t.Skip("no OutboxReadAcker")
	}
	now := clock.Now()
	for _, inv := range []*grants.Invitation{withOutbox("inv-r0", now, "r0-e1"), withOutbox("inv-r1", now, "r1-e1", "r1-e2"), withOutbox("inv-r2", now, "r2-e1"), withOutbox("inv-r3", now, "r3-e1")} {
		_, err := s.CreateInvitation(ctx, inv)
		must(t, "create", err)
	}
	claimAll(t, ctx, s, now)
	// A first read and ack, so that what a backend loads on first use
	// (Redis: its script) is there for the one under test.
	warm, err := ra.ReadOutbox(ctx, []string{"inv-r0"})
	must(t, "read outbox", err)
	must(t, "ack against the read", ra.AckOutboxRead(ctx, warm, map[string][]string{"inv-r0": {"r0-e1"}}))
	wantOutbox(t, ctx, s, "acked", "inv-r0")
	read, err := ra.ReadOutbox(ctx, []string{"inv-r1", "inv-r2", "inv-r3", "nope"})
	must(t, "read outbox", err)
	if len(read.Invitations) != 4 || read.Invitations[3] != nil || len(read.Invitations[0].Outbox) != 2 {
		t.Fatalf("ReadOutbox = %+v", read.Invitations)
	}
	resent := outboxEvent("r2-resent", grants.EventInvitationResent, now)
	_, err = s.ReplaceInvitationToken(ctx, "inv-r2", fmt.Sprintf("%064x", "inv-r2 resent"), now.Add(time.Hour), now, resent)
	must(t, "an event added after the read", err)
	_, err = s.UpdateInvitation(ctx, "inv-r3", func(inv *grants.Invitation) error { inv.EmailStatus = "sent"; return nil })
	must(t, "a change after the read", err)
	must(t, "ack against the read", ra.AckOutboxRead(ctx, read, map[string][]string{
		"inv-r1": {"r1-e1", "r1-e2"}, "inv-r2": {"r2-e1"}, "inv-r3": {"r3-e1"}, "nope": nil,
	}))
	wantOutbox(t, ctx, s, "acked, unchanged since the read", "inv-r1")
	wantOutbox(t, ctx, s, "acked, an event added since", "inv-r2", "r2-resent")
	if inv := wantOutbox(t, ctx, s, "acked, changed since", "inv-r3"); inv.EmailStatus != "sent" {
		t.Errorf("the change made after the read was lost: email status %q", inv.EmailStatus)
	}
	// inv-r3 may be due again: its writer marked it, which the ack leaves
	// (a runner then finds nothing to hand over).
	got := claimAll(t, ctx, s, now.Add(farFuture))
	if !slices.Contains(got, "inv-r2") || slices.Contains(got, "inv-r1") {
		t.Fatalf("after the ack: claim = %v, want inv-r2 and not inv-r1", got)
	}
}
