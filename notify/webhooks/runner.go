package webhooks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/grants/outbox"
)

// Run delivers until ctx ends. It wakes on Emit, for its own retries when they
// fall due and otherwise every PollInterval; it trims the delivery log every
// hour.
func (w *Webhooks) Run(ctx context.Context) {
	w.log.Info("webhook worker started", "endpoints", len(w.order))
	defer w.log.Info("webhook worker stopped")
	var lanes sync.WaitGroup
	defer lanes.Wait()
	timer := time.NewTimer(0)
	defer timer.Stop()
	var lastPrune time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		case <-timer.C:
		}
		if now := time.Now(); now.Sub(lastPrune) >= logPruneEvery {
			lastPrune = now
			w.pruneLogs(ctx)
		}
		w.drain(ctx, &lanes)
		if ctx.Err() != nil {
			return
		}
		timer.Reset(w.nextWait())
	}
}

func (w *Webhooks) nextWait() time.Duration {
	wait := w.o.PollInterval
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.nextRetry.IsZero() {
		d := w.nextRetry.Sub(w.o.Now())
		if d < wait {
			wait = max(d, 0)
		}
		if d <= w.o.PollInterval {
			w.nextRetry = time.Time{}
		}
	}
	return wait
}

func (w *Webhooks) noteRetry(at time.Time) {
	w.mu.Lock()
	if w.nextRetry.IsZero() || at.Before(w.nextRetry) {
		w.nextRetry = at
	}
	w.mu.Unlock()
}

func (w *Webhooks) lease() time.Duration {
	if w.o.Lease > 0 {
		return w.o.Lease
	}
	return laneBudget + w.o.Timeout + time.Minute
}

// laneBudget is how long a lane is worked before it is handed back.
func (w *Webhooks) laneBudget() time.Duration {
	if w.o.Lease > 0 {
		return min(laneBudget, w.o.Lease/2)
	}
	return laneBudget
}

// drain claims due lanes while fewer than webhookWorkers are in flight and
// works each in its own goroutine: a slow endpoint holds up its own lanes
// only. A finished lane wakes Run to claim more.
func (w *Webhooks) drain(ctx context.Context, wg *sync.WaitGroup) {
	for ctx.Err() == nil {
		free := webhookWorkers - int(w.inflight.Load())
		if free <= 0 {
			return
		}
		lanes, err := w.o.Store.ClaimJobs(ctx, JobKindWebhook, w.o.Now(), free, w.lease())
		if err != nil {
			if ctx.Err() == nil {
				w.log.Error("claim webhook lanes", "error", err)
			}
			return
		}
		for i := range lanes {
			if !w.startRunning(&lanes[i]) {
				continue
			}
			w.inflight.Add(1)
			wg.Go(func() {
				defer func() { w.inflight.Add(-1); w.poke() }()
				handBack := w.runLane(ctx, &lanes[i])
				// Not running any more before the lane is handed back: a
				// claim after the hand-back is the lane's next turn.
				handBack(w.stopRunning(lanes[i].ID))
			})
		}
		if len(lanes) < free {
			return
		}
	}
}

// startRunning marks a claimed lane as worked here. A lane already worked
// here was claimed again because its lease lapsed mid-run (a stall, a clock
// jump): that run stops at its next event and hands the lane back with this
// newer claim, the one the store's fence now accepts.
func (w *Webhooks) startRunning(claim *grants.Job) bool {
	w.runningMu.Lock()
	defer w.runningMu.Unlock()
	if _, busy := w.running[claim.ID]; busy {
		w.running[claim.ID] = claim
		return false
	}
	w.running[claim.ID] = claim
	return true
}

// stopRunning unmarks a lane and returns its newest claim by this process.
func (w *Webhooks) stopRunning(id string) *grants.Job {
	w.runningMu.Lock()
	defer w.runningMu.Unlock()
	claim := w.running[id]
	delete(w.running, id)
	return claim
}

