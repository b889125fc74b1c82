package mail

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/grants/outbox"
	"github.com/usher-oidc/usher/internal/brand"
	"github.com/usher-oidc/usher/internal/messages"
)

// JobKindMail is the job kind of queued invitation mails.
const JobKindMail = "mail"

// Sealer encrypts and authenticates a value for storage and opens it again.
// *securecookie.SecureCookie satisfies it; it must be built with a block
// (encryption) key, or the link would only be signed, not hidden.
type Sealer interface {
	Encode(name string, value any) (string, error)
	Decode(name, value string, dst any) error
}

// MailerOptions configures NewMailer.
type MailerOptions struct {
	Store     grants.Store
	Sender    Sender
	Templates *Templates
	Sealer    Sealer
	// AppName is shown in the mail ("… invited you to AppName") when the
	// invitation's client has no name in AppNames (client ID → name).
	AppName  string
	AppNames map[string]string
	// Logo (optional) is embedded in the mail; Accent colours its button.
	Logo   *brand.Logo
	Accent brand.Colours
	Now    func() time.Time
	Logger *slog.Logger
	// PollInterval is how often the worker looks for due jobs when nothing
	// wakes it (another replica's jobs, retries); default 1s.
	PollInterval time.Duration
	// MaxAttempts is how many deliveries are tried before giving up; default 10.
	MaxAttempts int
	// BaseBackoff is the wait after the first failure, doubled per attempt
	// and capped at an hour; default 15s.
	BaseBackoff time.Duration
	// Lease is how long a claimed job is this process's before another
	// replica may take it; default 2 min. Tests set it short to see a killed
	// replica's job handed over; a send is then bounded by half of it.
	Lease time.Duration
}

// Mailer queues invitation mails durably in the store and sends them in the
// background with retries.
type Mailer struct {
	o    MailerOptions
	log  *slog.Logger
	loop *outbox.WakeLoop
}

const (
	mailBatch      = 10
	mailLease      = 2 * time.Minute
	mailSendBudget = time.Minute // < mailLease, so no other worker takes a job mid-send
)

// NewMailer fills in defaults; Store, Sender, Templates and Sealer are required.
func NewMailer(o MailerOptions) *Mailer {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.PollInterval <= 0 {
		o.PollInterval = time.Second
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 10
	}
	if o.BaseBackoff <= 0 {
		o.BaseBackoff = 15 * time.Second
	}
	if o.Lease <= 0 {
		o.Lease = mailLease
	}
	return &Mailer{o: o, log: o.Logger.With("component", "mailer"), loop: outbox.NewWakeLoop(o.PollInterval, o.Now)}
}

// mailPayload is the stored job. Link is sealed: it holds the invitation
// token, which usher never stores in clear. TokenHash is the invitation's
// hash when the mail was queued: a resend replaces it and so orphans the job.
type mailPayload struct {
	InvitationID string `json:"invitation_id"`
	TokenHash    string `json:"token_hash"`
	SealedLink   string `json:"sealed_link"`
}

// sealName binds a sealed link to its invitation: a sealed value copied into
// another invitation's job does not open.
func sealName(invitationID string) string { return "usher-mail-link:" + invitationID }

// EnqueueInvitation queues inv's mail with link outside the outbox (for
// tools and tests): it stores the status "queued", as a grants.Service
// write does with its event, then hands Consume an event of its own.
func (m *Mailer) EnqueueInvitation(ctx context.Context, inv *grants.Invitation, link string) error {
	if inv == nil || inv.ID == "" || inv.TokenHash == "" {
		return errors.New("mailer: enqueue: invitation without id or token hash")
	}
	if link == "" {
		return fmt.Errorf("mailer: enqueue invitation %s: empty link", inv.ID)
	}
	sealed, err := m.SealLink(inv.ID, link)
	if err != nil {
		return fmt.Errorf("mailer: enqueue invitation %s: seal link: %w", inv.ID, err)
	}
	if _, err := m.o.Store.UpdateInvitation(ctx, inv.ID, func(i *grants.Invitation) error {
		i.EmailStatus, i.EmailError = "queued", ""
		return nil
	}); err != nil {
		return fmt.Errorf("mailer: enqueue invitation %s: %w", inv.ID, err)
	}
	return m.Consume(ctx, inv, grants.OutboxEvent{ID: "evt_" + outbox.RandomHex(12), Type: grants.EventInvitationCreated,
		At: m.o.Now(), SealedLink: sealed, TokenHash: inv.TokenHash})
}

// QueueDepth counts queued mail jobs, for metrics.
func (m *Mailer) QueueDepth(ctx context.Context) (int, error) {
	return m.o.Store.JobCount(ctx, JobKindMail)
}

