package mail_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net"
	netmail "net/mail"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/usher-oidc/usher/internal/testkit"

	"github.com/usher-oidc/usher/notify/mail"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/gorilla/securecookie"

	"github.com/usher-oidc/usher/grants"
)

// ---- a recording SMTP server ----

type received struct {
	From string
	To   []string
	Data []byte
}

type smtpServer struct {
	Host string
	Port int

	user, pass string
	failFirst  int  // refuse this many deliveries at DATA with a 451
	failAlways bool // refuse every delivery

	mu       sync.Mutex
	attempts int // DATA commands seen
	msgs     []received
}

func (s *smtpServer) delivered() []received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]received(nil), s.msgs...)
}

func (s *smtpServer) dataAttempts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempts
}

type smtpSession struct {
	srv    *smtpServer
	authed bool
	from   string
	to     []string
}

func (s *smtpSession) AuthMechanisms() []string {
	if s.srv.user == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (s *smtpSession) Auth(mech string) (sasl.Server, error) {
	if mech != sasl.Plain {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if username != s.srv.user || password != s.srv.pass {
			return smtp.ErrAuthFailed
		}
		s.authed = true
		return nil
	}), nil
}

func (s *smtpSession) Mail(from string, _ *smtp.MailOptions) error {
	if s.srv.user != "" && !s.authed {
		return smtp.ErrAuthRequired
	}
	s.from = from
	return nil
}

func (s *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}

func (s *smtpSession) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.srv.mu.Lock()
	defer s.srv.mu.Unlock()
	s.srv.attempts++
	if s.srv.failAlways || s.srv.attempts <= s.srv.failFirst {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "mailbox busy, try again later"}
	}
	s.srv.msgs = append(s.srv.msgs, received{From: s.from, To: append([]string(nil), s.to...), Data: data})
	return nil
}

func (s *smtpSession) Reset()        { s.from, s.to = "", nil }
func (s *smtpSession) Logout() error { return nil }

var _ smtp.AuthSession = (*smtpSession)(nil)

func startSMTP(t *testing.T, srv *smtpServer) *smtpServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &smtpSession{srv: srv}, nil
	}))
	s.Domain = "localhost"
	s.AllowInsecureAuth = true
	s.ReadTimeout = 10 * time.Second
	s.WriteTimeout = 10 * time.Second
	s.ErrorLog = log4t{t}
	go func() { _ = s.Serve(l) }()
	t.Cleanup(func() { _ = s.Close() })
	addr := l.Addr().(*net.TCPAddr)
	srv.Host, srv.Port = "127.0.0.1", addr.Port
	return srv
}

type log4t struct{ t *testing.T }

func (l log4t) Printf(format string, v ...any) { l.t.Logf("smtp server: "+format, v...) }
func (l log4t) Println(v ...any)               { l.t.Log(append([]any{"smtp server:"}, v...)...) }

func (s *smtpServer) sender(t *testing.T) *mail.SMTPSender {
	t.Helper()
	snd, err := mail.NewSMTPSender(mail.SMTPConfig{
		Host: s.Host, Port: s.Port, TLS: "none", Username: s.user, Password: s.pass,
		From: "Usher <no-reply@usher.example>", Timeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	return snd
}

// ---- parsing what arrived ----

type parsedMail struct {
	Header     netmail.Header
	Subject    string
	Text, HTML string
}

func parseMail(t *testing.T, data []byte) parsedMail {
	t.Helper()
	msg, err := netmail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("parse message: %v\n%s", err, data)
	}
	var dec mime.WordDecoder
	subject, err := dec.DecodeHeader(msg.Header.Get("Subject"))
	if err != nil {
		t.Fatal(err)
	}
	p := parsedMail{Header: msg.Header, Subject: subject}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		t.Fatal(err)
	}
	if mt != "multipart/alternative" {
		t.Fatalf("Content-Type %q, want multipart/alternative", mt)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		part, err := mr.NextPart() // decodes quoted-printable
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(part)
		if err != nil {
			t.Fatal(err)
		}
		if strings.EqualFold(part.Header.Get("Content-Transfer-Encoding"), "base64") {
			if body, err = base64.StdEncoding.DecodeString(strings.Join(strings.Fields(string(body)), "")); err != nil {
				t.Fatal(err)
			}
		}
		pt, _, _ := mime.ParseMediaType(part.Header.Get("Content-Type"))
		switch pt {
		case "text/plain":
			p.Text = string(body)
		case "text/html":
			p.HTML = string(body)
		}
	}
	return p
}

