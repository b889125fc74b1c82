package mail

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"strings"
	"time"

	"github.com/usher-oidc/usher/grants/outbox"

	gomail "github.com/wneessen/go-mail"
)

// SMTP TLS modes.
const (
	SMTPStartTLS = "starttls" // mandatory STARTTLS (port 587 by default)
	SMTPTLS      = "tls"      // implicit TLS, "SMTPS" (port 465 by default)
	SMTPNoTLS    = "none"     // plain text (port 25 by default); only sensible on loopback
)

// SMTPConfig configures the production mail sender.
type SMTPConfig struct {
	Host string
	// Port 0 means 587 for starttls, 465 for tls and 25 for none.
	Port int
	// TLS is starttls (the default when empty), tls or none.
	TLS string
	// Username turns SMTP AUTH on (mechanism discovered from the server:
	// SCRAM, CRAM-MD5, PLAIN or LOGIN). With TLS none, credentials are only
	// accepted for a loopback host.
	Username, Password string
	// From is the sender address, optionally with a name: "Acme <no-reply@acme.example>".
	From string
	// Timeout bounds connecting and each SMTP command; 0 means 30s.
	Timeout time.Duration
}

// SMTPSender delivers messages through an SMTP server, one connection per message.
type SMTPSender struct {
	cfg      SMTPConfig
	from     *mail.Address
	msgIDDom string
}

var _ Sender = (*SMTPSender)(nil)

// NewSMTPSender checks cfg and returns a sender; it does not connect.
func NewSMTPSender(cfg SMTPConfig) (*SMTPSender, error) {
	cfg.Host = strings.TrimSpace(cfg.Host)
	if cfg.Host == "" {
		return nil, errors.New("smtp: host is required")
	}
	cfg.TLS = strings.ToLower(strings.TrimSpace(cfg.TLS))
	if cfg.TLS == "" {
		cfg.TLS = SMTPStartTLS
	}
	switch cfg.TLS {
	case SMTPStartTLS:
		if cfg.Port == 0 {
			cfg.Port = 587
		}
	case SMTPTLS:
		if cfg.Port == 0 {
			cfg.Port = 465
		}
	case SMTPNoTLS:
		if cfg.Port == 0 {
			cfg.Port = 25
		}
		if cfg.Username != "" && !isLoopbackHost(cfg.Host) {
			return nil, fmt.Errorf("smtp: tls %q with a username would send the password in clear to %s: use starttls or tls (none is for a loopback relay only)", cfg.TLS, cfg.Host)
		}
	default:
		return nil, fmt.Errorf("smtp: tls %q: want starttls, tls or none", cfg.TLS)
	}
	if cfg.Port < 1 || cfg.Port > 65535 {
		return nil, fmt.Errorf("smtp: port %d out of range", cfg.Port)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("smtp: timeout %s is negative", cfg.Timeout)
	}
	if cfg.From == "" {
		return nil, errors.New("smtp: from address is required")
	}
	from, err := mail.ParseAddress(cfg.From)
	if err != nil {
		return nil, fmt.Errorf("smtp: from %q: %w", cfg.From, err)
	}
	dom := "usher.invalid"
	if at := strings.LastIndexByte(from.Address, '@'); at >= 0 && at < len(from.Address)-1 {
		dom = from.Address[at+1:]
	}
	return &SMTPSender{cfg: cfg, from: from, msgIDDom: dom}, nil
}

func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// Send delivers m as multipart/alternative (text, and HTML when set) over a
// new connection.
func (s *SMTPSender) Send(ctx context.Context, m Message) error {
	msg := gomail.NewMsg()
	if s.from.Name != "" {
		if err := msg.FromFormat(s.from.Name, s.from.Address); err != nil {
			return fmt.Errorf("smtp: from: %w", err)
		}
	} else if err := msg.From(s.from.Address); err != nil {
		return fmt.Errorf("smtp: from: %w", err)
	}
	if err := msg.To(m.To); err != nil {
		return fmt.Errorf("smtp: recipient: %w", err)
	}
	msg.Subject(m.Subject)
	msg.SetDateWithValue(time.Now())
	msg.SetMessageIDWithValue(outbox.RandomHex(16) + "@" + s.msgIDDom)
	// Tell vacation responders and the like not to answer a robot.
	msg.SetGenHeader(gomail.Header("Auto-Submitted"), "auto-generated")
	msg.SetGenHeader(gomail.HeaderXAutoResponseSuppress, "All")
	msg.SetBodyString(gomail.TypeTextPlain, m.Text)
	if m.HTML != "" {
		msg.AddAlternativeString(gomail.TypeTextHTML, m.HTML)
	}
	if err := embedInline(msg, m.Inline); err != nil {
		return err
	}

	opts := []gomail.Option{
		gomail.WithPort(s.cfg.Port),
		gomail.WithTimeout(s.cfg.Timeout),
	}
	switch s.cfg.TLS {
	case SMTPStartTLS:
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory))
	case SMTPTLS:
		opts = append(opts, gomail.WithSSL())
	case SMTPNoTLS:
		opts = append(opts, gomail.WithTLSPolicy(gomail.NoTLS))
	}
	if s.cfg.Username != "" {
		opts = append(opts, gomail.WithUsername(s.cfg.Username), gomail.WithPassword(s.cfg.Password))
		if s.cfg.TLS == SMTPNoTLS {
			// go-mail's discovery offers no PLAIN/LOGIN without TLS; its
			// PLAIN/LOGIN still refuse a non-loopback server in clear, and
			// NewSMTPSender already refused such a config.
			opts = append(opts, gomail.WithOpportunisticSMTPAuth(
				gomail.SMTPAuthSCRAMSHA256, gomail.SMTPAuthSCRAMSHA1, gomail.SMTPAuthCramMD5,
				gomail.SMTPAuthPlain, gomail.SMTPAuthLogin))
		} else {
			opts = append(opts, gomail.WithSMTPAuth(gomail.SMTPAuthAutoDiscover))
		}
	}
	client, err := gomail.NewClient(s.cfg.Host, opts...)
	if err != nil {
		return fmt.Errorf("smtp: client: %w", err)
	}
	if err := client.DialAndSendWithContext(ctx, msg); err != nil {
		return fmt.Errorf("smtp %s:%d: %w", s.cfg.Host, s.cfg.Port, err)
	}
	return nil
}

// embedInline adds the inline parts (multipart/related), each with the
// Content-ID the HTML names it by (cid:<name>, RFC 2392).
func embedInline(msg *gomail.Msg, parts []Inline) error {
	for _, in := range parts {
		if err := msg.EmbedReader(in.Name, bytes.NewReader(in.Data), gomail.WithFileContentID("<"+in.Name+">"),
			gomail.WithFileContentType(gomail.ContentType(in.ContentType))); err != nil {
			return fmt.Errorf("smtp: inline %s: %w", in.Name, err)
		}
	}
	return nil
}