// Run drains the queue until ctx ends. It wakes on EnqueueInvitation at once,
// for its own retries when they fall due, and otherwise every PollInterval.
func (m *Mailer) Run(ctx context.Context) {
	m.log.Info("mail worker started")
	defer m.log.Info("mail worker stopped")
	m.loop.Run(ctx, m.drain)
}

// drain claims and processes due jobs until fewer than a full batch are due.
func (m *Mailer) drain(ctx context.Context) {
	for ctx.Err() == nil {
		jobs, err := m.o.Store.ClaimJobs(ctx, JobKindMail, m.o.Now(), mailBatch, m.o.Lease)
		if err != nil {
			if ctx.Err() == nil {
				m.log.Error("claim mail jobs", "error", err)
			}
			return
		}
		var wg sync.WaitGroup
		for i := range jobs {
			wg.Go(func() { m.process(ctx, &jobs[i]) })
		}
		wg.Wait()
		if len(jobs) < mailBatch {
			return
		}
	}
}

// process handles one claimed job.
func (m *Mailer) process(ctx context.Context, job *grants.Job) {
	log := m.log.With("job_id", job.ID, "attempt", job.Attempts)
	// Store writes about the outcome must happen even if ctx ends now.
	bg := context.WithoutCancel(ctx)

	var p mailPayload
	if err := json.Unmarshal(job.Payload, &p); err != nil || p.InvitationID == "" {
		log.Error("dropping malformed mail job", "error", err)
		m.complete(bg, log, job)
		return
	}
	log = log.With("invitation_id", p.InvitationID)

	inv, ok := m.pendingInvitation(ctx, log, job, p)
	if !ok {
		return
	}
	msg, ok := m.compose(bg, log, job, p, inv)
	if !ok {
		return
	}

	sendCtx, cancel := context.WithTimeout(ctx, min(mailSendBudget, m.o.Lease/2))
	err := m.o.Sender.Send(sendCtx, msg)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			m.release(bg, log, job)
			return
		}
		m.retry(bg, log, job, p, err)
		return
	}
	m.sent(bg, log, job, p)
}

// pendingInvitation loads the job's invitation and checks that its mail is
// still to be sent; when not (ok false), it has dealt with the job already
// (dropped it, released it at shutdown, or handed it to retry).
func (m *Mailer) pendingInvitation(ctx context.Context, log *slog.Logger, job *grants.Job, p mailPayload) (inv *grants.Invitation, ok bool) {
	// Store writes about the outcome must happen even if ctx ends now.
	bg := context.WithoutCancel(ctx)
	inv, err := m.o.Store.GetInvitation(ctx, p.InvitationID)
	if errors.Is(err, grants.ErrNotFound) {
		log.Warn("dropping mail job: invitation not found")
		m.complete(bg, log, job)
		return nil, false
	}
	if err != nil {
		if ctx.Err() != nil {
			m.release(bg, log, job)
			return nil, false
		}
		m.retry(bg, log, job, p, fmt.Errorf("load invitation: %w", err))
		return nil, false
	}
	if inv.TokenHash != p.TokenHash {
		// A resend gave the invitation a new token (and its own job).
		log.Info("dropping mail job: invitation token was replaced")
		m.complete(bg, log, job)
		return nil, false
	}
	if inv.EmailStatus == "sent" {
		// This token's mail went out (the status is only set for the
		// current token): the job is a second copy, queued by an event
		// handed over again after its runner died before acknowledging it.
		log.Info("dropping mail job: the mail of this link was already sent")
		m.complete(bg, log, job)
		return nil, false
	}
	if st := inv.EffectiveStatus(m.o.Now()); st != grants.StatusPending {
		log.Info("dropping mail job: invitation is no longer pending", "status", string(st))
		m.update(bg, log, p, func(i *grants.Invitation) {
			if i.EmailStatus == "queued" {
				i.EmailStatus, i.EmailError = "failed", "not sent: invitation "+string(st)
			}
		})
		m.complete(bg, log, job)
		return nil, false
	}
	return inv, true
}

// compose unseals the job's link and renders the invitation mail; when it
// cannot (ok false), it has given the job up.
func (m *Mailer) compose(ctx context.Context, log *slog.Logger, job *grants.Job, p mailPayload, inv *grants.Invitation) (msg Message, ok bool) {
	var link string
	if err := m.o.Sealer.Decode(sealName(p.InvitationID), p.SealedLink, &link); err != nil {
		// Permanent: the sealing keys changed (or the payload was altered).
		m.giveUp(ctx, log, job, p, "the queued link could not be unsealed (were the keys changed?)", err)
		return Message{}, false
	}
	msg, err := m.o.Templates.Invitation(InvitationMail{
		AppName: m.appName(inv.ClientID), Inviter: inv.Inviter, Email: inv.Email, Link: link,
		ExpiresAt: inv.ExpiresAt, Roles: inv.Roles, Logo: m.o.Logo, Accent: m.o.Accent,
		Lang: messages.Negotiate(inv.Locale, ""),
	})
	if err != nil {
		m.giveUp(ctx, log, job, p, outbox.ShortReason(err.Error()), err)
		return Message{}, false
	}
	return msg, true
}

