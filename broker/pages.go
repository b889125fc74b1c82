package broker

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// pageHeaders: usher's own pages cannot be framed (clickjacking), leak no
// URL (codes, invitation tokens) through Referer, and are never cached.
func pageHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}

// page is a message page: an error or a notice, with at most one link.
type page struct {
	chrome
	// Key names the title and message in the catalog (Key+".title",
	// Key+".message"); without it, Title and Message are shown as given.
	Key            string
	ClientID       string // whose name and brand the page shows ("": app_name)
	UILocales      string // from the authorization request, when there is one
	Title, Message string
	LinkURL        string
	LinkText       string
	LinkKey        string // names LinkText in the catalog
}

var pageTmpl = pageTemplate("page", `{{define "title"}}{{.Title}} · {{.App}}{{end}}{{template "top" .}}<h1 id="title">{{.Title}}</h1><p id="message">{{.Message}}</p>
{{if .LinkURL}}<a class="button primary" id="continue" href="{{.LinkURL}}">{{.LinkText}}</a>{{end}}
{{template "bottom" .}}`)

// renderPage shows p in the app's brand and the person's language.
func (b *Broker) renderPage(w http.ResponseWriter, r *http.Request, status int, p page) {
	p.chrome = b.chromeFor(r, p.UILocales, p.ClientID)
	if p.Key != "" {
		p.Title, p.Message = p.T.Text(p.Key+".title"), p.T.Text(p.Key+".message")
	}
	if p.LinkKey != "" {
		p.LinkText = p.T.Text(p.LinkKey)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_ = pageTmpl.Execute(w, p)
}

func jsonString(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}

func jsonParse(s string, v any) error { return json.Unmarshal([]byte(s), v) }

// issRedirects adds RFC 9207's `iss` to every authorization response (code
// or error) redirected to a client's registered redirect URI, so a client
// talking to several issuers can tell which one answered (mix-up defence).
func (b *Broker) issRedirects(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(&issWriter{ResponseWriter: w, b: b}, r)
	})
}

type issWriter struct {
	http.ResponseWriter
	b *Broker
}

func (w *issWriter) WriteHeader(code int) {
	if code == http.StatusFound || code == http.StatusSeeOther {
		if loc := w.Header().Get("Location"); loc != "" {
			if u, err := url.Parse(loc); err == nil && u.Fragment == "" {
				answer, hasIss := queryAnswer(u.RawQuery)
				if answer && !hasIss && w.b.isRedirectURI(loc) {
					// Appended, not re-encoded: the code (a sealed one is
					// long) is neither unescaped nor escaped again.
					u.RawQuery += "&iss=" + url.QueryEscape(w.b.opts.Issuer)
					w.Header().Set("Location", u.String())
				}
			}
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

// queryAnswer reports whether the raw query has a code or an error (an
// authorization answer) and whether it has iss, reading only its names.
func queryAnswer(raw string) (answer, hasIss bool) {
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		name, _, _ := strings.Cut(pair, "=")
		if strings.Contains(name, "%") || strings.Contains(name, "+") {
			name, _ = url.QueryUnescape(name)
		}
		switch name {
		case "code", "error":
			answer = true
		case "iss":
			hasIss = true
		}
	}
	return answer, hasIss
}

func (w *issWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// isRedirectURI: loc is (a response to) a registered redirect URI of a client.
func (b *Broker) isRedirectURI(loc string) bool {
	base, _, _ := strings.Cut(loc, "?")
	for _, c := range b.clients {
		if slices.Contains(c.RedirectURIs, base) {
			return true
		}
	}
	return false
}
