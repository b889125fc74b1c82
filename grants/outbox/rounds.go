package outbox

import (
	"context"
	"sync"

	"github.com/usher-oidc/usher/grants"
)

// handOverRounds hands the events of a claim's invitations over in rounds:
// round k takes each record's k-th event, if all its earlier ones were
// taken, to every consumer in order. A BatchConsumer takes a whole round in
// one call (one store write for the claim instead of one per event); the
// others take it Parallel events at a time. A record's events thus still
// reach each consumer in order, each one after every consumer took the one
// before. It returns, per invitation, the IDs of the events all consumers
// took.
func (r *Relay) handOverRounds(ctx context.Context, ids []string, invs []*grants.Invitation) [][]string {
	done := make([][]string, len(ids))
	stopped := make([]bool, len(ids))
	for k := 0; ; k++ {
		var round []int
		for i, inv := range invs {
			if inv != nil && !stopped[i] && k < len(inv.Outbox) {
				round = append(round, i)
			}
		}
		if len(round) == 0 {
			return done
		}
		for _, c := range r.o.Consumers {
			round = r.consumeRound(ctx, c, ids, invs, k, round, stopped)
		}
		for _, i := range round {
			done[i] = append(done[i], invs[i].Outbox[k].ID)
		}
	}
}

// consumeRound hands the k-th events of the invitations in round to c and
// returns those c took; a refused one stops its record for this claim.
func (r *Relay) consumeRound(ctx context.Context, c Consumer, ids []string, invs []*grants.Invitation, k int,
	round []int, stopped []bool) []int {
	if len(round) == 0 {
		return round
	}
	if bc, ok := c.(BatchConsumer); ok && len(round) > 1 {
		ds := make([]Delivery, len(round))
		for j, i := range round {
			ds[j] = Delivery{Inv: invs[i], Event: invs[i].Outbox[k]}
		}
		err := bc.ConsumeBatch(ctx, ds)
		if err == nil {
			return round
		}
		r.log.WarnContext(ctx, "events not taken as a batch; handing them over one by one", "events", len(ds), "err", err)
	}
	failed := make([]bool, len(round))
	sem := make(chan struct{}, r.o.Parallel)
	var wg sync.WaitGroup
	for j, i := range round {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			ev := invs[i].Outbox[k]
			if err := c.Consume(ctx, invs[i], ev); err != nil {
				r.log.WarnContext(ctx, "event not delivered; it will be handed over again", "outbox_id", printable(ids[i]),
					"event_id", ev.ID, "type", ev.Type, "err", err)
				r.loop.NoteRetry(r.o.Now().Add(r.o.Lease))
				failed[j] = true
			}
		})
	}
	wg.Wait()
	kept := make([]int, 0, len(round))
	for j, i := range round {
		if failed[j] {
			stopped[i] = true
		} else {
			kept = append(kept, i)
		}
	}
	return kept
}
