package mail_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/usher-oidc/usher/notify/mail"
)

func TestOutbox(t *testing.T) {
	t.Parallel()
	o := mail.NewOutbox()
	first := "https://usher.example.com/invite/inv_first"
	latest := "https://usher.example.com/invite/inv_latest?a=1&b=2"
	for _, m := range []mail.Message{
		{To: "a@example.com", Subject: "first", Text: "Open " + first + "."},
		{To: "b@example.com", Subject: "<b>latest</b>", Text: "Open " + latest + " now", HTML: "<p>hi</p>"},
	} {
		if err := o.Send(t.Context(), m); err != nil {
			t.Fatal(err)
		}
	}
	if msgs := o.Messages(); len(msgs) != 2 || msgs[0].Subject != "first" {
		t.Fatalf("Messages() = %+v, want oldest first", msgs)
	}
	o.Messages()[0].Subject = "changed"
	if o.Messages()[0].Subject != "first" {
		t.Fatal("Messages() does not return copies")
	}

	h := o.Handler()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET / = %d", rec.Code)
	}
	body := rec.Body.String()
	for _, want := range []string{
		"usher dev outbox — development only",
		`<a id="link-0" class="invite-link" href="https://usher.example.com/invite/inv_latest?a=1&amp;b=2">`,
		`<a id="link-1" class="invite-link" href="` + first + `">`,
		"b@example.com", "&lt;b&gt;latest&lt;/b&gt;",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Index(body, "link-0") > strings.Index(body, "link-1") {
		t.Error("page is not newest first")
	}
	if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP %q", csp)
	}
	if rp := rec.Header().Get("Referrer-Policy"); rp != "no-referrer" {
		t.Errorf("Referrer-Policy %q", rp)
	}

	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/messages.json", nil))
	if rec.Code != http.StatusOK || !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
		t.Fatalf("GET /messages.json = %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
	var list []mail.OutboxMessage
	if err := json.Unmarshal(rec.Body.Bytes(), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Link != latest || list[1].Link != first || list[0].To != "b@example.com" || list[0].At.IsZero() {
		t.Fatalf("messages.json = %+v", list)
	}

	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST / = %d", rec.Code)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/nope", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("GET /nope = %d", rec.Code)
	}
}

func TestOutboxEmptyPage(t *testing.T) {
	t.Parallel()
	rec := httptest.NewRecorder()
	mail.NewOutbox().Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "No mail sent yet") {
		t.Fatalf("empty outbox: %d %s", rec.Code, rec.Body.String())
	}
	rec = httptest.NewRecorder()
	mail.NewOutbox().Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/messages.json", nil))
	if strings.TrimSpace(rec.Body.String()) != "[]" {
		t.Fatalf("empty messages.json = %s", rec.Body.String())
	}
}

// The outbox links to the invitation link the mail was rendered with, never
// to a URL found elsewhere in the text (an inviter name stored before names
// were checked could hold one).
func TestOutboxLinksTheInvitationOnly(t *testing.T) {
	t.Parallel()
	tpl, err := mail.LoadTemplates("")
	if err != nil {
		t.Fatal(err)
	}
	const real = "https://login.example.com/invite/inv_real"
	msg, err := tpl.Invitation(mail.InvitationMail{AppName: "App", Inviter: "https://evil.example/phish", Email: "a@example.com",
		Link: real, ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	o := mail.NewOutbox()
	if err := o.Send(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	o.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	body := rec.Body.String()
	if strings.Contains(body, `href="https://evil.example`) || !strings.Contains(body, `href="`+real+`"`) {
		t.Errorf("outbox page links:\n%s", body)
	}
}
