package broker

import (
	"bytes"
	"context"
	"html/template"
	"net/http"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/usher-oidc/usher/sessions"
)

// authResponse answers a completed authorization request. response_mode=
// form_post gets usher's own page: the library's submits itself from an
// inline onload handler, which usher's CSP (rightly) blocks, and carries no
// `iss` (RFC 9207).
func (b *Broker) authResponse(w http.ResponseWriter, r *http.Request, ar *sessions.AuthRequest) {
	r = r.WithContext(context.WithValue(r.Context(), ctxCodeFor{}, ar))
	if ar.ResponseMode == responseModeWebMessage {
		b.webMessageCode(w, r, ar)
		return
	}
	if oidc.ResponseMode(ar.ResponseMode) != oidc.ResponseModeFormPost {
		op.AuthResponse(authRequest{ar}, b.codeAuthorizer(r.Context(), ar), w, r)
		return
	}
	resp, err := op.BuildAuthResponseCodeResponsePayload(r.Context(), authRequest{ar}, b.codeAuthorizer(r.Context(), ar))
	if err != nil {
		op.AuthRequestError(w, r, authRequest{ar}, err, b.provider)
		return
	}
	nonce := randomToken(18)
	c := b.chromeFor(r, ar.UILocales, ar.ClientID)
	p := formPost{Action: ar.RedirectURI, Nonce: nonce, Lang: c.Lang, Title: c.T.Text("signin.interstitial.title"),
		Continue: c.T.Text("signin.interstitial.continue"), App: c.App, Fields: []formField{
			{"code", resp.Code}, {"state", resp.State}, {"iss", b.opts.Issuer},
		}}
	var buf bytes.Buffer
	if err := formPostTmpl.Execute(&buf, p); err != nil {
		op.AuthRequestError(w, r, authRequest{ar}, oidc.ErrServerError().WithParent(err), b.provider)
		return
	}
	// Only this page's script may run, and the form may post only to the
	// client's registered redirect URI.
	w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'nonce-"+nonce+"'; style-src 'unsafe-inline'; "+
		"form-action "+originOf(ar.RedirectURI)+"; frame-ancestors 'none'; base-uri 'none'")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = buf.WriteTo(w)
}

type formField struct{ Name, Value string }

type formPost struct {
	Action, Nonce              string
	Lang, Title, Continue, App string
	Fields                     []formField
}

var formPostTmpl = template.Must(template.New("form_post").Parse(`<!doctype html>
<html lang="{{.Lang}}"><head><meta charset="utf-8"><title>{{.Title}} · {{.App}}</title></head>
<body><form method="post" action="{{.Action}}">
{{range .Fields}}{{if .Value}}<input type="hidden" name="{{.Name}}" value="{{.Value}}">
{{end}}{{end}}<noscript><button type="submit">{{.Continue}}</button></noscript>
</form>
<script nonce="{{.Nonce}}">document.forms[0].submit()</script>
</body></html>`))
