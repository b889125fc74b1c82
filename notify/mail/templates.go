package mail

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	texttemplate "text/template"
	"time"

	"github.com/usher-oidc/usher/internal/brand"
	"github.com/usher-oidc/usher/internal/messages"
)

// Message is one email.
type Message struct {
	To      string `json:"to"`
	Subject string `json:"subject"`
	Text    string `json:"text"`
	HTML    string `json:"html,omitempty"`
	// Link is the invitation link the message was rendered with (not sent
	// as such): the dev outbox links to it and to nothing else.
	Link string `json:"-"`
	// Inline parts of the HTML (the logo), referred to as cid:<Name>: the
	// mail carries them, so opening it fetches nothing from anywhere.
	Inline []Inline `json:"-"`
}

// Inline is a file embedded in a message.
type Inline struct {
	Name        string // also its Content-ID
	ContentType string
	Data        []byte
}

// Sender delivers a message (SMTP in production, the Outbox in `usher dev`).
type Sender interface {
	Send(ctx context.Context, m Message) error
}

// InvitationMail is what the invitation templates are rendered from.
type InvitationMail struct {
	AppName string
	Inviter string
	Email   string
	Link    string
	// ExpiresAt is shown in UTC; the zero time leaves the expiry sentence out.
	ExpiresAt time.Time
	Roles     []string
	// Logo, when set, is embedded and shown above the text.
	Logo *brand.Logo
	// Accent colours the button; zero: brand.DefaultAccent.
	Accent brand.Colours
	// Lang picks the message catalog ("": messages.Default).
	Lang string
}

// invitationView is the data the templates see: every InvitationMail field
// plus Expires, the expiry in words ("Monday 2 March 2026 at 14:00 UTC").
type invitationView struct {
	InvitationMail
	Expires string
	p       messages.Printer
}

// T is the catalog text of key (see internal/messages), for the subject and
// the text part: {{.T "mail.hello"}}, {{.T "mail.invited" "app" .AppName}}.
func (v invitationView) T(key string, args ...string) string { return v.p.Text(key, args...) }

// H is T for the HTML part: escaped, {*name} arguments in bold.
func (v invitationView) H(key string, args ...string) htmltemplate.HTML {
	return v.p.HTML(key, args...)
}

// LogoSrc is the logo's cid: URL ("" without a logo).
func (v invitationView) LogoSrc() htmltemplate.URL {
	if v.Logo == nil {
		return ""
	}
	return htmltemplate.URL("cid:" + v.Logo.Name)
}

func newView(d InvitationMail) invitationView {
	if d.Accent.Accent == "" {
		d.Accent, _ = brand.ParseAccent("")
	}
	return invitationView{InvitationMail: d, Expires: ExpiryWords(d.ExpiresAt), p: messages.For(d.Lang)}
}

// ExpiryWords formats t as the templates show it: "Monday 2 March 2026 at 14:00 UTC".
func ExpiryWords(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("Monday 2 January 2006 at 15:04 UTC")
}

//go:embed templates/*
var defaultTemplates embed.FS

// Template file names, in the embedded defaults and in an override directory.
const (
	InvitationSubjectFile = "invitation.subject.txt"
	InvitationTextFile    = "invitation.txt"
	InvitationHTMLFile    = "invitation.html"
)

// Templates render the invitation mail.
type Templates struct {
	subject *texttemplate.Template
	text    *texttemplate.Template
	html    *htmltemplate.Template
}

var templateFuncs = map[string]any{
	"join":  strings.Join,
	"upper": strings.ToUpper,
	"lower": strings.ToLower,
}