// ---- shared fixtures ----

func sealer() *securecookie.SecureCookie {
	return securecookie.New(securecookie.GenerateRandomKey(32), securecookie.GenerateRandomKey(32))
}

// recordingStore remembers the mail status after every UpdateInvitation.
type recordingStore struct {
	grants.Store
	mu      sync.Mutex
	history []string // "status|error"
}

func (r *recordingStore) UpdateInvitation(ctx context.Context, id string, fn func(*grants.Invitation) error) (*grants.Invitation, error) {
	inv, err := r.Store.UpdateInvitation(ctx, id, fn)
	if err == nil {
		r.mu.Lock()
		r.history = append(r.history, inv.EmailStatus+"|"+inv.EmailError)
		r.mu.Unlock()
	}
	return inv, err
}

func (r *recordingStore) statuses() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.history...)
}

func newMailer(t *testing.T, st grants.Store, snd mail.Sender, mod func(*mail.MailerOptions)) *mail.Mailer {
	t.Helper()
	tpl, err := mail.LoadTemplates("")
	if err != nil {
		t.Fatal(err)
	}
	o := mail.MailerOptions{
		Store: st, Sender: snd, Templates: tpl, Sealer: sealer(), AppName: "Acme Portal",
		Logger: testkit.Logger(t), BaseBackoff: 10 * time.Millisecond,
	}
	if mod != nil {
		mod(&o)
	}
	return mail.NewMailer(o)
}

