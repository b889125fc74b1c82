package outbox

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/usher-oidc/usher/grants"
)

// Consumer is one side effect of grant events: the audit log, mail,
// webhooks, the Auth0 mirror. inv is the invitation the event is about (as
// it is now), nil for a grant event (ev.UserID says whose). Consume must be
// idempotent by ev.ID: after a crash between a hand-over and its
// acknowledgement the event comes again.
// It should be quick (a consumer with slow work queues it durably, as mail
// and webhooks do); an error leaves the event to be handed over again.
type Consumer interface {
	Consume(ctx context.Context, inv *grants.Invitation, ev grants.OutboxEvent) error
}

// ConsumerFunc adapts a function to Consumer.
type ConsumerFunc func(ctx context.Context, inv *grants.Invitation, ev grants.OutboxEvent) error

func (f ConsumerFunc) Consume(ctx context.Context, inv *grants.Invitation, ev grants.OutboxEvent) error {
	return f(ctx, inv, ev)
}

// RelayOptions configure NewRelay.
type RelayOptions struct {
	Store grants.Store
	// Consumers get every event, in this order.
	Consumers []Consumer
	// Lease is how long a claimed invitation is this runner's (default 30 s);
	// an event a consumer refused is handed over again after it.
	Lease        time.Duration
	PollInterval time.Duration // default 1 s: events recorded by other replicas
	// Batch is invitations per claim, default 256: a claim's writes (its
	// lease, one per batch consumer, the ack) are as many whatever its
	// size, so on bbolt a smaller claim made the runner, not the creates,
	// what bounded invitation throughput (64: 1,877-2,153 creates/s with
	// the answers at 3,900/s, 0.077 durable commits per create; 256:
	// 2,767-3,237, the runner keeping up, 0.041).
	Batch int
	// Parallel is how many claimed records are handed over at once (default
	// 16): the stores group concurrent writes into one commit (bbolt's
	// Batch, Redis pipelines), so one record at a time would cost one fsync
	// per event on bbolt. Events of one record stay in order.
	Parallel int
	Now      func() time.Time
	Logger   *slog.Logger
}

// Relay is the one runner that hands recorded events to their consumers:
// it claims invitations holding events (a lease, so one runner at a time
// works on an invitation, across replicas), hands each event to every
// consumer in order, and acknowledges what all of them took.
type Relay struct {
	o    RelayOptions
	log  *slog.Logger
	loop *WakeLoop
}

func NewRelay(o RelayOptions) *Relay {
	if o.Lease <= 0 {
		o.Lease = 30 * time.Second
	}
	if o.PollInterval <= 0 {
		o.PollInterval = time.Second
	}
	if o.Batch <= 0 {
		o.Batch = 256
	}
	if o.Parallel <= 0 {
		o.Parallel = 16
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Relay{o: o, log: o.Logger.With("component", "outbox"), loop: NewWakeLoop(o.PollInterval, o.Now)}
}

// Poke wakes the runner (an event was just recorded in this process).
func (r *Relay) Poke() { r.loop.Poke() }

// Run delivers until ctx ends.
func (r *Relay) Run(ctx context.Context) { r.loop.Run(ctx, func(ctx context.Context) { r.Drain(ctx) }) }

// Drain hands over every event that is due now and returns how many were
// acknowledged (tests and `usher` shutdown call it directly).
func (r *Relay) Drain(ctx context.Context) int {
	acked := 0
	for ctx.Err() == nil {
		ids, err := r.o.Store.ClaimOutbox(ctx, r.o.Now(), r.o.Batch, r.o.Lease)
		if err != nil {
			r.log.ErrorContext(ctx, "claiming recorded events", "err", err)
			return acked
		}
		acked += r.deliverAll(ctx, ids)
		if len(ids) < r.o.Batch {
			return acked
		}
	}
	return acked
}

// deliverAll hands over the claimed records, Parallel at a time, and
// returns how many events were acknowledged.
func (r *Relay) deliverAll(ctx context.Context, ids []string) int {
	if b, ok := r.o.Store.(grants.OutboxBatcher); ok {
		return r.deliverBatch(ctx, b, ids)
	}
	var acked atomic.Int64
	sem := make(chan struct{}, r.o.Parallel)
	var wg sync.WaitGroup
	for _, id := range ids {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			acked.Add(int64(r.deliver(ctx, id)))
		})
	}
	wg.Wait()
	return int(acked.Load())
}

