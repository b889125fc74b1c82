package broker

import (
	"encoding/json"
	"html/template"
	"net/http"
	"net/url"

	"github.com/zitadel/oidc/v3/pkg/oidc"
)

// basicClientAuth answers RFC 6749 §5.2 at the endpoints where clients
// authenticate (token, introspection, revocation): a client that sent HTTP
// Basic credentials usher refuses gets 401 with WWW-Authenticate. The
// library answers such failures 400. Everything else is the library's.
func (b *Broker) basicClientAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && isClientAuthPath(r.URL.Path) {
			if id, secret, ok := r.BasicAuth(); ok && !b.basicCredentialsAccepted(id, secret) {
				writeInvalidClient(w)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func isClientAuthPath(p string) bool {
	return p == pathToken || p == pathIntrospect || p == pathRevoke
}

// basicCredentialsAccepted: the credentials are form-encoded inside Basic
// (RFC 6749 §2.3.1), as the library decodes them. A public client sending
// an empty secret is left to the library (some libraries send Basic first).
func (b *Broker) basicCredentialsAccepted(rawID, rawSecret string) bool {
	id, err1 := url.QueryUnescape(rawID)
	secret, err2 := url.QueryUnescape(rawSecret)
	if err1 != nil || err2 != nil {
		return false
	}
	c, ok := b.clients[id]
	if !ok {
		return false
	}
	if c.Public && secret == "" {
		return true
	}
	return c.checkSecret(secret)
}

func writeInvalidClient(w http.ResponseWriter) {
	h := w.Header()
	h.Set("WWW-Authenticate", `Basic realm="usher"`)
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusUnauthorized)
	_ = json.NewEncoder(w).Encode(oidc.ErrInvalidClient().WithDescription("invalid client credentials"))
}

var rootPage = template.Must(template.New("root").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>usher</title></head>
<body><h1>usher</h1>
<p>This is usher, an OpenID Connect provider. Applications find everything they need at its discovery URL:</p>
<p><a href="{{.Discovery}}">{{.Discovery}}</a></p>
{{if .Demo}}<p>Demo app (usher dev): <a href="{{.Demo}}">{{.Demo}}</a></p>{{end}}
</body></html>
`))

// handleRoot is the issuer root (GET / exactly): a pointer for a person who
// opens the issuer URL, instead of a 404.
func (b *Broker) handleRoot(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = rootPage.Execute(w, struct{ Discovery, Demo string }{b.url("/.well-known/openid-configuration"), b.opts.DemoURL})
}