func runMailer(t *testing.T, m *mail.Mailer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func waitQueueEmpty(t *testing.T, m *mail.Mailer) {
	t.Helper()
	testkit.Eventually(t, "the mail queue to drain", func() bool {
		n, err := m.QueueDepth(context.Background())
		return err == nil && n == 0
	})
}

// ---- SMTP sender ----

func TestSMTPSenderDeliversMultipartWithAuth(t *testing.T) {
	t.Parallel()
	srv := startSMTP(t, &smtpServer{user: "mailer", pass: "s3cret"})
	link := "https://usher.example.com/invite/inv_abc?x=1&y=2"
	err := srv.sender(t).Send(t.Context(), mail.Message{
		To: "bob@example.com", Subject: "Alice invited you to Acme Portal",
		Text: "Open " + link + " to join.", HTML: `<p><a href="` + strings.ReplaceAll(link, "&", "&amp;") + `">Join</a></p>`,
	})
	if err != nil {
		t.Fatal(err)
	}
	msgs := srv.delivered()
	if len(msgs) != 1 {
		t.Fatalf("%d messages arrived, want 1", len(msgs))
	}
	got := msgs[0]
	if got.From != "no-reply@usher.example" || len(got.To) != 1 || got.To[0] != "bob@example.com" {
		t.Fatalf("envelope from %q to %q", got.From, got.To)
	}
	p := parseMail(t, got.Data)
	if from, err := netmail.ParseAddress(p.Header.Get("From")); err != nil || from.Address != "no-reply@usher.example" || from.Name != "Usher" {
		t.Errorf("From header %q (%v)", p.Header.Get("From"), err)
	}
	if to, err := netmail.ParseAddress(p.Header.Get("To")); err != nil || to.Address != "bob@example.com" {
		t.Errorf("To header %q (%v)", p.Header.Get("To"), err)
	}
	if p.Subject != "Alice invited you to Acme Portal" {
		t.Errorf("Subject %q", p.Subject)
	}
	if _, err := p.Header.Date(); err != nil {
		t.Errorf("Date header: %v", err)
	}
	if id := p.Header.Get("Message-Id"); !strings.HasSuffix(id, "@usher.example>") {
		t.Errorf("Message-ID %q", id)
	}
	if !strings.Contains(p.Text, link) {
		t.Errorf("text part lacks the link:\n%s", p.Text)
	}
	if !strings.Contains(p.HTML, strings.ReplaceAll(link, "&", "&amp;")) {
		t.Errorf("HTML part lacks the link:\n%s", p.HTML)
	}
}

func TestSMTPSenderWrongPassword(t *testing.T) {
	t.Parallel()
	srv := startSMTP(t, &smtpServer{user: "mailer", pass: "s3cret"})
	snd, err := mail.NewSMTPSender(mail.SMTPConfig{Host: srv.Host, Port: srv.Port, TLS: "none", Username: "mailer", Password: "wrong", From: "no-reply@usher.example"})
	if err != nil {
		t.Fatal(err)
	}
	if err := snd.Send(t.Context(), mail.Message{To: "bob@example.com", Subject: "s", Text: "t"}); err == nil {
		t.Fatal("send with a wrong password succeeded")
	}
	if n := len(srv.delivered()); n != 0 {
		t.Fatalf("%d messages delivered", n)
	}
}

func TestNewSMTPSenderValidates(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]mail.SMTPConfig{
		"no host":                  {From: "a@example.com"},
		"no from":                  {Host: "smtp.example.com"},
		"bad from":                 {Host: "smtp.example.com", From: "not an address"},
		"bad tls":                  {Host: "smtp.example.com", From: "a@example.com", TLS: "maybe"},
		"password in clear remote": {Host: "smtp.example.com", From: "a@example.com", TLS: "none", Username: "u", Password: "p"},
		"bad port":                 {Host: "smtp.example.com", From: "a@example.com", Port: 70000},
	} {
		if _, err := mail.NewSMTPSender(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	for _, cfg := range []mail.SMTPConfig{
		{Host: "smtp.example.com", From: "a@example.com", Username: "u", Password: "p"},
		{Host: "smtp.example.com", From: "a@example.com", TLS: "tls"},
		{Host: "localhost", From: "a@example.com", TLS: "none", Username: "u", Password: "p"},
	} {
		if _, err := mail.NewSMTPSender(cfg); err != nil {
			t.Errorf("%+v: %v", cfg, err)
		}
	}
}

// ---- Mailer ----

func TestMailerEndToEnd(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	st, dbPath := testkit.OpenBolt(t)
	srv := startSMTP(t, &smtpServer{user: "mailer", pass: "s3cret"})
	m := newMailer(t, st, srv.sender(t), nil)
	inv, token, link := testkit.PendingInvitation(t, st, "bob@example.com")

	// The worker is not running yet: the job stays queued for inspection.
	if err := m.EnqueueInvitation(ctx, inv, link); err != nil {
		t.Fatal(err)
	}
	if got := testkit.Invitation(t, st, inv.ID).EmailStatus; got != "queued" {
		t.Fatalf("EmailStatus %q after enqueue, want queued", got)
	}
	if n, err := m.QueueDepth(ctx); err != nil || n != 1 {
		t.Fatalf("QueueDepth = %d, %v; want 1", n, err)
	}
	jobs, err := st.ClaimJobs(ctx, mail.JobKindMail, time.Now(), 10, time.Minute)
	if err != nil || len(jobs) != 1 {
		t.Fatalf("claim: %d jobs, %v", len(jobs), err)
	}
	secret := strings.TrimPrefix(token, "inv_")
	for _, s := range []string{token, secret, link} {
		if bytes.Contains(jobs[0].Payload, []byte(s)) {
			t.Fatalf("job payload holds the token/link in clear: %s", jobs[0].Payload)
		}
	}
	raw, err := os.ReadFile(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(secret)) {
		t.Fatal("the database file holds the invitation token in clear")
	}
	// Hand the job back (as a worker whose lease lapsed would).
	if err := st.RetryJob(ctx, jobs[0].ID, time.Now(), ""); err != nil {
		t.Fatal(err)
	}

	runMailer(t, m)
	testkit.Eventually(t, "the mail to arrive", func() bool { return len(srv.delivered()) == 1 })
	testkit.Eventually(t, "EmailStatus sent", func() bool { return testkit.Invitation(t, st, inv.ID).EmailStatus == "sent" })
	got := testkit.Invitation(t, st, inv.ID)
	if got.EmailError != "" || !got.HasEvent("mailed") {
		t.Fatalf("invitation after sending: error %q, events %+v", got.EmailError, got.Events)
	}
	waitQueueEmpty(t, m)

	msg := srv.delivered()[0]
	if len(msg.To) != 1 || msg.To[0] != "bob@example.com" {
		t.Fatalf("sent to %q", msg.To)
	}
	p := parseMail(t, msg.Data)
	if p.Subject != "Alice Admin invited you to Acme Portal" {
		t.Errorf("Subject %q", p.Subject)
	}
	if !strings.Contains(p.Text, link) || !strings.Contains(p.HTML, `href="`+link+`"`) {
		t.Errorf("link missing from a part:\n%s\n%s", p.Text, p.HTML)
	}
	if len(srv.delivered()) != 1 {
		t.Fatal("the mail went out more than once")
	}
}

func TestMailerRetriesThenDelivers(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	bolt, _ := testkit.OpenBolt(t)
	st := &recordingStore{Store: bolt}
	srv := startSMTP(t, &smtpServer{failFirst: 2})
	m := newMailer(t, st, srv.sender(t), nil)
	runMailer(t, m)
	inv, _, link := testkit.PendingInvitation(t, st, "carol@example.com")
	if err := m.EnqueueInvitation(ctx, inv, link); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "the mail to arrive", func() bool { return len(srv.delivered()) == 1 })
	testkit.Eventually(t, "EmailStatus sent", func() bool {
		h := st.statuses()
		return len(h) > 0 && strings.HasPrefix(h[len(h)-1], "sent|")
	})
	if n := srv.dataAttempts(); n != 3 {
		t.Fatalf("%d delivery attempts, want 3", n)
	}
	got := testkit.Invitation(t, st, inv.ID)
	if got.EmailError != "" || !got.HasEvent("mailed") || got.HasEvent("mail_failed") {
		t.Fatalf("after delivery: error %q, events %+v", got.EmailError, got.Events)
	}
	// queued → queued with an error (twice) → sent.
	hist := st.statuses()
	retried := 0
	for _, h := range hist {
		status, errText, _ := strings.Cut(h, "|")
		if status == "queued" && errText != "" {
			retried++
			if !strings.Contains(errText, "451") && !strings.Contains(errText, "try again later") {
				t.Errorf("EmailError %q does not say why", errText)
			}
		}
		if status != "queued" && status != "sent" {
			t.Errorf("unexpected status in %q", hist)
		}
	}
	if retried != 2 || hist[len(hist)-1] != "sent|" {
		t.Fatalf("status history %q, want queued, 2× queued with error, sent", hist)
	}
	waitQueueEmpty(t, m)
}

func TestMailerGivesUpAfterMaxAttempts(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	st, _ := testkit.OpenBolt(t)
	srv := startSMTP(t, &smtpServer{failAlways: true})
	m := newMailer(t, st, srv.sender(t), func(o *mail.MailerOptions) { o.MaxAttempts = 3 })
	runMailer(t, m)
	inv, _, link := testkit.PendingInvitation(t, st, "dave@example.com")
	if err := m.EnqueueInvitation(ctx, inv, link); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "EmailStatus failed", func() bool { return testkit.Invitation(t, st, inv.ID).EmailStatus == "failed" })
	got := testkit.Invitation(t, st, inv.ID)
	if got.EmailError == "" || !got.HasEvent("mail_failed") || got.HasEvent("mailed") {
		t.Fatalf("after giving up: error %q, events %+v", got.EmailError, got.Events)
	}
	t.Logf("EmailError: %s", got.EmailError)
	if n := srv.dataAttempts(); n != 3 {
		t.Fatalf("%d delivery attempts, want MaxAttempts = 3", n)
	}
	waitQueueEmpty(t, m) // the job is deleted
}

