package conformance

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/usher-oidc/usher/grants"
)

// The outbox: events travel inside the invitation record, written with the
// state change, and an index says which invitations hold some. These tests
// pin what the runner relies on: a claim leases, an acknowledgement removes
// only what it names, and no write loses or resurrects an event.

// lease is the outbox lease every test claims with.
const lease = time.Minute

// farFuture is long after any lease a test takes: a claim then sees every
// invitation still in the index.
const farFuture = 100 * 365 * 24 * time.Hour

func outboxEvent(id, typ string, at time.Time) grants.OutboxEvent {
	return grants.OutboxEvent{ID: id, Type: typ, At: at, Actor: "client:spa", Detail: map[string]string{"email": "a@example.com"}}
}

// withOutbox is invitation(id, now) holding events with these IDs.
func withOutbox(id string, now time.Time, eventIDs ...string) *grants.Invitation {
	inv := invitation(id, now)
	for _, e := range eventIDs {
		inv.Outbox = append(inv.Outbox, outboxEvent(e, grants.EventInvitationCreated, now))
	}
	return inv
}

// claimAll claims everything due at now, sorted.
func claimAll(t *testing.T, ctx context.Context, s grants.Store, now time.Time) []string {
	t.Helper()
	ids, err := s.ClaimOutbox(ctx, now, 1000, lease)
	must(t, "claim outbox", err)
	slices.Sort(ids)
	return ids
}

// wantClaim claims at now and fails unless the answer does (or does not)
// hold id. Claiming leases what it returns: it is part of the scenario.
func wantClaim(t *testing.T, ctx context.Context, s grants.Store, what string, now time.Time, id string, want bool) {
	t.Helper()
	if got := claimAll(t, ctx, s, now); slices.Contains(got, id) != want {
		t.Fatalf("%s: claim = %v; want %s claimed: %v", what, got, id, want)
	}
}

func eventIDs(events []grants.OutboxEvent) []string {
	var out []string
	for _, e := range events {
		out = append(out, e.ID)
	}
	return out
}

// wantOutbox fails unless the stored invitation holds exactly these events, in order.
func wantOutbox(t *testing.T, ctx context.Context, s grants.Store, what, id string, want ...string) *grants.Invitation {
	t.Helper()
	inv, err := s.GetInvitation(ctx, id)
	must(t, what+": get", err)
	if got := eventIDs(inv.Outbox); !slices.Equal(got, want) {
		t.Fatalf("%s: outbox of %s = %v, want %v", what, id, got, want)
	}
	return inv
}

// sameEvents compares field by field, times as instants: the runner hands
// these to consumers, so nothing may be lost or reshaped on the way.
func sameEvents(t *testing.T, what string, want, got []grants.OutboxEvent) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d events, want %d: %+v", what, len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.ID != w.ID || g.Type != w.Type || !g.At.Equal(w.At) || g.Actor != w.Actor || !maps.Equal(g.Detail, w.Detail) ||
			g.SealedLink != w.SealedLink || g.UpstreamUser != w.UpstreamUser || g.Signup != w.Signup ||
			g.Email != w.Email || g.EmailVerified != w.EmailVerified {
			t.Fatalf("%s: event %d:\n got %+v\nwant %+v", what, i, g, w)
		}
	}
}

func testOutboxClaim(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	now := clock.Now()
	_, err := s.CreateInvitation(ctx, withOutbox("inv-a", now, "ev-a"))
	must(t, "create with events", err)
	_, err = s.CreateInvitation(ctx, invitation("inv-quiet", now))
	must(t, "create without events", err)

	if got := claimAll(t, ctx, s, now); !slices.Equal(got, []string{"inv-a"}) {
		t.Fatalf("first claim = %v, want [inv-a] (an invitation without events is never claimed)", got)
	}
	wantClaim(t, ctx, s, "within the lease", now.Add(lease/2), "inv-a", false)
	wantClaim(t, ctx, s, "at the lease's end", now.Add(lease), "inv-a", true)
	wantClaim(t, ctx, s, "within the second lease", now.Add(lease+lease/2), "inv-a", false)

	for _, id := range []string{"inv-b", "inv-c", "inv-d"} {
		_, err := s.CreateInvitation(ctx, withOutbox(id, now, "ev-"+id))
		must(t, "create "+id, err)
	}
	two, err := s.ClaimOutbox(ctx, now, 2, lease)
	must(t, "claim 2", err)
	none, err := s.ClaimOutbox(ctx, now, 0, lease)
	must(t, "claim 0", err)
	rest := claimAll(t, ctx, s, now)
	all := append(slices.Clone(two), rest...)
	slices.Sort(all)
	if len(two) != 2 || len(none) != 0 || !slices.Equal(all, []string{"inv-b", "inv-c", "inv-d"}) {
		t.Fatalf("limit 2 claimed %v, limit 0 %v, the rest %v; want 2, none, and b, c, d once in all", two, none, rest)
	}
	// Claiming reads nothing into the record.
	wantOutbox(t, ctx, s, "after claims", "inv-a", "ev-a")
}