// sent records a delivered mail on the invitation and completes its job.
func (m *Mailer) sent(ctx context.Context, log *slog.Logger, job *grants.Job, p mailPayload) {
	// Status first, job last: once the queue is empty the invitation tells
	// the outcome, and a crash in between at worst sends the mail twice.
	now := m.o.Now()
	m.update(ctx, log, p, func(i *grants.Invitation) {
		i.EmailStatus, i.EmailError = "sent", ""
		i.Events = append(i.Events, grants.Event{Type: "mailed", At: now})
	})
	if err := m.o.Store.CompleteClaimedJob(ctx, job); errors.Is(err, grants.ErrLeaseLost) {
		// This send outlived its lease: another worker holds the job now
		// and sends too (at least once).
		log.Warn("mail sent after its job's lease lapsed; another worker holds the job")
	} else if err != nil {
		// The lease will lapse and the mail go out again: at least once.
		log.Error("complete mail job", "error", err)
	}
	log.Info("invitation mail sent")
}

// appName is the display name of the invitation's client, else AppName.
func (m *Mailer) appName(clientID string) string {
	if n := m.o.AppNames[clientID]; n != "" {
		return n
	}
	return m.o.AppName
}

// retry schedules the job again with exponential backoff and records the
// error, or gives up once MaxAttempts deliveries have failed.
func (m *Mailer) retry(ctx context.Context, log *slog.Logger, job *grants.Job, p mailPayload, cause error) {
	reason := outbox.ShortReason(cause.Error())
	if job.Attempts >= m.o.MaxAttempts {
		m.giveUp(ctx, log, job, p, reason, cause)
		return
	}
	at := m.o.Now().Add(outbox.Backoff(m.o.BaseBackoff, job.Attempts))
	if err := m.o.Store.RetryClaimedJob(ctx, job, at, reason); err != nil {
		// Lease lost: the job and the invitation's mail status are another
		// worker's now.
		log.Error("reschedule mail job", "error", err)
		return
	}
	m.loop.NoteRetry(at)
	log.Warn("invitation mail failed; will retry", "error", cause, "retry_at", at)
	m.update(ctx, log, p, func(i *grants.Invitation) {
		i.EmailStatus, i.EmailError = "queued", reason
	})
}

// giveUp deletes the job and marks the invitation's mail as failed.
func (m *Mailer) giveUp(ctx context.Context, log *slog.Logger, job *grants.Job, p mailPayload, reason string, cause error) {
	now := m.o.Now()
	m.update(ctx, log, p, func(i *grants.Invitation) {
		i.EmailStatus, i.EmailError = "failed", reason
		i.Events = append(i.Events, grants.Event{Type: "mail_failed", At: now, Detail: map[string]string{"reason": reason}})
	})
	m.complete(ctx, log, job)
	log.Error("invitation mail given up", "error", cause)
}

// release hands a job back at shutdown, due now rather than after its lease.
func (m *Mailer) release(ctx context.Context, log *slog.Logger, job *grants.Job) {
	if err := m.o.Store.RetryClaimedJob(ctx, job, m.o.Now(), "interrupted by shutdown"); err != nil && !errors.Is(err, grants.ErrLeaseLost) {
		log.Error("release mail job", "error", err)
	}
}

func (m *Mailer) complete(ctx context.Context, log *slog.Logger, job *grants.Job) {
	if err := m.o.Store.CompleteClaimedJob(ctx, job); err != nil && !errors.Is(err, grants.ErrNotFound) && !errors.Is(err, grants.ErrLeaseLost) {
		log.Error("delete mail job", "error", err)
	}
}

// update applies fn to the invitation unless a resend replaced its token in
// the meantime (the new token's job owns the mail status then).
func (m *Mailer) update(ctx context.Context, log *slog.Logger, p mailPayload, fn func(*grants.Invitation)) {
	_, err := m.o.Store.UpdateInvitation(ctx, p.InvitationID, func(i *grants.Invitation) error {
		if i.TokenHash != p.TokenHash {
			return grants.ErrSkipUpdate
		}
		fn(i)
		return nil
	})
	if err != nil && !errors.Is(err, grants.ErrSkipUpdate) && !errors.Is(err, grants.ErrNotFound) {
		log.Error("update invitation mail status", "error", err)
	}
}
