package broker

import (
	"context"
	"net/http"
	"net/url"
	"slices"

	"github.com/zitadel/oidc/v3/pkg/oidc"

	"github.com/usher-oidc/usher/sessions"
)

// The op library answers a valid authorization request by storing it and
// redirecting the browser to the client's login URL (/login?id=…), which
// the browser then loads: one more HTTP round trip in every sign-in and
// in every silent renewal a usher session answers. handleAuthorize follows
// that redirect itself, in the same request: the browser gets /login's
// answer (the code, the upstream's sign-in page, one of usher's pages)
// straight from /authorize. The route /login stays for what links to it
// (a reload, the accept and verify pages).
//
// The request is not even stored before that step (storeAuthRequest): a
// browser's signed-in session answers most of them at once with a code,
// and the code's record carries the request, so it needs no record of its
// own (a write less per silent renewal); one that goes upstream is stored
// with the upstream sign-in's state, in the same round trip on Redis (a
// trip less per sign-in). Any other answer stores it first: the login step
// where a write needs the record (storeUnstored), storeBeforeAnswer for the
// rest.

// ctxCreatedAuthRequest carries, from CreateAuthRequest back to
// serveAuthorize and on to the login step it runs, the auth request this
// request created and the browser session read with it: the login step
// needs neither read again.
type ctxCreatedAuthRequest struct{}

type createdAuthRequest struct {
	ar      *sessions.AuthRequest
	sid     string       // the session the cookie names ("" for none)
	cookie  string       // the cookie's value, sid decoded from it
	session *sessionRead // read with the request's creation; nil when not read
	// unstored: ar (as created) is not stored yet (storeAuthRequest); the
	// login step's code carries it, or storeUnstored stores it.
	unstored bool
}

// sessionRead is one read of a browser session: the record, or the error
// GetBrowserSession would have returned.
type sessionRead struct {
	rec *sessions.BrowserSession
	err error
	// claims: the user and grant the session ID names, read beside it
	// (prefetched; nil when not read).
	claims *claimsCache
}

// noteCreated records ar, created by this request (and stored, unless
// not stored), with the session read beside it, when serveAuthorize asked
// for them.
func noteCreated(ctx context.Context, ar *sessions.AuthRequest, sid, cookie string, session *sessionRead, stored bool) {
	if c, _ := ctx.Value(ctxCreatedAuthRequest{}).(*createdAuthRequest); c != nil {
		created := *ar
		c.ar, c.sid, c.cookie, c.session, c.unstored = &created, sid, cookie, session, !stored
	}
}

// unstoredRequest is the auth request id when this /authorize created it
// and has not stored it; nil otherwise.
func unstoredRequest(ctx context.Context, id string) *createdAuthRequest {
	c, _ := ctx.Value(ctxCreatedAuthRequest{}).(*createdAuthRequest)
	if c == nil || !c.unstored || c.ar == nil || c.ar.ID != id {
		return nil
	}
	return c
}

// unstored: the auth request id has no record yet (see storeAuthRequest).
func unstored(ctx context.Context, id string) bool { return unstoredRequest(ctx, id) != nil }

// storeUnstored stores the auth request id, as it was created, when it has
// no record yet: before anything (a page, the upstream's sign-in, a login
// state) can name it. A no-op for a stored request.
func (b *Broker) storeUnstored(ctx context.Context, id string) error {
	if c := unstoredRequest(ctx, id); c != nil {
		return storeError("saving the authorization request", b.createUnstored(ctx, c, c.ar))
	}
	return nil
}

// saveAuthRequest stores ar as it now is: created when /authorize left it
// unstored (one write, not the request as created and then this), else
// updated.
func (b *Broker) saveAuthRequest(ctx context.Context, ar *sessions.AuthRequest) error {
	if c := unstoredRequest(ctx, ar.ID); c != nil {
		return b.createUnstored(ctx, c, ar)
	}
	return b.sessions.UpdateAuthRequest(ctx, ar)
}