// Two runners never hold the same invitation.
func testOutboxConcurrentClaim(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	now := clock.Now()
	for i := range 12 {
		id := fmt.Sprintf("inv-%02d", i)
		_, err := s.CreateInvitation(ctx, withOutbox(id, now, "ev-"+id))
		must(t, "create", err)
	}
	var mu sync.Mutex
	seen := map[string]int{}
	errs := concurrently(8, func(int) error {
		ids, err := s.ClaimOutbox(ctx, now, 3, lease)
		mu.Lock()
		defer mu.Unlock()
		for _, id := range ids {
			seen[id]++
		}
		return err
	})
	countNil(t, "concurrent claim", errs)
	for id, n := range seen {
		if n != 1 {
			t.Errorf("%s claimed %d times", id, n)
		}
	}
	if len(seen) != 12 {
		t.Fatalf("%d of 12 invitations claimed", len(seen))
	}
}

func testOutboxAck(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	now := clock.Now()
	created, err := s.CreateInvitation(ctx, withOutbox("inv-1", now, "ev-1", "ev-2", "ev-3"))
	must(t, "create", err)
	wantClaim(t, ctx, s, "claim", now, "inv-1", true)

	must(t, "ack some", s.AckOutbox(ctx, "inv-1", []string{"ev-1", "ev-unknown"}))
	got := wantOutbox(t, ctx, s, "after ack some", "inv-1", "ev-2", "ev-3")
	want := *created
	want.Outbox = created.Outbox[1:]
	same(t, "an ack changes only the outbox", &want, got)
	wantClaim(t, ctx, s, "events remain", now.Add(time.Second), "inv-1", true)

	// An ack of nothing (every consumer failed) keeps the lease, so the
	// runner does not spin on the invitation.
	must(t, "ack nothing", s.AckOutbox(ctx, "inv-1", []string{"ev-unknown"}))
	wantClaim(t, ctx, s, "after an ack of nothing", now.Add(2*time.Second), "inv-1", false)

	// The mail consumer updates the record before its ack: that keeps the events.
	_, err = s.UpdateInvitation(ctx, "inv-1", func(inv *grants.Invitation) error { inv.EmailStatus = "sent"; return nil })
	must(t, "update", err)
	wantOutbox(t, ctx, s, "after update", "inv-1", "ev-2", "ev-3")
	wantClaim(t, ctx, s, "after update, lease lapsed", now.Add(time.Second+lease), "inv-1", true)

	must(t, "ack the rest", s.AckOutbox(ctx, "inv-1", []string{"ev-3", "ev-2"}))
	if got := wantOutbox(t, ctx, s, "after ack all", "inv-1"); got.Outbox != nil || got.EmailStatus != "sent" {
		t.Fatalf("after ack all: outbox %#v, email status %q", got.Outbox, got.EmailStatus)
	}
	wantClaim(t, ctx, s, "acknowledged", now.Add(farFuture), "inv-1", false)
	must(t, "ack again", s.AckOutbox(ctx, "inv-1", []string{"ev-2"}))
	must(t, "ack no ids", s.AckOutbox(ctx, "inv-1", nil))
	wantClaim(t, ctx, s, "acknowledged twice", now.Add(2*farFuture), "inv-1", false)
}

// A runner may ack for an invitation deleted or never stored (a stale
// claim): nothing to do, and nothing created.
func testOutboxAckUnknown(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	must(t, "ack unknown", s.AckOutbox(ctx, "nope", []string{"ev-1"}))
	must(t, "ack unknown, no ids", s.AckOutbox(ctx, "nope", nil))
	_, err := s.GetInvitation(ctx, "nope")
	wantErr(t, "ack created a record", err, grants.ErrNotFound)
	_, err = s.CreateInvitation(ctx, invitation("inv-quiet", clock.Now()))
	must(t, "create", err)
	must(t, "ack without events", s.AckOutbox(ctx, "inv-quiet", []string{"ev-1"}))
	if got := claimAll(t, ctx, s, clock.Now().Add(farFuture)); len(got) != 0 {
		t.Fatalf("acks of nothing put %v in the outbox", got)
	}
}

