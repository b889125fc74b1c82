package auth0

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/usher-oidc/usher/broker/upstream"
	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/grants/outbox"

	"github.com/auth0/go-auth0/management"
	"golang.org/x/oauth2"
)

// Run drains the queue until ctx ends. It wakes on an enqueue at once, for
// its own retries when they fall due (never before a 429's Retry-After),
// and otherwise every PollInterval.
func (m *Mirror) Run(ctx context.Context) {
	m.log.Info("auth0 mirror worker started")
	defer m.log.Info("auth0 mirror worker stopped")
	m.loop.Run(ctx, m.drain)
}

// drain claims and processes due jobs until fewer than a full batch are due.
// Jobs run one at a time: app_metadata is read, merged and written back, and
// go-auth0 v1.10.0's retry jitter is not safe for concurrent requests on one
// client (auth0/go-auth0#780, fixed in v1.42.1).
func (m *Mirror) drain(ctx context.Context) {
	m.work.Lock() // a second Run on the same Mirror waits its turn
	defer m.work.Unlock()
	for ctx.Err() == nil {
		if m.o.Now().Before(m.pausedUntil()) {
			return
		}
		jobs, err := m.o.Store.ClaimJobs(ctx, JobKindMirror, m.o.Now(), mirrorBatch, m.o.Lease)
		if err != nil {
			if ctx.Err() == nil {
				m.log.Error("claim auth0 mirror jobs", "error", err)
			}
			return
		}
		for i := range jobs {
			if ctx.Err() != nil {
				m.release(context.WithoutCancel(ctx), m.log.With("job_id", jobs[i].ID), &jobs[i])
				continue
			}
			m.process(ctx, &jobs[i])
		}
		if len(jobs) < mirrorBatch {
			return
		}
	}
}

// process handles one claimed job.
func (m *Mirror) process(ctx context.Context, job *grants.Job) {
	log := m.log.With("job_id", job.ID, "attempt", job.Attempts)
	// Store writes about the outcome must happen even if ctx ends now.
	bg := context.WithoutCancel(ctx)

	var p mirrorPayload
	if err := json.Unmarshal(job.Payload, &p); err != nil || p.UpstreamUser == "" || !slices.Contains([]string{opRedeem, opRevoke, opErase}, p.Op) {
		log.Error("dropping malformed auth0 mirror job", "error", err)
		m.complete(bg, log, job)
		return
	}
	log = log.With("op", p.Op, "upstream_user", p.UpstreamUser)
	if p.InvitationID != "" {
		log = log.With("invitation_id", p.InvitationID)
	}
	if m.o.Now().Before(m.pausedUntil()) {
		// Another job of this batch hit the rate limit: wait with it.
		m.reschedule(bg, log, job, p, m.pausedUntil(), "waiting for the Auth0 rate limit to reset", false)
		return
	}

	held, err := m.leaseUser(bg, p.UpstreamUser, m.o.Lease)
	if errors.Is(err, errUserBusy) {
		m.reschedule(bg, log, job, p, m.o.Now().Add(userBusyRetry), "", false)
		return
	}
	if err != nil {
		m.failed(bg, log, job, p, &rateNote{}, err)
		return
	}
	// Released once the job's store writes are done (deferred: every
	// return below has made them).
	defer m.releaseUser(bg, held)
	defer m.releasePrimary(bg, &p) // a linked account's primary (linked.go)

	note := &rateNote{}
	missing, err := m.run(ctx, note, &p)
	if errors.Is(err, errUserBusy) { // the primary a linked account moved into
		m.reschedule(bg, log, job, p, m.o.Now().Add(userBusyRetry), "", false)
		return
	}
	if err != nil {
		if ctx.Err() != nil {
			m.release(bg, log, job)
			return
		}
		m.failed(bg, log, job, p, note, err)
		return
	}

	m.succeeded(bg, log, job, p, missing)
}