// runLane delivers a lane's events in order while it holds the lane's
// lease; it returns the hand-back (reschedule or complete the lane), which
// the caller runs, with the newest claim, once the lane is no longer marked
// running.
func (w *Webhooks) runLane(ctx context.Context, lane *grants.Job) (handBack func(claim *grants.Job)) {
	bg := context.WithoutCancel(ctx)
	var lp lanePayload
	if err := json.Unmarshal(lane.Payload, &lp); err != nil || lp.Lane == "" {
		w.log.Error("dropping malformed webhook lane", "job_id", lane.ID, "error", err)
		return func(claim *grants.Job) { w.completeLane(bg, w.log, claim) }
	}
	log := w.log.With("endpoint", lp.Endpoint, "lane", lp.Lane)
	kind := laneKindPrefix + lp.Lane
	retry := func(at time.Time, reason string) func(*grants.Job) {
		return func(claim *grants.Job) { w.retryLane(bg, log, claim, at, reason) }
	}
	started := time.Now()
	for {
		if ctx.Err() != nil {
			return retry(w.o.Now(), "interrupted by shutdown")
		}
		if !w.o.Now().Before(lane.LeaseUntil) {
			// The process stalled past the lease (a pause, a clock jump):
			// another replica may work the lane now, so send nothing more;
			// the fenced hand-back leaves its claim alone.
			log.Warn("webhook lane lease lapsed while working it; stopping")
			return retry(w.o.Now(), "")
		}
		if time.Since(started) > w.laneBudget() {
			return func(claim *grants.Job) { w.retryLane(bg, log, claim, w.o.Now(), ""); w.poke() }
		}
		events, err := w.peek(ctx, kind, 1)
		if err != nil {
			if ctx.Err() == nil {
				log.Error("read webhook lane", "error", err)
			}
			at := w.o.Now().Add(w.o.BaseBackoff)
			w.noteRetry(at)
			return retry(at, outbox.ShortReason("read lane: "+err.Error()))
		}
		if len(events) == 0 {
			return func(claim *grants.Job) { w.finishLane(bg, log, claim, lp) }
		}
		retryAt, done := w.deliver(ctx, log, &events[0])
		if !done {
			if ctx.Err() != nil {
				return retry(w.o.Now(), "interrupted by shutdown")
			}
			w.noteRetry(retryAt)
			return retry(retryAt, "")
		}
	}
}

// finishLane completes an empty lane. An Emit may have stored an event after
// the lane was read empty and found the lane job still there: look again.
func (w *Webhooks) finishLane(ctx context.Context, log *slog.Logger, lane *grants.Job, lp lanePayload) {
	if !w.completeLane(ctx, log, lane) {
		return // another worker holds the lane now and looks for itself
	}
	if n, err := w.o.Store.JobCount(ctx, laneKindPrefix+lp.Lane); err != nil || n > 0 {
		if err := w.enqueueLane(ctx, lp.Lane, lp.Endpoint); err != nil {
			log.Error("requeue webhook lane", "error", err)
		}
		w.poke()
	}
}

// retryLane and completeLane hand a lane back fenced by its claim: after a
// lapsed lease they leave the lane to the worker that claimed it since.
func (w *Webhooks) retryLane(ctx context.Context, log *slog.Logger, lane *grants.Job, at time.Time, reason string) {
	err := w.o.Store.RetryClaimedJob(ctx, lane, at, reason)
	switch {
	case errors.Is(err, grants.ErrLeaseLost):
		log.Warn("webhook lane claimed by another worker after this one's lease lapsed; left to it")
	case err != nil:
		log.Error("reschedule webhook lane", "error", err)
	}
}

func (w *Webhooks) completeLane(ctx context.Context, log *slog.Logger, lane *grants.Job) bool {
	err := w.o.Store.CompleteClaimedJob(ctx, lane)
	switch {
	case errors.Is(err, grants.ErrLeaseLost):
		log.Warn("webhook lane claimed by another worker after this one's lease lapsed; left to it")
		return false
	case err != nil && !errors.Is(err, grants.ErrNotFound):
		log.Error("complete webhook lane", "error", err)
	}
	return true
}

func (w *Webhooks) completeJob(ctx context.Context, id string) {
	if err := w.o.Store.CompleteJob(ctx, id); err != nil && !errors.Is(err, grants.ErrNotFound) {
		w.log.Error("complete webhook job", "job_id", id, "error", err)
	}
}

// dropIfDelivered: a copy queued by a second hand-over (Recheck) whose
// first copy was delivered meanwhile is dropped unsent; dropped is false
// when the copy is to be sent.
func (w *Webhooks) dropIfDelivered(ctx context.Context, log *slog.Logger, job *grants.Job, ev *laneEvent) (retryAt time.Time, done, dropped bool) {
	if !ev.Recheck {
		return time.Time{}, false, false
	}
	pending, err := w.logPending(ctx, ev.LogID)
	switch {
	case err != nil:
		return w.o.Now().Add(w.o.BaseBackoff), false, true
	case !pending:
		w.completeJob(ctx, job.ID)
		log.Info("webhook already delivered; its second hand-over dropped")
		return time.Time{}, true, true
	}
	return time.Time{}, false, false
}

