package e2e

import (
	"bytes"
	"encoding/base64"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/mail"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/usher-oidc/usher/internal/testkit"
)

// mailbox is a real SMTP server on loopback that keeps what it receives.
type mailbox struct {
	mu   sync.Mutex
	msgs []receivedMail
	addr string
}

type receivedMail struct {
	From, To, Subject string
	Text, HTML        string
}

func startMailbox(t *testing.T) *mailbox {
	t.Helper()
	mb := &mailbox{}
	srv := smtp.NewServer(mbBackend{mb})
	srv.Domain = "localhost"
	srv.AllowInsecureAuth = true
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mb.addr = ln.Addr().String()
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return mb
}

type mbBackend struct{ mb *mailbox }

func (b mbBackend) NewSession(*smtp.Conn) (smtp.Session, error) { return &mbSession{mb: b.mb}, nil }

type mbSession struct {
	mb       *mailbox
	from, to string
}

func (s *mbSession) Mail(from string, _ *smtp.MailOptions) error { s.from = from; return nil }
func (s *mbSession) Rcpt(to string, _ *smtp.RcptOptions) error   { s.to = to; return nil }
func (s *mbSession) Reset()                                      {}
func (s *mbSession) Logout() error                               { return nil }
func (s *mbSession) Data(r io.Reader) error {
	m, err := mail.ReadMessage(r)
	if err != nil {
		return err
	}
	rm := receivedMail{From: s.from, To: s.to}
	dec := new(mime.WordDecoder)
	rm.Subject, _ = dec.DecodeHeader(m.Header.Get("Subject"))
	mt, params, _ := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if strings.HasPrefix(mt, "multipart/") {
		mr := multipart.NewReader(m.Body, params["boundary"])
		for {
			p, err := mr.NextPart()
			if err != nil {
				break
			}
			body, _ := io.ReadAll(decodePart(p))
			pt, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
			switch pt {
			case "text/plain":
				rm.Text = string(body)
			case "text/html":
				rm.HTML = string(body)
			}
		}
	} else {
		body, _ := io.ReadAll(m.Body)
		rm.Text = string(body)
	}
	s.mb.mu.Lock()
	s.mb.msgs = append(s.mb.msgs, rm)
	s.mb.mu.Unlock()
	return nil
}

func decodePart(p *multipart.Part) io.Reader {
	// multipart.Reader already undoes quoted-printable; base64 is ours.
	if strings.EqualFold(p.Header.Get("Content-Transfer-Encoding"), "base64") {
		raw, _ := io.ReadAll(p)
		return base64Reader(raw)
	}
	return p
}

// waitFor returns the first message to `to`, polling until the deadline.
func (mb *mailbox) waitFor(t *testing.T, to string, timeout time.Duration) receivedMail {
	t.Helper()
	var got receivedMail
	if !testkit.Within(timeout, func() bool {
		mb.mu.Lock()
		defer mb.mu.Unlock()
		for _, m := range mb.msgs {
			if strings.EqualFold(strings.Trim(m.To, "<>"), to) {
				got = m
				return true
			}
		}
		return false
	}) {
		t.Fatalf("no mail to %s within %s", to, timeout)
	}
	return got
}

var inviteLinkRE = regexp.MustCompile(`https?://[^\s"<>]+/invite/inv_[A-Za-z0-9_-]{43}`)

func (m receivedMail) inviteLink(t *testing.T) string {
	t.Helper()
	link := inviteLinkRE.FindString(m.Text)
	if link == "" || !strings.Contains(m.HTML, link) {
		t.Fatalf("invitation link missing from the text or HTML part:\n%s", m.Text)
	}
	return link
}

func base64Reader(raw []byte) io.Reader {
	clean := bytes.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return -1
		}
		return r
	}, raw)
	out := make([]byte, len(clean))
	n, _ := b64std.Decode(out, clean)
	return bytes.NewReader(out[:n])
}

var b64std = base64.StdEncoding