// succeeded records a job that ran through: a redemption's final mirror
// status (failed when roles were missing), then the job's completion.
func (m *Mirror) succeeded(ctx context.Context, log *slog.Logger, job *grants.Job, p mirrorPayload, missing []string) {
	// Status first, job last: once the queue is empty the invitation tells
	// the outcome; a crash in between repeats an idempotent update.
	if p.Op == opRedeem {
		if len(missing) > 0 {
			reason := fmt.Sprintf("role(s) not found in Auth0: %s (create them there, or set create_roles: true); the other roles and app_metadata were synced",
				strings.Join(missing, ", "))
			m.finish(ctx, log, p, upstream.EventMirrorFailed, job.Attempts, reason)
			log.Warn("auth0 roles missing", "roles", missing)
		} else {
			m.finish(ctx, log, p, upstream.EventMirrored, job.Attempts, "")
		}
	}
	m.complete(ctx, log, job)
	log.Info("auth0 updated")
}

// run makes the job's Management API calls within the job's budget.
func (m *Mirror) run(ctx context.Context, note *rateNote, p *mirrorPayload) (missing []string, err error) {
	callCtx, cancel := context.WithTimeout(context.WithValue(ctx, rateNoteKey{}, note), min(mirrorJobBudget, m.o.Lease/2))
	defer cancel()
	switch p.Op {
	case opRedeem:
		return m.redeem(callCtx, p)
	case opErase:
		return nil, m.erase(callCtx, p)
	default:
		return nil, m.revoke(callCtx, p)
	}
}

// failed decides between a retry and giving up.
func (m *Mirror) failed(ctx context.Context, log *slog.Logger, job *grants.Job, p mirrorPayload, note *rateNote, cause error) {
	reason := outbox.ShortReason(describeMirrorError(cause))
	status := statusOf(cause)
	if permanentStatus(status) {
		m.giveUp(ctx, log, job, p, reason, cause)
		return
	}
	now := m.o.Now()
	if now.Sub(job.CreatedAt) >= m.o.MaxAge {
		m.giveUp(ctx, log, job, p, outbox.ShortReason(fmt.Sprintf("gave up after %s: %s", m.o.MaxAge, reason)), cause)
		return
	}
	at := now.Add(outbox.Backoff(m.o.BaseBackoff, job.Attempts))
	if until, paced := pacedUntil(cause); paced {
		// Not a failure: the budget is spent; back when it allows.
		m.reschedule(ctx, log, job, p, until, "waiting for the Auth0 rate limit to reset", false)
		log.Info("auth0 update waits for the Management API budget", "retry_at", until)
		return
	}
	if status == http.StatusTooManyRequests {
		note.mu.Lock()
		until := note.until
		note.mu.Unlock()
		if !until.IsZero() {
			at = until // exactly what Auth0 asked for, not a guess
			m.pause(until)
		}
	}
	m.reschedule(ctx, log, job, p, at, reason, true)
	log.Warn("auth0 update failed; will retry", "error", cause, "retry_at", at)
}

// reschedule puts the job back at `at`; noteErr also records the error on
// the invitation's pending status.
func (m *Mirror) reschedule(ctx context.Context, log *slog.Logger, job *grants.Job, p mirrorPayload, at time.Time, reason string, noteErr bool) {
	if err := m.o.Store.RetryClaimedJob(ctx, job, at, reason); err != nil {
		// Lease lost: the job is another worker's now.
		log.Error("reschedule auth0 mirror job", "error", err)
		return
	}
	m.loop.NoteRetry(at)
	if !noteErr || p.InvitationID == "" {
		return
	}
	_, err := m.o.Store.UpdateInvitation(ctx, p.InvitationID, func(i *grants.Invitation) error {
		k := lastMirrorEvent(i)
		if k < 0 || i.Events[k].Type != upstream.EventMirrorQueued {
			return grants.ErrSkipUpdate
		}
		d := maps.Clone(i.Events[k].Detail)
		if d == nil {
			d = make(map[string]string)
		}
		d["last_error"] = reason
		d["attempts"] = strconv.Itoa(job.Attempts)
		d["retry_at"] = at.UTC().Format(time.RFC3339)
		i.Events[k].Detail = d
		return nil
	})
	if err != nil && !errors.Is(err, grants.ErrSkipUpdate) && !errors.Is(err, grants.ErrNotFound) {
		log.Error("update invitation mirror status", "error", err)
	}
}

func lastMirrorEvent(inv *grants.Invitation) int {
	for k := len(inv.Events) - 1; k >= 0; k-- {
		switch inv.Events[k].Type {
		case upstream.EventMirrorQueued, upstream.EventMirrored, upstream.EventMirrorFailed:
			return k
		}
	}
	return -1
}

