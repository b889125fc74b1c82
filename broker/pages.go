package broker

import (
	"encoding/json"
	"html/template"
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
		hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}

type page struct {
	Title    string
	Message  string
	LinkURL  string
	LinkText string
}

var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{{.Title}} · usher</title>
<style>body{font-family:system-ui,sans-serif;background:#f5f5f7;margin:0;display:flex;min-height:100vh;align-items:center;justify-content:center}
:focus-visible{outline:3px solid #2d5be3;outline-offset:2px}
main{background:#fff;max-width:32rem;padding:2rem;border-radius:12px;box-shadow:0 2px 12px rgba(0,0,0,.08)}
h1{font-size:1.3rem;margin-top:0}a.button{display:inline-block;margin-top:1rem;padding:.6rem 1rem;background:#2d5be3;color:#fff;border-radius:8px;text-decoration:none}</style>
</head><body><main><h1 id="title">{{.Title}}</h1><p id="message">{{.Message}}</p>
{{if .LinkURL}}<a class="button" id="continue" href="{{.LinkURL}}">{{.LinkText}}</a>{{end}}
</main></body></html>`))

func renderPage(w http.ResponseWriter, status int, p page) {
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
				q := u.Query()
				if (q.Has("code") || q.Has("error")) && !q.Has("iss") && w.b.isRedirectURI(loc) {
					q.Set("iss", w.b.opts.Issuer)
					u.RawQuery = q.Encode()
					w.Header().Set("Location", u.String())
				}
			}
		}
	}
	w.ResponseWriter.WriteHeader(code)
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