// createUnstored creates ar, the request c left unstored, and notes it
// stored.
func (b *Broker) createUnstored(ctx context.Context, c *createdAuthRequest, ar *sessions.AuthRequest) error {
	if err := b.sessions.CreateAuthRequest(ctx, ar); err != nil {
		return err
	}
	c.unstored = false
	return nil
}

// keptByCode notes that the auth request id, never stored, is kept by the
// code just saved (which carries it): it needs no record.
func keptByCode(ctx context.Context, id string) {
	if c := unstoredRequest(ctx, id); c != nil {
		c.unstored = false
	}
}

// storeAuthRequest leaves ar to the login step /authorize runs next
// (stored false): when the browser's session signs someone in, most such
// requests are answered there at once with a code, whose save carries the
// request, and need no record of their own; the others go upstream, and
// are stored with the upstream sign-in's state in one write
// (saveLoginState); storeUnstored and storeBeforeAnswer cover the rest.
// Requests a session answers at once are not limited
// (allowAuthRequest): people behind one NAT renewing silently must not
// lock each other out. So a browser with a session cookie has its session
// read first, and the limit applies when the session signs no one in.
// session: that read (nil when none was made), for the login step.
// Without serveAuthorize around it no login step follows in this request,
// and the request is stored at once.
func (b *Broker) storeAuthRequest(ctx context.Context, ar *sessions.AuthRequest, ex authorizeExtras) (session *sessionRead, stored bool, err error) {
	if ctx.Value(ctxCreatedAuthRequest{}) == nil {
		return nil, true, b.createAuthRequest(ctx, ar)
	}
	if ex.sessionID == "" || slices.Contains(ar.Prompt, oidc.PromptLogin) {
		return nil, false, b.allowAuthRequest(ctx) // stored with its login state (saveLoginState)
	}
	read, err := sessions.RunTogether(ctx, b.sessions, sessions.Together{GetSession: ex.sessionID, GetUserAndGrant: sessionUserHint(ex.sessionID)})
	if err != nil {
		return nil, false, storeError("reading the browser session", err)
	}
	session = &sessionRead{rec: read.Session, err: read.SessionErr}
	if read.UserGrant != nil {
		session.claims = prefetched(*read.UserGrant)
	}
	if _, ok := recordAccount(read.Session); ok && read.SessionErr == nil {
		return session, false, nil
	}
	return session, false, b.allowAuthRequest(ctx)
}

// createAuthRequest stores ar, within the authorization request limit.
func (b *Broker) createAuthRequest(ctx context.Context, ar *sessions.AuthRequest) error {
	if err := b.allowAuthRequest(ctx); err != nil {
		return err
	}
	return storeError("saving the authorization request", b.sessions.CreateAuthRequest(ctx, ar))
}

// inlineLogin is the login step's reads when /authorize runs it for the
// auth request id it just created: the request, and the session read (r,
// with it preloaded). false for any other /login.
func (b *Broker) inlineLogin(r *http.Request, id string) (*http.Request, *sessions.AuthRequest, bool) {
	c, _ := r.Context().Value(ctxCreatedAuthRequest{}).(*createdAuthRequest)
	if c == nil || c.ar == nil || c.ar.ID != id {
		return r, nil, false
	}
	// The same cookie as /authorize decoded (the login step's request holds
	// the cookies the answer sets, withResponseCookies): its session was
	// read, and decoding it again would only cost a securecookie decode.
	if cur, err := r.Cookie(b.cookie); err == nil && c.session != nil && c.cookie != "" && cur.Value == c.cookie {
		r = preloadSession(r, c.cookie, c.sid, c.session.rec, c.session.err)
		if c.session.claims != nil {
			r = r.WithContext(context.WithValue(r.Context(), ctxClaimsCache, c.session.claims))
		}
	}
	ar := *c.ar
	return r, &ar, true
}

// loginRedirectCatcher passes the op's answer through, except the redirect
// to the login URL of the auth request it created: that one it keeps back
// (status, Location and body), for handleAuthorize to answer instead.
type loginRedirectCatcher struct {
	http.ResponseWriter
	b       *Broker
	created *createdAuthRequest
	caught  string // the login URL kept back
}

