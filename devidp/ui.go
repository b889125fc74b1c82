package devidp

import (
	"bytes"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

const (
	signupPath    = "/u/signup"
	socialPath    = "/u/social"
	loggedOutPath = "/u/logged-out"
)

// Banner is shown at the top of every HTML page devidp renders.
const Banner = "devidp — development stand-in for Auth0, not for production"

const (
	msgWrongPassword = "Wrong email or password"
	msgUserExists    = "The user already exists."
	msgInvalidEmail  = "Enter a valid email address."
	msgNoPassword    = "Enter a password."
)

type pageData struct {
	Banner     string
	Title      string
	Lang       string
	State      string // auth request ID
	Email      string
	Name       string
	Error      string
	Message    string
	Social     bool   // offer the social buttons on the login page
	Connection string // social page: google-oauth2 or facebook
	Provider   string // social page: Google or Facebook
	Facebook   bool
	Issuer     string
}

func (s *Server) page(ar *authRequest, title string) pageData {
	d := pageData{Banner: Banner, Title: title, Lang: "en", Issuer: s.issuer}
	if ar != nil {
		d.State = ar.id
		// ui_locales is accepted; the pages are English only, but say which
		// language was asked for.
		if len(ar.uiLocales) > 0 {
			d.Lang = ar.uiLocales[0].String()
		}
	}
	return d
}

func (s *Server) render(w http.ResponseWriter, status int, name string, d pageData) {
	var buf bytes.Buffer
	if err := s.pages.ExecuteTemplate(&buf, name, d); err != nil {
		s.log.Error("devidp: render page", "page", name, "error", err)
		http.Error(w, "devidp: cannot render page", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

func (s *Server) renderMessage(w http.ResponseWriter, status int, title, msg string) {
	d := s.page(nil, title)
	d.Message = msg
	s.render(w, status, "message", d)
}

func (s *Server) renderLogin(w http.ResponseWriter, ar *authRequest, email, errMsg string) {
	d := s.page(ar, "Log in")
	d.Email = email
	d.Error = errMsg
	// connection=Username-Password-Authentication shows only the password form.
	d.Social = ar.connection != ConnectionPassword
	s.render(w, http.StatusOK, "login", d)
}

func (s *Server) renderSignup(w http.ResponseWriter, ar *authRequest, email, name, errMsg string) {
	d := s.page(ar, "Sign up")
	d.Email = email
	d.Name = name
	d.Error = errMsg
	// Auth0's sign-up screen offers the social connections too.
	d.Social = ar.connection != ConnectionPassword
	s.render(w, http.StatusOK, "signup", d)
}

func (s *Server) renderSocial(w http.ResponseWriter, ar *authRequest, connection, email, name, errMsg string) {
	d := s.page(ar, "")
	d.Connection = connection
	d.Facebook = connection == ConnectionFacebook
	d.Provider = "Google"
	if d.Facebook {
		d.Provider = "Facebook"
	}
	d.Title = "Continue with " + d.Provider + " (simulated)"
	d.Email = email
	d.Name = name
	d.Error = errMsg
	s.render(w, http.StatusOK, "social", d)
}

// pendingRequest loads the auth request named by the "state" parameter, or
// answers with an error page.
func (s *Server) pendingRequest(w http.ResponseWriter, id string) (*authRequest, bool) {
	ar, err := s.store.authRequest(id)
	if err != nil {
		s.renderMessage(w, http.StatusBadRequest, "Login request expired",
			"This login request is unknown or has expired. Start again from the application.")
		return nil, false
	}
	if ar.done {
		s.renderMessage(w, http.StatusBadRequest, "Already signed in",
			"This login request is already complete. Start again from the application.")
		return nil, false
	}
	return ar, true
}

func stateURL(path, id string, extra ...string) string {
	q := url.Values{"state": {id}}
	for i := 0; i+1 < len(extra); i += 2 {
		q.Set(extra[i], extra[i+1])
	}
	return path + "?" + q.Encode()
}

// loginPage is where /authorize lands. Unless screen=login asks for the
// form itself, it first routes the request the way Auth0's universal login
// does: an existing session completes silently (unless prompt=login or
// max_age says it is too old, or it belongs to another connection than the
// one asked for), prompt=none without one fails with login_required, a
// social connection goes to its page, screen_hint=signup to the sign-up page.
func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	ar, ok := s.pendingRequest(w, q.Get("state"))
	if !ok {
		return
	}
	if q.Get("screen") != "login" && s.route(w, r, ar) {
		return
	}
	s.renderLogin(w, ar, ar.loginHint, "")
}

// route answers the request itself and returns true, or returns false to let
// the login form be shown.
func (s *Server) route(w http.ResponseWriter, r *http.Request, ar *authRequest) bool {
	if sess, ok := s.currentSession(r); ok {
		fresh := !ar.hasPrompt(oidc.PromptLogin) && (ar.maxAge == nil || time.Since(sess.authTime) <= *ar.maxAge)
		sameConnection := ar.connection == "" || ar.connection == sess.connection
		if fresh && sameConnection {
			s.complete(w, r, ar.id, sess, false)
			return true
		}
	}
	if ar.hasPrompt(oidc.PromptNone) {
		// OIDC Core 3.1.2.6: back to the client with error=login_required and its state.
		s.store.DeleteAuthRequest(r.Context(), ar.id)
		op.AuthRequestError(w, r, ar, oidc.ErrLoginRequired(), s.provider)
		return true
	}
	switch ar.connection {
	case ConnectionGoogle, ConnectionFacebook:
		http.Redirect(w, r, stateURL(socialPath, ar.id, "connection", ar.connection), http.StatusSeeOther)
		return true
	case "", ConnectionPassword:
	default:
		s.renderMessage(w, http.StatusBadRequest, "Unknown connection",
			"The connection "+ar.connection+" does not exist in devidp. Use "+ConnectionPassword+", "+ConnectionGoogle+" or "+ConnectionFacebook+".")
		return true
	}
	if ar.screenHint == "signup" {
		http.Redirect(w, r, stateURL(signupPath, ar.id), http.StatusSeeOther)
		return true
	}
	return false
}

// complete marks the auth request done for sess and sends the browser to the
// library's callback, which issues the code.
func (s *Server) complete(w http.ResponseWriter, r *http.Request, id string, sess browserSession, newLogin bool) {
	if err := s.store.finishAuthRequest(id, sess); err != nil {
		s.renderMessage(w, http.StatusBadRequest, "Login request expired",
			"This login request is unknown or has expired. Start again from the application.")
		return
	}
	if newLogin {
		s.startSession(w, r, sess)
		s.log.Info("devidp: signed in", "sub", sess.sub, "connection", sess.connection)
	}
	http.Redirect(w, r, s.callbackURL(id), http.StatusSeeOther)
}

func (s *Server) loginSubmit(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		s.renderMessage(w, http.StatusBadRequest, "Bad request", "The form could not be read.")
		return
	}
	ar, ok := s.pendingRequest(w, r.PostForm.Get("state"))
	if !ok {
		return
	}
	email := strings.TrimSpace(r.PostForm.Get("email"))
	sub, err := s.store.checkPassword(email, r.PostForm.Get("password"))
	if err != nil {
		s.renderLogin(w, ar, email, msgWrongPassword)
		return
	}
	s.complete(w, r, ar.id, browserSession{sub: sub, connection: ConnectionPassword, authTime: time.Now(), amr: []string{"pwd"}}, true)
}

func (s *Server) signupPage(w http.ResponseWriter, r *http.Request) {
	ar, ok := s.pendingRequest(w, r.URL.Query().Get("state"))
	if !ok {
		return
	}
	s.renderSignup(w, ar, ar.loginHint, "", "")
}

func (s *Server) signupSubmit(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		s.renderMessage(w, http.StatusBadRequest, "Bad request", "The form could not be read.")
		return
	}
	ar, ok := s.pendingRequest(w, r.PostForm.Get("state"))
	if !ok {
		return
	}
	email := strings.TrimSpace(r.PostForm.Get("email"))
	password := r.PostForm.Get("password")
	name := strings.TrimSpace(r.PostForm.Get("name"))
	switch {
	case !validEmail(normalizeEmail(email)):
		s.renderSignup(w, ar, email, name, msgInvalidEmail)
		return
	case password == "":
		s.renderSignup(w, ar, email, name, msgNoPassword)
		return
	}
	sub, err := s.store.addPasswordUser(User{Email: email, Password: password, Name: name})
	if errors.Is(err, errUserExists) {
		s.renderSignup(w, ar, email, name, msgUserExists)
		return
	}
	if err != nil {
		s.renderSignup(w, ar, email, name, err.Error())
		return
	}
	s.log.Info("devidp: signed up", "sub", sub)
	// Auth0 mails a database sign-up a verification link; email_verified
	// stays false until it is followed (verify.go,
	// https://auth0.com/docs/manage-users/user-accounts/verify-emails).
	s.sendVerificationMail(sub)
	s.complete(w, r, ar.id, browserSession{sub: sub, connection: ConnectionPassword, authTime: time.Now(), amr: []string{"pwd"}}, true)
}

func socialConnection(c string) bool { return c == ConnectionGoogle || c == ConnectionFacebook }

func (s *Server) socialPage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	ar, ok := s.pendingRequest(w, q.Get("state"))
	if !ok {
		return
	}
	connection := q.Get("connection")
	if !socialConnection(connection) {
		s.renderMessage(w, http.StatusBadRequest, "Unknown connection", "devidp simulates google-oauth2 and facebook only.")
		return
	}
	s.renderSocial(w, ar, connection, ar.loginHint, "", "")
}