// deliver makes one attempt at a lane's head event. done: the event is
// finished (delivered or given up) and the next one may go; otherwise the
// lane waits until retryAt.
func (w *Webhooks) deliver(ctx context.Context, log *slog.Logger, job *grants.Job) (retryAt time.Time, done bool) {
	bg := context.WithoutCancel(ctx)
	var ev laneEvent
	if err := json.Unmarshal(job.Payload, &ev); err != nil || ev.WebhookID == "" {
		log.Error("dropping malformed webhook event", "job_id", job.ID, "error", err)
		w.completeJob(bg, job.ID)
		return time.Time{}, true
	}
	log = log.With("webhook_id", ev.WebhookID, "event_type", ev.EventType)
	st, ok := decodeState(job.LastError)
	if !ok {
		st = ev.Prior
		st.Status = DeliveryPending
	}
	if retryAt, done, dropped := w.dropIfDelivered(bg, log, job, &ev); dropped {
		return retryAt, done
	}
	ep := w.endpoints[ev.Endpoint]
	if ep == nil {
		st.Status, st.LastError = DeliveryFailed, "endpoint no longer configured"
		w.setLog(bg, log, ev.LogID, st)
		w.completeJob(bg, job.ID)
		log.Warn("webhook given up: endpoint no longer configured")
		return time.Time{}, true
	}

	start := w.o.Now()
	t0 := time.Now()
	code, err := w.send(ctx, ep, &ev)
	if err != nil && ctx.Err() != nil {
		return time.Time{}, false // shutdown: not an attempt
	}
	now := w.o.Now()
	att := WebhookAttempt{At: start, StatusCode: code, DurationMS: time.Since(t0).Milliseconds()}
	if err != nil {
		att.Error = outbox.ShortReason(err.Error())
	}
	st.addAttempt(att)
	return w.settle(bg, log, job, &ev, st, now, err)
}

// addAttempt counts att and keeps it as the last attempt, and in the
// history (its latest webhookHistory entries).
func (s *webhookState) addAttempt(att WebhookAttempt) {
	s.Attempts++
	s.LastAttemptAt, s.LastStatusCode, s.LastError = att.At, att.StatusCode, att.Error
	s.History = append(s.History, att)
	if n := len(s.History) - webhookHistory; n > 0 {
		s.History = slices.Clone(s.History[n:])
	}
}

// settle records the outcome of the attempt that ended at now: delivered
// (cause nil) or, past the event's MaxAge deadline, given up, either of
// which finishes the event (done); otherwise the event stays pending and
// the lane retries it at retryAt (backoff, at the latest at the deadline).
func (w *Webhooks) settle(ctx context.Context, log *slog.Logger, job *grants.Job, ev *laneEvent, st webhookState, now time.Time, cause error) (retryAt time.Time, done bool) {
	if cause == nil {
		st.Status = DeliveryDelivered
		w.setLog(ctx, log, ev.LogID, st)
		w.completeJob(ctx, job.ID)
		log.Info("webhook delivered", "attempts", st.Attempts, "status_code", st.LastStatusCode)
		return time.Time{}, true
	}
	deadline := ev.QueuedAt.Add(w.o.MaxAge)
	if !now.Before(deadline) {
		st.Status = DeliveryFailed
		w.setLog(ctx, log, ev.LogID, st)
		w.completeJob(ctx, job.ID)
		log.Error("webhook given up", "attempts", st.Attempts, "error", cause, "queued_at", ev.QueuedAt)
		return time.Time{}, true
	}
	st.Status = DeliveryPending
	w.setLog(ctx, log, ev.LogID, st)
	if err := w.o.Store.RetryJob(ctx, job.ID, parkedAt, st.encode()); err != nil {
		log.Error("record webhook attempt", "error", err)
	}
	at := now.Add(outbox.Backoff(w.o.BaseBackoff, st.Attempts-ev.Prior.Attempts))
	if at.After(deadline) {
		at = deadline // one last try at the deadline
	}
	log.Warn("webhook failed; will retry", "attempts", st.Attempts, "error", cause, "retry_at", at)
	return at, false
}

// setLog rewrites a delivery log record's state.
func (w *Webhooks) setLog(ctx context.Context, log *slog.Logger, logID string, st webhookState) {
	if err := w.o.Store.RetryJob(ctx, logID, parkedAt, st.encode()); err != nil {
		if errors.Is(err, grants.ErrNotFound) {
			log.Warn("webhook delivery log record is gone (trimmed?)", "log_id", logID)
			return
		}
		log.Error("update webhook delivery log", "error", err)
	}
}

// send POSTs the event once. A non-2xx answer is an error with its code.
func (w *Webhooks) send(ctx context.Context, ep *webhookEndpoint, ev *laneEvent) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, w.o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.URL, bytes.NewReader(ev.Body))
	if err != nil {
		return 0, err
	}
	ts := w.o.Now().Unix()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "usher-webhooks")
	req.Header.Set("webhook-id", ev.WebhookID)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("webhook-signature", signWebhook(ep.keys, ev.WebhookID, ts, ev.Body))
	resp, err := w.o.HTTPClient.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return 0, fmt.Errorf("no answer within %s", w.o.Timeout)
		}
		var ue *url.Error
		if errors.As(err, &ue) { // its message repeats the URL
			return 0, ue.Err
		}
		return 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, fmt.Errorf("answered HTTP %d", resp.StatusCode)
	}
	return resp.StatusCode, nil
}