// LoadTemplates loads the invitation templates. Each of invitation.subject.txt,
// invitation.txt and invitation.html is read from dir when a file of that name
// exists there and from the embedded defaults otherwise; dir "" means the
// defaults only. Templates see the InvitationMail fields and Expires, the
// catalog texts through .T and .H, the logo's cid: URL as .LogoSrc, plus
// the functions join, upper and lower. A template that does not parse, or
// fails on sample data, is an error naming its file.
func LoadTemplates(dir string) (*Templates, error) {
	if err := checkTemplateDir(dir); err != nil {
		return nil, err
	}
	t := &Templates{}
	src, origin, err := readTemplate(dir, InvitationSubjectFile)
	if err != nil {
		return nil, err
	}
	if t.subject, err = texttemplate.New(InvitationSubjectFile).Funcs(templateFuncs).Option("missingkey=error").Parse(src); err != nil {
		return nil, fmt.Errorf("mail template %s: %w", origin, err)
	}
	subjectOrigin := origin
	if src, origin, err = readTemplate(dir, InvitationTextFile); err != nil {
		return nil, err
	}
	if t.text, err = texttemplate.New(InvitationTextFile).Funcs(templateFuncs).Option("missingkey=error").Parse(src); err != nil {
		return nil, fmt.Errorf("mail template %s: %w", origin, err)
	}
	textOrigin := origin
	if src, origin, err = readTemplate(dir, InvitationHTMLFile); err != nil {
		return nil, err
	}
	if t.html, err = htmltemplate.New(InvitationHTMLFile).Funcs(templateFuncs).Option("missingkey=error").Parse(src); err != nil {
		return nil, fmt.Errorf("mail template %s: %w", origin, err)
	}
	htmlOrigin := origin

	if err := t.trySample(subjectOrigin, textOrigin, htmlOrigin); err != nil {
		return nil, err
	}
	return t, nil
}

// checkTemplateDir: an override directory, when given, must exist.
func checkTemplateDir(dir string) error {
	if dir == "" {
		return nil
	}
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("mail templates: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("mail templates: %s is not a directory", dir)
	}
	return nil
}

// readTemplate returns the source of the template file name: dir's when
// dir has one, else the embedded default's; origin names it for errors.
func readTemplate(dir, name string) (src, origin string, err error) {
	if dir != "" {
		p := filepath.Join(dir, name)
		b, err := os.ReadFile(p)
		if err == nil {
			return string(b), p, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", p, fmt.Errorf("mail template %s: %w", p, err)
		}
	}
	b, err := defaultTemplates.ReadFile("templates/" + name)
	if err != nil {
		return "", "", fmt.Errorf("mail template %s (embedded): %w", name, err)
	}
	return string(b), "embedded " + name, nil
}

// trySample executes every template on sample data; the origins name the
// files in the error.
func (t *Templates) trySample(subjectOrigin, textOrigin, htmlOrigin string) error {
	// Execution errors (an unknown field, a bad pipeline) would otherwise only
	// show when the first invitation is mailed: try every template now.
	sample := newView(InvitationMail{
		AppName: "App", Inviter: "Inviter", Email: "invitee@example.com",
		Link: "https://usher.example.com/invite/sample", ExpiresAt: time.Unix(0, 0),
		Roles: []string{"member"}, Logo: &brand.Logo{Name: "logo-sample.png"},
	})
	var buf bytes.Buffer
	if err := t.subject.Execute(&buf, sample); err != nil {
		return fmt.Errorf("mail template %s: %w", subjectOrigin, err)
	}
	buf.Reset()
	if err := t.text.Execute(&buf, sample); err != nil {
		return fmt.Errorf("mail template %s: %w", textOrigin, err)
	}
	buf.Reset()
	if err := t.html.Execute(&buf, sample); err != nil {
		return fmt.Errorf("mail template %s: %w", htmlOrigin, err)
	}
	return nil
}

// Invitation renders the invitation mail for d: text/template for the
// subject and the plain text, html/template (context-aware escaping) for the
// HTML part. The subject is folded onto one line.
func (t *Templates) Invitation(d InvitationMail) (Message, error) {
	if t == nil {
		return Message{}, errors.New("mail templates: not loaded")
	}
	view := newView(d)
	var subject, text, html bytes.Buffer
	if err := t.subject.Execute(&subject, view); err != nil {
		return Message{}, fmt.Errorf("render %s: %w", InvitationSubjectFile, err)
	}
	if err := t.text.Execute(&text, view); err != nil {
		return Message{}, fmt.Errorf("render %s: %w", InvitationTextFile, err)
	}
	if err := t.html.Execute(&html, view); err != nil {
		return Message{}, fmt.Errorf("render %s: %w", InvitationHTMLFile, err)
	}
	var inline []Inline
	if d.Logo != nil && strings.Contains(html.String(), "cid:"+d.Logo.Name) {
		inline = []Inline{{Name: d.Logo.Name, ContentType: d.Logo.ContentType, Data: d.Logo.Data}}
	}
	return Message{
		To: d.Email,
		// One line: no header folding surprises, no CR/LF from an Inviter
		// name ending up in the header.
		Subject: strings.Join(strings.Fields(subject.String()), " "),
		Text:    text.String(),
		HTML:    html.String(),
		Link:    d.Link,
		Inline:  inline,
	}, nil
}