func (s *Server) socialSubmit(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		s.renderMessage(w, http.StatusBadRequest, "Bad request", "The form could not be read.")
		return
	}
	f := r.PostForm
	ar, ok := s.pendingRequest(w, f.Get("state"))
	if !ok {
		return
	}
	connection := f.Get("connection")
	if !socialConnection(connection) {
		s.renderMessage(w, http.StatusBadRequest, "Unknown connection", "devidp simulates google-oauth2 and facebook only.")
		return
	}
	email := strings.TrimSpace(f.Get("email"))
	name := strings.TrimSpace(f.Get("name"))
	// Google always vouches for the email; some Facebook accounts do not.
	verified := !(connection == ConnectionFacebook && f.Get("email_unverified") != "")
	sub, err := s.store.socialSignIn(connection, email, name, verified)
	if err != nil {
		s.renderSocial(w, ar, connection, email, name, msgInvalidEmail)
		return
	}
	s.complete(w, r, ar.id, browserSession{sub: sub, connection: connection, authTime: time.Now()}, true)
}

func (s *Server) loggedOutPage(w http.ResponseWriter, r *http.Request) {
	s.renderMessage(w, http.StatusOK, "Signed out", "You are signed out of devidp.")
}

func (s *Server) indexPage(w http.ResponseWriter, r *http.Request) {
	s.render(w, http.StatusOK, "index", s.page(nil, "devidp"))
}