func (c *loginRedirectCatcher) WriteHeader(code int) {
	if c.caught == "" && code == http.StatusFound && c.created.ar != nil {
		if loc := c.Header().Get("Location"); loc == c.b.opClientLoginURL(c.created.ar.ID) {
			c.caught = loc
			c.Header().Del("Location")
			c.Header().Del("Content-Type")
			return
		}
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *loginRedirectCatcher) Write(p []byte) (int, error) {
	if c.caught != "" {
		return len(p), nil // the redirect's own little page
	}
	return c.ResponseWriter.Write(p)
}

func (c *loginRedirectCatcher) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// serveAuthorize runs the op's authorize endpoint and, when it redirects
// to the login step of the request it created, runs that step at once.
func (b *Broker) serveAuthorize(w http.ResponseWriter, r *http.Request) {
	created := &createdAuthRequest{}
	r = r.WithContext(context.WithValue(r.Context(), ctxCreatedAuthRequest{}, created))
	w = &storeBeforeAnswer{ResponseWriter: w, b: b, ctx: r.Context(), created: created}
	catcher := &loginRedirectCatcher{ResponseWriter: w, b: b, created: created}
	b.opServer.ServeHTTP(catcher, r)
	if catcher.caught == "" {
		return
	}
	u, err := url.Parse(catcher.caught)
	if err != nil {
		http.Redirect(w, r, catcher.caught, http.StatusFound)
		return
	}
	login := r.Clone(r.Context())
	login.Method, login.URL, login.RequestURI = http.MethodGet, u, u.RequestURI()
	login.Body, login.ContentLength, login.Form, login.PostForm = http.NoBody, 0, nil, nil
	withResponseCookies(login, w.Header())
	b.handleLogin(w, login)
}

// withResponseCookies gives r the cookies the response being written sets
// (or deletes), as the browser would have sent them to /login.
func withResponseCookies(r *http.Request, h http.Header) {
	set := (&http.Response{Header: h}).Cookies()
	if len(set) == 0 {
		return
	}
	jar := map[string]*http.Cookie{}
	var order []string
	for _, c := range r.Cookies() {
		if _, ok := jar[c.Name]; !ok {
			order = append(order, c.Name)
		}
		jar[c.Name] = c
	}
	for _, c := range set {
		if _, ok := jar[c.Name]; !ok {
			order = append(order, c.Name)
		}
		jar[c.Name] = &http.Cookie{Name: c.Name, Value: c.Value}
		if c.MaxAge < 0 {
			delete(jar, c.Name)
		}
	}
	r.Header.Del("Cookie")
	for _, name := range order {
		if c, ok := jar[name]; ok {
			r.AddCookie(c)
		}
	}
}

// storeBeforeAnswer stores the auth request /authorize left unstored
// before any answer but the code's (whose save carries it and marks it
// kept) goes out: whatever that answer names the request by then finds
// it. The login step stores it itself where a write needs the record
// first (storeUnstored); this covers every other answer.
type storeBeforeAnswer struct {
	http.ResponseWriter
	b           *Broker
	ctx         context.Context
	created     *createdAuthRequest
	wroteHeader bool
}

func (s *storeBeforeAnswer) WriteHeader(code int) {
	if !s.wroteHeader && s.created.unstored {
		if err := s.b.storeUnstored(s.ctx, s.created.ar.ID); err != nil {
			s.b.log.ErrorContext(s.ctx, "saving the authorization request before answering", "err", err)
		}
	}
	s.wroteHeader = true
	s.ResponseWriter.WriteHeader(code)
}

func (s *storeBeforeAnswer) Write(p []byte) (int, error) {
	if !s.wroteHeader {
		s.WriteHeader(http.StatusOK)
	}
	return s.ResponseWriter.Write(p)
}

func (s *storeBeforeAnswer) Unwrap() http.ResponseWriter { return s.ResponseWriter }