// Each transition records its events exactly when it changes the state; a
// refused or repeated one records nothing and leaves the index alone.
func testOutboxTransitions(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	now := clock.Now()
	tests := []struct {
		state, op string
		err       error
		records   bool
	}{
		{"pending", "revoke", nil, true},
		{"revoked", "revoke", nil, false},
		{"redeemed", "revoke", grants.ErrInvitationRedeemed, false},
		{"declined", "revoke", grants.ErrInvitationDeclined, false},
		{"pending", "decline", nil, true},
		{"declined", "decline", nil, false},
		{"expired", "decline", grants.ErrInvitationExpired, false},
		{"revoked", "decline", grants.ErrInvitationRevoked, false},
		{"pending", "resend", nil, true},
		{"expired", "resend", nil, true},
		{"redeemed", "resend", grants.ErrInvitationRedeemed, false},
		{"revoked", "resend", grants.ErrInvitationRevoked, false},
		{"pending", "redeem", nil, true},
		{"redeemed", "redeem", grants.ErrInvitationRedeemed, false},
		{"revoked", "redeem", grants.ErrInvitationRevoked, false},
		{"declined", "redeem", grants.ErrInvitationDeclined, false},
		{"expired", "redeem", grants.ErrInvitationExpired, false},
	}
	for i, tc := range tests {
		t.Run(tc.op+"/"+tc.state, func(t *testing.T) {
			id := fmt.Sprintf("inv-%d", i)
			inv := withOutbox(id, now, id+"-created")
			inv.ExpiresAt = now.Add(time.Hour)
			_, err := s.CreateInvitation(ctx, inv)
			must(t, "create", err)
			at := now.Add(time.Minute)
			setup := []grants.OutboxEvent{outboxEvent(id+"-setup", "setup", now)}
			switch tc.state {
			case "revoked":
				_, err = s.RevokeInvitation(ctx, id, now, setup...)
			case "declined":
				_, err = s.DeclineInvitation(ctx, id, "u-setup", now, setup...)
			case "redeemed":
				_, _, err = s.RedeemInvitation(ctx, inv.TokenHash, grants.Redemption{UserID: "u-setup", At: now, Events: setup})
			case "expired":
				at = inv.ExpiresAt.Add(time.Minute)
			}
			must(t, "setup", err)
			before, err := s.GetInvitation(ctx, id)
			must(t, "get before", err)
			wantClaim(t, ctx, s, "lease before the op", now, id, true)

			ev := outboxEvent(id+"-op", tc.op, at)
			var ret *grants.Invitation
			switch tc.op {
			case "revoke":
				ret, err = s.RevokeInvitation(ctx, id, at, ev)
			case "decline":
				ret, err = s.DeclineInvitation(ctx, id, "u-op", at, ev)
			case "resend":
				ret, err = s.ReplaceInvitationToken(ctx, id, id+"-new-hash", at.Add(time.Hour), at, ev)
			case "redeem":
				ret, _, err = s.RedeemInvitation(ctx, before.TokenHash, grants.Redemption{UserID: "u-op", At: at, Events: []grants.OutboxEvent{ev}})
			}
			wantErr(t, tc.op, err, tc.err)
			after, err := s.GetInvitation(ctx, id)
			must(t, "get after", err)
			if tc.err == nil {
				same(t, "returned vs stored", after, ret)
			}
			if !tc.records {
				same(t, "no change, no events", before, after)
				wantClaim(t, ctx, s, "still leased", now.Add(time.Second), id, false)
				return
			}
			sameEvents(t, "recorded", append(slices.Clone(before.Outbox), ev), after.Outbox)
			wantClaim(t, ctx, s, "new events are due at once", now.Add(time.Second), id, true)
		})
	}
}

// The race the Redis index guards: a runner claims and reads the events,
// a writer records another, the runner acks what it read. The new event
// must stay, and stay claimable.
func testOutboxWriterDuringLease(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	now := clock.Now()
	writers := map[string]func(id string, ev grants.OutboxEvent) error{
		"resend": func(id string, ev grants.OutboxEvent) error {
			_, err := s.ReplaceInvitationToken(ctx, id, id+"-new-hash", now.Add(time.Hour), now, ev)
			return err
		},
		"revoke": func(id string, ev grants.OutboxEvent) error {
			_, err := s.RevokeInvitation(ctx, id, now, ev)
			return err
		},
		"decline": func(id string, ev grants.OutboxEvent) error {
			_, err := s.DeclineInvitation(ctx, id, "u-1", now, ev)
			return err
		},
		"redeem": func(id string, ev grants.OutboxEvent) error {
			_, _, err := s.RedeemInvitation(ctx, "hash-"+id, grants.Redemption{UserID: "u-1", At: now, Events: []grants.OutboxEvent{ev}})
			return err
		},
	}
	for _, name := range slices.Sorted(maps.Keys(writers)) {
		t.Run(name, func(t *testing.T) {
			id := "inv-" + name
			_, err := s.CreateInvitation(ctx, withOutbox(id, now, "ev-1"))
			must(t, "create", err)
			wantClaim(t, ctx, s, "runner's claim", now, id, true)
			must(t, "writer", writers[name](id, outboxEvent("ev-2", name, now)))
			must(t, "runner's ack", s.AckOutbox(ctx, id, []string{"ev-1"}))
			wantOutbox(t, ctx, s, "after the stale ack", id, "ev-2")
			wantClaim(t, ctx, s, "the new event", now.Add(time.Second), id, true)
			must(t, "ack the new event", s.AckOutbox(ctx, id, []string{"ev-2"}))
			wantOutbox(t, ctx, s, "after ack all", id)
			wantClaim(t, ctx, s, "acknowledged", now.Add(farFuture), id, false)
		})
	}
}

