package mail

import (
	"context"
	"encoding/json"
	"html/template"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Outbox is the development Sender: it keeps messages in memory (the newest
// outboxLimit) and serves them on a page, so `usher dev` needs no mail server.
type Outbox struct {
	mu   sync.Mutex
	msgs []outboxEntry // oldest first
	now  func() time.Time
}

type outboxEntry struct {
	Message
	At time.Time
}

const outboxLimit = 1000

var _ Sender = (*Outbox)(nil)

// NewOutbox returns an empty outbox.
func NewOutbox() *Outbox { return &Outbox{now: time.Now} }

// Send keeps m.
func (o *Outbox) Send(ctx context.Context, m Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.msgs = append(o.msgs, outboxEntry{Message: m, At: o.now()})
	if n := len(o.msgs) - outboxLimit; n > 0 {
		o.msgs = append([]outboxEntry(nil), o.msgs[n:]...)
	}
	return nil
}

// Messages returns copies of the kept messages, oldest first.
func (o *Outbox) Messages() []Message {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]Message, len(o.msgs))
	for i, e := range o.msgs {
		out[i] = e.Message
	}
	return out
}

// newestFirst snapshots the entries, newest first.
func (o *Outbox) newestFirst() []outboxEntry {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]outboxEntry, len(o.msgs))
	for i, e := range o.msgs {
		out[len(o.msgs)-1-i] = e
	}
	return out
}

var firstLinkRe = regexp.MustCompile(`https?://[^\s<>"'()\[\]]+`)

// FirstLink returns the first http(s) URL in s, without trailing punctuation.
func FirstLink(s string) string {
	return strings.TrimRight(firstLinkRe.FindString(s), ".,;:!?")
}

// OutboxMessage is one entry of GET /messages.json.
type OutboxMessage struct {
	Message
	At time.Time `json:"at"`
	// Link is the invitation link of the message, or for a message not
	// rendered from the templates the first http(s) link of the text part
	// (of the HTML when the text has none).
	Link string `json:"link,omitempty"`
}

func (e outboxEntry) view() OutboxMessage {
	// The first URL of the text could be the inviter's name; a message
	// rendered from the templates says which link is the invitation.
	link := e.Message.Link
	if link == "" {
		link = FirstLink(e.Text)
	}
	if link == "" {
		link = FirstLink(e.HTML)
	}
	return OutboxMessage{Message: e.Message, At: e.At, Link: link}
}

// Handler serves the outbox, meant to be mounted with http.StripPrefix:
//
//	GET /               an HTML list, newest first; message N's link has id="link-N" and class "invite-link"
//	GET /messages.json  the same list as a JSON array of OutboxMessage, newest first (index N = link-N)
func (o *Outbox) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cache-Control", "no-store")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		entries := o.newestFirst()
		views := make([]OutboxMessage, len(entries))
		for i, e := range entries {
			views[i] = e.view()
		}
		switch r.URL.Path {
		case "", "/":
			h.Set("Content-Type", "text/html; charset=utf-8")
			if err := outboxPage.Execute(w, views); err != nil {
				http.Error(w, "render failed", http.StatusInternalServerError)
			}
		case "/messages.json":
			h.Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(views)
		default:
			http.NotFound(w, r)
		}
	})
}

var outboxPage = template.Must(template.New("outbox").Funcs(template.FuncMap{
	"when": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>usher dev outbox</title>
<style>
body { font-family: system-ui, sans-serif; margin: 0; background: #f4f5f7; color: #1f2933; }
.banner { background: #b45309; color: #fff; padding: 8px 16px; font-weight: bold; }
main { max-width: 960px; margin: 0 auto; padding: 16px; }
article { background: #fff; border-radius: 6px; padding: 16px; margin: 0 0 16px 0; }
h2 { font-size: 18px; margin: 0 0 8px 0; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 0 0 8px 0; font-size: 14px; }
dt { font-weight: bold; }
dd { margin: 0; }
pre { white-space: pre-wrap; word-break: break-word; background: #f8fafc; padding: 8px; border-radius: 4px; font-size: 13px; }
a.invite-link { display: inline-block; margin: 8px 0; padding: 8px 14px; background: #2563eb; color: #fff; border-radius: 4px; text-decoration: none; word-break: break-all; }
</style>
</head>
<body>
<div class="banner" role="banner">usher dev outbox — development only</div>
<main>
<h1>Outbox</h1>
<p>{{len .}} message{{if ne (len .) 1}}s{{end}}, newest first. <a href="messages.json">JSON</a></p>
{{range $i, $m := .}}
<article id="message-{{$i}}">
<h2>{{$m.Subject}}</h2>
<dl>
<dt>To</dt><dd class="to">{{$m.To}}</dd>
<dt>Time</dt><dd><time datetime="{{$m.At.UTC.Format "2006-01-02T15:04:05Z07:00"}}">{{when $m.At}}</time></dd>
</dl>
{{if $m.Link}}<a id="link-{{$i}}" class="invite-link" href="{{$m.Link}}">{{$m.Link}}</a>{{end}}
<pre>{{$m.Text}}</pre>
{{if $m.HTML}}<details><summary>HTML part (source)</summary><pre>{{$m.HTML}}</pre></details>{{end}}
</article>
{{else}}
<p>No mail sent yet.</p>
{{end}}
</main>
</body>
</html>
`))
