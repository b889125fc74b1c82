package broker

import (
	"html/template"
	"net/http"

	"github.com/usher-oidc/usher/internal/brand"
	"github.com/usher-oidc/usher/internal/messages"
)

// Branding is what invitees see of the product on usher's pages besides
// its name (the client's name, else Options.AppName).
type Branding struct {
	Logo   *brand.Logo // nil: no logo
	Accent brand.Colours
}

// brandPrefix is where usher serves the logo: its own origin, so opening
// a page tells no third party the invitee's address.
const brandPrefix = "/brand/"

// logoURL is the logo's path, on whichever of usher's origins served the
// page (the issuer's or invitations.base_url's: img-src 'self'); its name
// carries a hash of the content, so it may be cached for ever.
func (b *Broker) logoURL() string {
	if b.opts.Branding.Logo == nil {
		return ""
	}
	return brandPrefix + b.opts.Branding.Logo.Name
}

// handleLogo serves the configured logo under its content-hashed name.
func (b *Broker) handleLogo(w http.ResponseWriter, r *http.Request) {
	logo := b.opts.Branding.Logo
	if logo == nil || r.PathValue("name") != logo.Name {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", logo.ContentType)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "public, max-age=31536000, immutable")
	// An SVG opened on its own is a document: it may run nothing.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; sandbox")
	_, _ = w.Write(logo.Data)
}

// chrome is what every invitee page shares: the language, the app's name,
// logo and colours.
type chrome struct {
	T                messages.Printer
	Lang             string
	App, LogoURL     string
	Accent, OnAccent string
	Ink              string
}

// chromeFor is the chrome of a page for the app clientID ("" or unknown:
// invitations.app_name), in the language of uiLocales (from the
// authorization request, if any), else the browser's Accept-Language.
func (b *Broker) chromeFor(r *http.Request, uiLocales string, clientIDs ...string) chrome {
	accept := ""
	if r != nil {
		accept = r.Header.Get("Accept-Language")
	}
	p := messages.For(messages.Negotiate(uiLocales, accept))
	c := b.opts.Branding.Accent
	if c.Accent == "" {
		c, _ = brand.ParseAccent("")
	}
	return chrome{T: p, Lang: p.Lang(), App: b.appName(clientIDs...), LogoURL: b.logoURL(),
		Accent: c.Accent, OnAccent: c.OnAccent, Ink: c.Ink}
}

// pageBase holds the parts every invitee page shares; each page clones it.
var pageBase = template.Must(template.New("base").Parse(`{{define "top"}}<!doctype html>
<html lang="{{.Lang}}"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{{template "title" .}}</title>
<style>:root{--accent:{{.Accent}};--on-accent:{{.OnAccent}};--ink:{{.Ink}}}
body{font-family:system-ui,sans-serif;color:#1f2933;background:#f5f5f7;margin:0;display:flex;flex-direction:column;min-height:100vh;align-items:center;justify-content:center}
:focus-visible{outline:3px solid var(--ink);outline-offset:2px}
main{box-sizing:border-box;background:#fff;max-width:34rem;width:calc(100% - 2rem);margin:1rem;padding:2rem;border-radius:12px;border-top:4px solid var(--accent);box-shadow:0 2px 12px rgba(0,0,0,.08);overflow-wrap:anywhere}
.brand{display:flex;align-items:center;gap:.6rem;margin:0 0 1rem;font-weight:600;font-size:1.05rem}
.brand img{max-height:40px;max-width:160px;width:auto}
h1{font-size:1.3rem;margin-top:0}form{display:inline}
a.button,button{display:inline-block;font:inherit;margin:.8rem .4rem 0 0;padding:.6rem 1rem;border-radius:8px;border:1px solid var(--ink);background:#fff;color:var(--ink);cursor:pointer;text-decoration:none}
.primary,a.button.primary,button.primary{background:var(--accent);border-color:var(--accent);color:var(--on-accent)}
.warn{background:#fff4e5;border-left:4px solid #e69500;padding:.6rem .8rem}
code{background:#f0f0f3;padding:0 .2rem;border-radius:4px}
footer.credit{font-size:.75rem;color:#52606d;margin:0 0 1rem}</style>
</head><body><main>
<div class="brand" id="brand">{{if .LogoURL}}<img id="brand-logo" src="{{.LogoURL}}" alt="">{{end}}<span id="app-name">{{.App}}</span></div>
{{end}}{{define "bottom"}}</main><footer class="credit">{{.T.Text "page.footer"}}</footer></body></html>{{end}}`))

// pageTemplate is pageBase with a page's "title" and "content" templates.
func pageTemplate(name, src string) *template.Template {
	return template.Must(template.Must(pageBase.Clone()).New(name).Parse(src))
}