func testOutboxRoundTrip(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	// Nanoseconds and a zone other than UTC: At must come back as the same instant.
	at := clock.Now().Add(123456789 * time.Nanosecond).In(time.FixedZone("UTC+2", 2*3600))
	full := grants.OutboxEvent{
		ID: "ev-full", Type: grants.EventInvitationRedeemed, At: at, Actor: "user-1",
		Detail:     map[string]string{"email": "Ada@Example.com", "roles": "a,b", "empty": "", "name": "Zoë ✓"},
		SealedLink: "sealed.v1.AbC-_=", UpstreamUser: "auth0|123", Signup: true, Email: "ada@example.com", EmailVerified: true,
	}
	bare := grants.OutboxEvent{ID: "ev-bare", Type: grants.EventInvitationCreated, At: at}
	inv := invitation("inv-1", clock.Now())
	inv.Outbox = []grants.OutboxEvent{full, bare}
	created, err := s.CreateInvitation(ctx, inv)
	must(t, "create", err)
	sameEvents(t, "create returned", inv.Outbox, created.Outbox)
	got, err := s.GetInvitation(ctx, "inv-1")
	must(t, "get", err)
	sameEvents(t, "get", inv.Outbox, got.Outbox)
	got, err = s.GetInvitationByTokenHash(ctx, inv.TokenHash)
	must(t, "get by token", err)
	sameEvents(t, "get by token", inv.Outbox, got.Outbox)

	redeemed := full
	redeemed.ID = "ev-redeemed"
	ret, _, err := s.RedeemInvitation(ctx, inv.TokenHash, grants.Redemption{UserID: "user-1", At: clock.Now(), Events: []grants.OutboxEvent{redeemed}})
	must(t, "redeem", err)
	want := []grants.OutboxEvent{full, bare, redeemed}
	sameEvents(t, "redeem returned", want, ret.Outbox)
	got, err = s.GetInvitation(ctx, "inv-1")
	must(t, "get after redeem", err)
	sameEvents(t, "get after redeem", want, got.Outbox)
	must(t, "ack", s.AckOutbox(ctx, "inv-1", []string{"ev-bare"}))
	got, err = s.GetInvitation(ctx, "inv-1")
	must(t, "get after ack", err)
	sameEvents(t, "ack keeps the others intact", []grants.OutboxEvent{full, redeemed}, got.Outbox)
}

// The audit consumer appends one record per event, with the event's ID; a
// runner that crashed before its ack appends it again. That must not show twice.
func testAuditIdempotent(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	now := clock.Now()
	rec := &grants.AuditRecord{ID: "ev-1", At: now, Action: grants.EventInvitationCreated, Actor: "client:spa", Target: "inv-1",
		Detail: map[string]string{"email": "a@example.com"}}
	must(t, "append", s.AppendAudit(ctx, rec))
	must(t, "append again", s.AppendAudit(ctx, rec))
	again := *rec
	again.At = now.In(time.FixedZone("UTC+2", 2*3600)) // decoded elsewhere: same instant, other zone
	must(t, "append again, other zone", s.AppendAudit(ctx, &again))
	must(t, "append another", s.AppendAudit(ctx, &grants.AuditRecord{ID: "ev-2", At: now, Action: "invitation.revoked", Actor: "client:spa", Target: "inv-1"}))

	for name, f := range map[string]grants.AuditFilter{
		"all":    {},
		"target": {Target: "inv-1"},
		"window": {Since: now, Until: now},
	} {
		recs, _, err := s.ListAudit(ctx, f)
		must(t, "list "+name, err)
		n := 0
		for _, r := range recs {
			if r.ID == "ev-1" {
				n++
				same(t, "stored record", rec, &r)
			}
		}
		if n != 1 || len(recs) != 2 {
			t.Fatalf("list %s: ev-1 %d times in %d records, want once in 2", name, n, len(recs))
		}
	}
}