const pagesHTML = `
{{define "top"}}<!doctype html>
<html lang="{{.Lang}}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}} · devidp</title>
<style>
body{font-family:system-ui,sans-serif;margin:0;background:#f4f4f6;color:#222}
.banner{background:#b00020;color:#fff;font-weight:600;text-align:center;padding:.6em}
main{max-width:24em;margin:2em auto;background:#fff;padding:1.5em 2em;border-radius:8px;box-shadow:0 1px 4px #0002}
h1{font-size:1.4em}
label{display:block;margin:.8em 0}
input[type=email],input[type=password],input[type=text]{display:block;width:100%;box-sizing:border-box;padding:.5em;margin-top:.3em}
button{width:100%;padding:.6em;margin:.4em 0;cursor:pointer}
.error{color:#b00020;font-weight:600}
.social{border-top:1px solid #ddd;margin-top:1em;padding-top:.5em}
.note{color:#555;font-size:.9em}
</style>
</head>
<body>
<div class="banner" role="note">{{.Banner}}</div>
<main>
{{end}}

{{define "bottom"}}</main>
</body>
</html>
{{end}}

{{define "login"}}{{template "top" .}}
<h1>Log in</h1>
{{with .Error}}<p class="error" role="alert">{{.}}</p>{{end}}
<form method="post" action="/u/login">
<input type="hidden" name="state" value="{{.State}}">
<label>Email address <input type="email" name="email" value="{{.Email}}" required autocomplete="username" autofocus></label>
<label>Password <input type="password" name="password" required autocomplete="current-password"></label>
<button type="submit" name="action" value="login">Continue</button>
</form>
<p>Don't have an account? <a href="/u/signup?state={{.State}}">Sign up</a></p>
{{template "socialbuttons" .}}
{{template "bottom" .}}{{end}}

{{define "signup"}}{{template "top" .}}
<h1>Sign up</h1>
{{with .Error}}<p class="error" role="alert">{{.}}</p>{{end}}
<form method="post" action="/u/signup">
<input type="hidden" name="state" value="{{.State}}">
<label>Email address <input type="email" name="email" value="{{.Email}}" required autocomplete="username" autofocus></label>
<label>Password <input type="password" name="password" required autocomplete="new-password"></label>
<label>Name <input type="text" name="name" value="{{.Name}}" autocomplete="name"></label>
<button type="submit" name="action" value="signup">Continue</button>
</form>
<p>Already have an account? <a href="/u/login?state={{.State}}&amp;screen=login">Log in</a></p>
{{template "socialbuttons" .}}
{{template "bottom" .}}{{end}}

{{define "socialbuttons"}}{{if .Social}}<div class="social">
<form method="get" action="/u/social"><input type="hidden" name="state" value="{{.State}}"><input type="hidden" name="connection" value="google-oauth2"><button type="submit">Continue with Google</button></form>
<form method="get" action="/u/social"><input type="hidden" name="state" value="{{.State}}"><input type="hidden" name="connection" value="facebook"><button type="submit">Continue with Facebook</button></form>
</div>{{end}}{{end}}

{{define "social"}}{{template "top" .}}
<h1>{{.Title}}</h1>
<p class="note">No request leaves this machine: type the account {{.Provider}} would return.</p>
{{with .Error}}<p class="error" role="alert">{{.}}</p>{{end}}
<form method="post" action="/u/social">
<input type="hidden" name="state" value="{{.State}}">
<input type="hidden" name="connection" value="{{.Connection}}">
<label>Email address <input type="email" name="email" value="{{.Email}}" required autofocus></label>
<label>Name <input type="text" name="name" value="{{.Name}}"></label>
{{if .Facebook}}<label><input type="checkbox" name="email_unverified" value="1"> email not verified (some Facebook accounts)</label>{{end}}
<button type="submit">Continue with {{.Provider}}</button>
</form>
<p><a href="/u/login?state={{.State}}&amp;screen=login">Back to log in</a></p>
{{template "bottom" .}}{{end}}

{{define "message"}}{{template "top" .}}
<h1>{{.Title}}</h1>
<p>{{.Message}}</p>
{{template "bottom" .}}{{end}}

{{define "index"}}{{template "top" .}}
<h1>devidp</h1>
<p>A local stand-in for an Auth0 tenant.</p>
<p>Issuer: <code>{{.Issuer}}</code></p>
<p><a href="/.well-known/openid-configuration">Discovery document</a></p>
{{template "bottom" .}}{{end}}
`