func TestMailerDropsJobsOfRevokedAndResentInvitations(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	st, _ := testkit.OpenBolt(t)
	outbox := mail.NewOutbox()
	m := newMailer(t, st, outbox, nil)

	revoked, _, link1 := testkit.PendingInvitation(t, st, "erin@example.com")
	if err := m.EnqueueInvitation(ctx, revoked, link1); err != nil {
		t.Fatal(err)
	}
	if _, err := st.RevokeInvitation(ctx, revoked.ID, time.Now()); err != nil {
		t.Fatal(err)
	}

	resent, _, link2 := testkit.PendingInvitation(t, st, "frank@example.com")
	if err := m.EnqueueInvitation(ctx, resent, link2); err != nil {
		t.Fatal(err)
	}
	_, newHash := testkit.InvitationToken(t)
	if _, err := st.ReplaceInvitationToken(ctx, resent.ID, newHash, time.Now().Add(time.Hour), time.Now()); err != nil {
		t.Fatal(err)
	}

	runMailer(t, m)
	waitQueueEmpty(t, m)
	if msgs := outbox.Messages(); len(msgs) != 0 {
		t.Fatalf("%d mails sent for dead invitations: %+v", len(msgs), msgs)
	}
	got := testkit.Invitation(t, st, revoked.ID)
	if got.EmailStatus != "failed" || !strings.Contains(got.EmailError, "revoked") || got.HasEvent("mailed") {
		t.Errorf("revoked invitation: status %q error %q", got.EmailStatus, got.EmailError)
	}
	// The resend's own mail owns the status: the orphaned job leaves it alone.
	if got := testkit.Invitation(t, st, resent.ID); got.EmailStatus != "queued" || got.HasEvent("mailed") {
		t.Errorf("resent invitation: status %q", got.EmailStatus)
	}
}