// deliverBatch is deliverAll with the claim's invitations read in one go,
// their events handed over in rounds (handOverRounds) and acknowledged in
// one go; users' grant events take the one-by-one path. A missing
// invitation is acknowledged with nothing, which drops its entry.
func (r *Relay) deliverBatch(ctx context.Context, b grants.OutboxBatcher, ids []string) int {
	var invIDs, userIDs []string
	for _, id := range ids {
		if _, isUser := grants.OutboxUser(id); isUser {
			userIDs = append(userIDs, id)
		} else {
			invIDs = append(invIDs, id)
		}
	}
	acked := 0
	for _, id := range userIDs {
		acked += r.deliver(ctx, id)
	}
	if len(invIDs) == 0 {
		return acked
	}
	read, err := readOutbox(ctx, b, invIDs)
	if err != nil {
		r.log.ErrorContext(ctx, "reading recorded events", "err", err)
		r.loop.NoteRetry(r.o.Now().Add(r.o.Lease))
		return acked
	}
	done := r.handOverRounds(ctx, invIDs, read.Invitations)
	acks := make(map[string][]string, len(invIDs))
	for i, id := range invIDs {
		acks[id] = done[i]
		acked += len(done[i])
	}
	if err := ackOutboxRead(ctx, b, read, acks); err != nil {
		r.log.ErrorContext(ctx, "acknowledging delivered events", "err", err)
		return 0
	}
	return acked
}

// readOutbox reads a claim's invitations, with their versions when b can
// acknowledge against them (grants.OutboxReadAcker).
func readOutbox(ctx context.Context, b grants.OutboxBatcher, ids []string) (*grants.OutboxRead, error) {
	if ra, ok := b.(grants.OutboxReadAcker); ok {
		return ra.ReadOutbox(ctx, ids)
	}
	invs, err := b.GetInvitations(ctx, ids)
	if err != nil {
		return nil, err
	}
	return &grants.OutboxRead{IDs: ids, Invitations: invs}, nil
}

// ackOutboxRead acknowledges the events handed over from read.
func ackOutboxRead(ctx context.Context, b grants.OutboxBatcher, read *grants.OutboxRead, acks map[string][]string) error {
	if ra, ok := b.(grants.OutboxReadAcker); ok {
		return ra.AckOutboxRead(ctx, read, acks)
	}
	return b.AckOutboxBatch(ctx, acks)
}

// deliver hands the events of one invitation (or one user's grant) over in
// order and stops at the first refusal, so consumers see them in order.
func (r *Relay) deliver(ctx context.Context, id string) int {
	inv, events, err := r.load(ctx, id)
	if err != nil {
		r.log.ErrorContext(ctx, "reading recorded events", "outbox_id", printable(id), "err", err)
		r.loop.NoteRetry(r.o.Now().Add(r.o.Lease))
		return 0
	}
	done := r.handOverAll(ctx, id, inv, events)
	if err := r.o.Store.AckOutbox(ctx, id, done); err != nil {
		r.log.ErrorContext(ctx, "acknowledging delivered events", "outbox_id", printable(id), "err", err)
		return 0
	}
	return len(done)
}

// load reads what id holds: an invitation and its events, or (inv nil) a
// user's grant events. A record that is gone holds none.
func (r *Relay) load(ctx context.Context, id string) (*grants.Invitation, []grants.OutboxEvent, error) {
	if userID, ok := grants.OutboxUser(id); ok {
		g, err := r.o.Store.GetGrant(ctx, userID)
		if err != nil {
			return nil, nil, err
		}
		return nil, g.Outbox, nil
	}
	inv, err := r.o.Store.GetInvitation(ctx, id)
	if errors.Is(err, grants.ErrNotFound) {
		return &grants.Invitation{ID: id}, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	return inv, inv.Outbox, nil
}

// printable shows a user's outbox ID without its NUL marker.
func printable(id string) string {
	if u, ok := grants.OutboxUser(id); ok {
		return "user:" + u
	}
	return id
}

// handOverAll hands events over in order, stopping at the first refusal,
// and returns the IDs of those every consumer took.
func (r *Relay) handOverAll(ctx context.Context, id string, inv *grants.Invitation, events []grants.OutboxEvent) []string {
	var done []string
	for _, ev := range events {
		if err := r.handOver(ctx, inv, ev); err != nil {
			r.log.WarnContext(ctx, "event not delivered; it will be handed over again", "outbox_id", printable(id),
				"event_id", ev.ID, "type", ev.Type, "err", err)
			r.loop.NoteRetry(r.o.Now().Add(r.o.Lease))
			break
		}
		done = append(done, ev.ID)
	}
	return done
}

func (r *Relay) handOver(ctx context.Context, inv *grants.Invitation, ev grants.OutboxEvent) error {
	for _, c := range r.o.Consumers {
		if err := c.Consume(ctx, inv, ev); err != nil {
			return err
		}
	}
	return nil
}

// Audit is the consumer that writes the audit log: one record per event,
// with the event's ID, so a repeated hand-over writes it once.
func Audit(st grants.Store) Consumer { return auditConsumer{st} }
