package mail_test

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/internal/brand"
	"github.com/usher-oidc/usher/internal/messages"
	"github.com/usher-oidc/usher/internal/testkit"
	"github.com/usher-oidc/usher/notify/mail"
)

const testLogoSVG = `<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><rect width="8" height="8" fill="#0a7d55"/></svg>`

func testLogo(t *testing.T) *brand.Logo {
	t.Helper()
	p := filepath.Join(t.TempDir(), "logo.svg")
	if err := os.WriteFile(p, []byte(testLogoSVG), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := brand.LoadLogo(p)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// The mail carries the brand: the logo as an inline part the HTML refers
// to by cid: (nothing fetched from elsewhere), the accent on the button
// with a text colour that contrasts, usher only in the footer.
func TestTemplatesBranded(t *testing.T) {
	t.Parallel()
	tpl, err := mail.LoadTemplates("")
	if err != nil {
		t.Fatal(err)
	}
	logo := testLogo(t)
	accent, _ := brand.ParseAccent("#ffcc00")
	msg, err := tpl.Invitation(mail.InvitationMail{AppName: "Acme Rockets", Email: "bob@example.com",
		Link: "https://usher.example.com/invite/inv_abc", Logo: logo, Accent: accent})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`src="cid:` + logo.Name + `"`, `bgcolor="#ffcc00"`, `color:#000000`, "Acme Rockets", "Sent with usher"} {
		if !strings.Contains(msg.HTML, want) {
			t.Errorf("HTML lacks %q:\n%s", want, msg.HTML)
		}
	}
	if strings.Contains(msg.HTML, "ZgotmplZ") {
		t.Errorf("a value was refused by html/template:\n%s", msg.HTML)
	}
	if len(msg.Inline) != 1 || msg.Inline[0].Name != logo.Name || string(msg.Inline[0].Data) != testLogoSVG || msg.Inline[0].ContentType != "image/svg+xml" {
		t.Errorf("inline parts %+v", msg.Inline)
	}
	plain, err := tpl.Invitation(mail.InvitationMail{AppName: "Acme Rockets", Email: "bob@example.com", Link: "https://usher.example.com/invite/inv_abc"})
	if err != nil {
		t.Fatal(err)
	}
	if len(plain.Inline) != 0 || strings.Contains(plain.HTML, "cid:") || strings.Contains(plain.HTML, "<img") {
		t.Errorf("a mail without logo has an image:\n%s", plain.HTML)
	}
}

// The mailer names the invitation's client and writes in the invitation's
// language (a test-only French catalog with one text; the rest English).
func TestMailerClientNameAndLocale(t *testing.T) {
	// Not parallel: the catalog is global, and parallel tests wait until
	// the sequential ones are done.
	defer messages.Add("fr", messages.Catalog{"mail.subject_by": "{inviter} vous invite à {app}"})()
	st, _ := testkit.OpenBolt(t)
	outbox := mail.NewOutbox()
	m := newMailer(t, st, outbox, func(o *mail.MailerOptions) { o.AppNames = map[string]string{"spa": "Acme Rockets"} })
	runMailer(t, m)
	inv, _, link := testkit.PendingInvitation(t, st, "fred@example.com")
	inv, err := st.UpdateInvitation(t.Context(), inv.ID, func(i *grants.Invitation) error {
		i.ClientID, i.Locale = "spa", "fr-CA"
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.EnqueueInvitation(t.Context(), inv, link); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "the outbox mail", func() bool { return len(outbox.Messages()) == 1 })
	msg := outbox.Messages()[0]
	if msg.Subject != "Alice Admin vous invite à Acme Rockets" {
		t.Errorf("Subject %q", msg.Subject)
	}
	if !strings.Contains(msg.Text, "If you did not expect this invitation") || !strings.Contains(msg.HTML, `lang="fr"`) {
		t.Errorf("a text missing from the French catalog is not in English, or the HTML's lang is wrong:\n%s", msg.Text)
	}
}

// SMTP carries the logo as an inline part with the Content-ID the HTML names.
func TestSMTPSenderEmbedsInline(t *testing.T) {
	t.Parallel()
	srv := startSMTP(t, &smtpServer{})
	logo := testLogo(t)
	err := srv.sender(t).Send(t.Context(), mail.Message{
		To: "bob@example.com", Subject: "Branded", Text: "Hello",
		HTML:   `<p><img src="cid:` + logo.Name + `" alt=""> Hello</p>`,
		Inline: []mail.Inline{{Name: logo.Name, ContentType: logo.ContentType, Data: logo.Data}},
	})
	if err != nil {
		t.Fatal(err)
	}
	msgs := srv.delivered()
	if len(msgs) != 1 {
		t.Fatalf("%d messages arrived", len(msgs))
	}
	raw := strings.ReplaceAll(string(msgs[0].Data), "\r\n", "\n")
	b64 := base64.StdEncoding.EncodeToString([]byte(testLogoSVG))
	for _, want := range []string{"Content-Type: multipart/related", "Content-Id: <" + logo.Name + ">", "Content-Type: image/svg+xml", b64[:60]} {
		if !strings.Contains(strings.ReplaceAll(raw, "Content-ID", "Content-Id"), want) {
			t.Errorf("the message lacks %q:\n%s", want, raw)
		}
	}
}