func TestMailerUndecodableLinkFails(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	st, _ := testkit.OpenBolt(t)
	outbox := mail.NewOutbox()
	inv, _, link := testkit.PendingInvitation(t, st, "gina@example.com")
	// Queued under one key, worked under another (keys rotated, say).
	if err := newMailer(t, st, outbox, nil).EnqueueInvitation(ctx, inv, link); err != nil {
		t.Fatal(err)
	}
	m := newMailer(t, st, outbox, nil)
	runMailer(t, m)
	testkit.Eventually(t, "EmailStatus failed", func() bool { return testkit.Invitation(t, st, inv.ID).EmailStatus == "failed" })
	if len(outbox.Messages()) != 0 {
		t.Fatal("sent a mail without its link")
	}
	waitQueueEmpty(t, m)
}

func TestMailerToOutbox(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	st, _ := testkit.OpenBolt(t)
	outbox := mail.NewOutbox()
	m := newMailer(t, st, outbox, nil)
	runMailer(t, m)
	inv, _, link := testkit.PendingInvitation(t, st, "hank@example.com")
	if err := m.EnqueueInvitation(ctx, inv, link); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "the outbox mail", func() bool { return len(outbox.Messages()) == 1 })
	msg := outbox.Messages()[0]
	if msg.To != "hank@example.com" || mail.FirstLink(msg.Text) != link {
		t.Fatalf("outbox got %+v", msg)
	}
	testkit.Eventually(t, "EmailStatus sent", func() bool { return testkit.Invitation(t, st, inv.ID).EmailStatus == "sent" })
}

// ---- Templates ----