// giveUp deletes the job and marks the invitation's mirror as failed.
func (m *Mirror) giveUp(ctx context.Context, log *slog.Logger, job *grants.Job, p mirrorPayload, reason string, cause error) {
	m.finish(ctx, log, p, upstream.EventMirrorFailed, job.Attempts, reason)
	m.complete(ctx, log, job)
	log.Error("auth0 update given up", "error", cause)
}

// finish appends the final mirror event to the job's invitation (if any).
func (m *Mirror) finish(ctx context.Context, log *slog.Logger, p mirrorPayload, typ string, attempts int, reason string) {
	if p.InvitationID == "" {
		return
	}
	now := m.o.Now()
	d := map[string]string{"upstream_user": p.UpstreamUser}
	if p.linkedTo != "" {
		d["linked_to"] = p.linkedTo // the Auth0 primary account that was updated
	}
	if attempts > 0 {
		d["attempts"] = strconv.Itoa(attempts)
	}
	if reason != "" {
		d["reason"] = reason
	}
	_, err := m.o.Store.UpdateInvitation(ctx, p.InvitationID, func(i *grants.Invitation) error {
		i.Events = append(i.Events, grants.Event{Type: typ, At: now, Detail: d})
		return nil
	})
	if err != nil && !errors.Is(err, grants.ErrNotFound) {
		log.Error("update invitation mirror status", "error", err)
	}
}

// release hands a job back at shutdown, due now rather than after its
// lease, keeping the error of its last real attempt.
func (m *Mirror) release(ctx context.Context, log *slog.Logger, job *grants.Job) {
	reason := job.LastError
	if reason == "" {
		reason = "interrupted by shutdown"
	}
	if err := m.o.Store.RetryClaimedJob(ctx, job, m.o.Now(), reason); err != nil && !errors.Is(err, grants.ErrLeaseLost) {
		log.Error("release auth0 mirror job", "error", err)
	}
}

func (m *Mirror) complete(ctx context.Context, log *slog.Logger, job *grants.Job) {
	if err := m.o.Store.CompleteClaimedJob(ctx, job); err != nil && !errors.Is(err, grants.ErrNotFound) && !errors.Is(err, grants.ErrLeaseLost) {
		log.Error("delete auth0 mirror job", "error", err)
	}
}

// statusOf is the HTTP status behind a go-auth0 error (API or token
// request), or 0 for a transport error.
func statusOf(err error) int {
	var merr management.Error
	if errors.As(err, &merr) {
		return merr.Status()
	}
	var rerr *oauth2.RetrieveError
	if errors.As(err, &rerr) && rerr.Response != nil {
		return rerr.Response.StatusCode
	}
	return 0
}

// permanentStatus: the request itself is wrong (or the user is gone);
// repeating it cannot help. 401/403 are not permanent: credentials and
// grants are fixed in the Auth0 dashboard while the job waits.
func permanentStatus(status int) bool {
	switch status {
	case http.StatusBadRequest, http.StatusNotFound, http.StatusConflict, http.StatusUnprocessableEntity:
		return true
	}
	return false
}

// errUserGone marks a 404 for the user itself.
type errUserGone struct{ user string }

func (e errUserGone) Error() string { return "user " + e.user + " not found in Auth0" }

func describeMirrorError(err error) string {
	var gone errUserGone
	if errors.As(err, &gone) {
		return gone.Error()
	}
	var rerr *oauth2.RetrieveError
	if errors.As(err, &rerr) && rerr.Response != nil {
		msg := "Management API token: " + rerr.Response.Status
		if rerr.ErrorCode != "" {
			msg += ": " + rerr.ErrorCode
			if rerr.ErrorDescription != "" {
				msg += " (" + rerr.ErrorDescription + ")"
			}
		}
		return msg
	}
	return err.Error()
}

// retryable hides a status that would otherwise count as permanent.
type retryable struct{ err error }

func (r retryable) Error() string { return r.err.Error() }

// errUserGoneStatus is errUserGone with a 404 status, so it is permanent.
type errUserGoneStatus struct{ errUserGone }

func (e errUserGoneStatus) Status() int { return http.StatusNotFound }

func (e errUserGoneStatus) Unwrap() error { return e.errUserGone }
