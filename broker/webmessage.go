package broker

import (
	"bytes"
	"encoding/json"
	"errors"
	"html/template"
	"net/http"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/usher-oidc/usher/sessions"
)

// responseModeWebMessage is Auth0's response mode for auth0-spa-js: the
// authorization response is posted to the opener (loginWithPopup) or parent
// (the hidden iframe of a silent sign-in) as
// {type: "authorization_response", response: {...}}.
const responseModeWebMessage = "web_message"

// writeWebMessage answers ar with a page that posts response to the client.
// The target origin comes only from the validated redirect_uri (never "*",
// Origin or Referer); only this final page may be framed, by that origin.
func (b *Broker) writeWebMessage(w http.ResponseWriter, ar *sessions.AuthRequest, response map[string]string) {
	target := originOf(ar.RedirectURI)
	msg, err := json.Marshal(map[string]any{"type": "authorization_response", "response": response})
	if err != nil {
		http.Error(w, "encoding the response", http.StatusInternalServerError)
		return
	}
	nonce := randomToken(18)
	var buf bytes.Buffer
	// html/template escapes the JSON for a script context: it stays data.
	if err := webMessageTmpl.Execute(&buf, webMessage{Nonce: nonce, Target: target, Message: template.JS(msg)}); err != nil {
		http.Error(w, "rendering the response", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Del("X-Frame-Options")
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'nonce-"+nonce+"'; frame-ancestors "+target+"; base-uri 'none'; form-action 'none'")
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = buf.WriteTo(w)
}

type webMessage struct {
	Nonce, Target string
	Message       template.JS
}

var webMessageTmpl = template.Must(template.New("web_message").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>usher</title></head><body>
<script nonce="{{.Nonce}}">(function () {
  var to = window.opener || (window.parent !== window ? window.parent : null);
  if (to) { to.postMessage({{.Message}}, {{.Target}}); }
})();</script></body></html>`))

// webMessageCode posts a completed authorization's code.
func (b *Broker) webMessageCode(w http.ResponseWriter, r *http.Request, ar *sessions.AuthRequest) {
	resp, err := op.BuildAuthResponseCodeResponsePayload(r.Context(), authRequest{ar}, b.codeAuthorizer(r.Context(), ar))
	if err != nil {
		b.authError(w, r, ar, oidc.DefaultToServerError(err, "issuing the code"))
		return
	}
	b.writeWebMessage(w, ar, map[string]string{"code": resp.Code, "state": resp.State, "iss": b.opts.Issuer})
}

// authError answers ar with an OIDC error the way its response mode asks:
// posted for web_message, redirected otherwise.
func (b *Broker) authError(w http.ResponseWriter, r *http.Request, ar *sessions.AuthRequest, err error) {
	if ar.ResponseMode != responseModeWebMessage {
		op.AuthRequestError(w, r, authRequest{ar}, err, b.provider)
		return
	}
	var e *oidc.Error
	if !errors.As(err, &e) {
		e = oidc.ErrServerError()
	}
	resp := map[string]string{"error": string(e.ErrorType), "state": ar.State, "iss": b.opts.Issuer}
	if e.Description != "" {
		resp["error_description"] = e.Description
	}
	b.writeWebMessage(w, ar, resp)
}