func TestTemplatesDefaults(t *testing.T) {
	t.Parallel()
	tpl, err := mail.LoadTemplates("")
	if err != nil {
		t.Fatal(err)
	}
	link := "https://usher.example.com/invite/inv_abc?a=1&b=2"
	exp := time.Date(2026, 3, 2, 15, 0, 0, 0, time.FixedZone("CET", 3600))
	msg, err := tpl.Invitation(mail.InvitationMail{
		AppName: "Acme Portal", Inviter: "Alice", Email: "bob@example.com", Link: link,
		ExpiresAt: exp, Roles: []string{"editor", "billing"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if msg.To != "bob@example.com" || msg.Subject != "Alice invited you to Acme Portal" {
		t.Fatalf("To %q Subject %q", msg.To, msg.Subject)
	}
	for _, want := range []string{link, "Acme Portal", "Alice", "editor, billing", "expires on Monday 2 March 2026 at 14:00 UTC", "If you did not expect this invitation, you can ignore this email."} {
		if !strings.Contains(msg.Text, want) {
			t.Errorf("text lacks %q:\n%s", want, msg.Text)
		}
	}
	for _, want := range []string{`href="https://usher.example.com/invite/inv_abc?a=1&amp;b=2"`, "Acme Portal", "Alice", "editor, billing", "expires on Monday 2 March 2026 at 14:00 UTC", "If you did not expect this invitation, you can ignore this email."} {
		if !strings.Contains(msg.HTML, want) {
			t.Errorf("HTML lacks %q:\n%s", want, msg.HTML)
		}
	}

	anon, err := tpl.Invitation(mail.InvitationMail{AppName: "Acme Portal", Email: "bob@example.com", Link: link, ExpiresAt: exp})
	if err != nil {
		t.Fatal(err)
	}
	if anon.Subject != "You are invited to Acme Portal" {
		t.Errorf("Subject without inviter %q", anon.Subject)
	}
}

func TestTemplatesEscapeHTML(t *testing.T) {
	t.Parallel()
	tpl, err := mail.LoadTemplates("")
	if err != nil {
		t.Fatal(err)
	}
	msg, err := tpl.Invitation(mail.InvitationMail{
		AppName: "Acme", Inviter: "<script>alert(1)</script>\r\nBcc: evil@example.com", Email: "bob@example.com",
		Link: "javascript:alert(1)", ExpiresAt: time.Now(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(msg.HTML, "<script>") || !strings.Contains(msg.HTML, "&lt;script&gt;") {
		t.Errorf("Inviter not escaped in HTML:\n%s", msg.HTML)
	}
	if strings.Contains(msg.HTML, `href="javascript:`) {
		t.Errorf("javascript: link kept in HTML")
	}
	if strings.ContainsAny(msg.Subject, "\r\n") {
		t.Errorf("subject spans lines: %q", msg.Subject)
	}
}

func TestTemplatesOverride(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "invitation.subject.txt"), []byte("Join {{.AppName}} now, {{.Email}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tpl, err := mail.LoadTemplates(dir)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := tpl.Invitation(mail.InvitationMail{AppName: "Acme", Email: "bob@example.com", Link: "https://x.example/invite/t", ExpiresAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if msg.Subject != "Join Acme now, bob@example.com" {
		t.Errorf("Subject %q", msg.Subject)
	}
	if !strings.Contains(msg.Text, "https://x.example/invite/t") || !strings.Contains(msg.HTML, "https://x.example/invite/t") {
		t.Error("the bodies should still come from the defaults")
	}
}

func TestTemplatesBrokenFileNamed(t *testing.T) {
	t.Parallel()
	for name, src := range map[string]string{
		"invitation.html":        "<a href=\"{{.Link}}\">{{if .Inviter}}</a>",
		"invitation.txt":         "Hello {{.NoSuchField}}",
		"invitation.subject.txt": "{{.AppName",
	} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := mail.LoadTemplates(dir)
		if err == nil {
			t.Errorf("%s: broken template accepted", name)
			continue
		}
		if !strings.Contains(err.Error(), filepath.Join(dir, name)) {
			t.Errorf("%s: error does not name the file: %v", name, err)
		}
	}
	if _, err := mail.LoadTemplates(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing template directory was accepted")
	}
}
