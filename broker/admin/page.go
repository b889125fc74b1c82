package admin

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	gsessions "github.com/gorilla/sessions"

	"github.com/usher-oidc/usher/client"
	"github.com/usher-oidc/usher/grants"
)

// The admin page: server-rendered HTML (html/template), no script at all.
// Every admin response carries a strict CSP (styles by nonce only, no
// script, frame-ancestors 'none'); every POST passes the standard library's
// cross-origin protection (Sec-Fetch-Site / Origin) and a per-session
// synchronizer token, then answers 303.
const (
	sessionCSRF   = "admin_csrf"
	sessionFlash  = "admin_flash"
	adminFlashTTL = 10 * time.Minute
	adminPageSize = 25
	maxAdminForm  = 64 << 10
	csrfField     = "csrf"
)

// Page is the admin page (/admin/...). Its fields are everything it uses;
// all but Emit, Audit, Metrics and the invitation settings are required.
type Page struct {
	// Invitations changes invitations (grants.Service), as the API does.
	Invitations PageInvitations
	// Store is what the page reads, and the grant claim it sets.
	Store PageStore
	// Session loads this browser's session (the OP's: the admin signs in
	// through usher's own upstream sign-in); one object per request.
	Session func(r *http.Request) (*gsessions.Session, error)
	// SignedIn names the user the session is signed in as ("" nobody) and
	// whether that sign-in went through the admin sign-in (SignIn).
	SignedIn func(sess *gsessions.Session) (userID string, admin bool)
	// SignIn serves GET /admin/login: it starts the upstream sign-in that
	// comes back signed in to the admin page.
	SignIn http.Handler
	// Link is an invitation's link with a freshly minted token.
	Link func(inv *grants.Invitation, token string) string
	// Clients are the registered applications an invitation may name.
	Clients []Client
	// Issuer is usher's issuer URL: every link of the page starts there.
	Issuer string
	// AdminRole is the role that opens the page.
	AdminRole string
	// RoleCatalog, when not empty, is the roles the invite form offers.
	RoleCatalog []string
	// DefaultTTL and MaxTTL bound an invitation's life (0: 7 and 30 days).
	DefaultTTL, MaxTTL time.Duration
	// DefaultEmailMatch is the invite form's preselected email match.
	DefaultEmailMatch string
	// ClaimsNamespace prefixes invitation claims in tokens ("" = none).
	ClaimsNamespace string
	// Sealer seals the flash (which may carry a fresh invitation link).
	Sealer Sealer
	// Audit records admin actions and sign-outs; nil: not recorded.
	Audit   func(ctx context.Context, action, actor, target string, detail map[string]string)
	Metrics Metrics
	Logger  *slog.Logger
	Now     func() time.Time
}

// Client is a registered application as the admin page shows it.
type Client struct {
	ID, Name string
	// Interactive: it has redirect URIs, so people sign in to it (an
	// invitation may send them there).
	Interactive bool
}

// PageInvitations is what the admin page uses of grants.Service.
type PageInvitations interface {
	Invitations
	Validate(req grants.CreateRequest) (*grants.Invitation, bool, error)
}

var _ PageInvitations = (*grants.Service)(nil)

// PageStore is what the admin page needs of grants.Store.
type PageStore interface {
	GetInvitation(ctx context.Context, id string) (*grants.Invitation, error)
	ListInvitations(ctx context.Context, f grants.InvitationFilter, now time.Time) ([]grants.Invitation, string, error)
	GetUser(ctx context.Context, id string) (*grants.User, error)
	GetGrant(ctx context.Context, userID string) (*grants.Grant, error)
	Identities(ctx context.Context, userID string) ([]grants.Identity, error)
	ListUsers(ctx context.Context, f grants.UserFilter) ([]grants.User, string, error)
	ListAudit(ctx context.Context, f grants.AuditFilter) ([]grants.AuditRecord, string, error)
}

var _ PageStore = grants.Store(nil)

// adminUser is the user signed in to the admin page in sess and whether
// they hold the admin role. A nil user means nobody signed in to the admin page.
func (h *Page) adminUser(ctx context.Context, sess *gsessions.Session) (*grants.User, bool, error) {
	uid, admin := h.SignedIn(sess)
	if uid == "" || !admin {
		return nil, false, nil
	}
	u, err := h.Store.GetUser(ctx, uid)
	if errors.Is(err, grants.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	g, err := h.Store.GetGrant(ctx, uid)
	if err != nil {
		return u, false, err
	}
	return u, slices.Contains(g.Roles, h.AdminRole), nil
}

// url joins a path to the issuer without a double slash.
func (h *Page) url(path string) string { return strings.TrimSuffix(h.Issuer, "/") + path }

func (h *Page) audit(ctx context.Context, action, actor, target string, detail map[string]string) {
	if h.Audit != nil {
		h.Audit(ctx, action, actor, target, detail)
	}
}

func (h *Page) view(inv *grants.Invitation) client.Invitation {
	return newView(inv, "", h.Now(), h.ClaimsNamespace, h.Link)
}

// randomToken returns n random bytes, base64url without padding.
func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go ≥ 1.24)
	return base64.RawURLEncoding.EncodeToString(b)
}

// adminRequest is what every admin handler gets: the signed-in admin, the
// browser session and its CSRF token.
type adminRequest struct {
	user *grants.User
	sess *gsessions.Session
	csrf string
}

type adminHandler func(w http.ResponseWriter, r *http.Request, a *adminRequest)

// Mount registers the admin page's routes (see the package documentation).
func (h *Page) Mount(mux *http.ServeMux) {
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.Logger.WarnContext(r.Context(), "admin page: cross-origin POST refused", "path", r.URL.Path)
		h.adminError(w, r, nil, http.StatusForbidden, "Request refused",
			"This form was sent from another site, so usher refused it. Open the admin page and try again from there.")
	}))
	get := func(next adminHandler) http.Handler { return adminHeaders(h.requireAdmin(next, false)) }
	post := func(next adminHandler) http.Handler { return adminHeaders(cop.Handler(h.requireAdmin(next, true))) }

	mux.Handle("GET /admin/login", h.SignIn)
	mux.Handle("GET /admin", get(h.adminDashboard))
	mux.Handle("GET /admin/{$}", adminHeaders(http.RedirectHandler(h.url("/admin"), http.StatusSeeOther)))
	mux.Handle("GET /admin/invitations/{id}", get(h.adminInvitation))
	mux.Handle("GET /admin/users/{id}", get(h.adminUserPage))
	mux.Handle("GET /admin/funnel", get(h.adminFunnel))
	mux.Handle("POST /admin/invitations", post(h.adminCreate))
	mux.Handle("POST /admin/invitations/{id}/revoke", post(h.adminRevoke))
	mux.Handle("POST /admin/invitations/{id}/resend", post(h.adminResend))
	mux.Handle("POST /admin/users/{id}/claims", post(h.adminSetClaim))
	mux.Handle("GET /admin/users", get(h.adminUsers))
	mux.Handle("GET /admin/audit", get(h.adminAudit))
	mux.Handle("POST /admin/users/{id}/roles/remove", post(h.adminRemoveRole))
	mux.Handle("POST /admin/users/{id}/claims/remove", post(h.adminRemoveClaim))
	mux.Handle("POST /admin/users/{id}/sign-out", post(h.adminSignOutUser))
	mux.Handle("POST /admin/users/{id}/erase", post(h.adminEraseUser))
	mux.Handle("POST /admin/logout", adminHeaders(cop.Handler(http.HandlerFunc(h.adminLogout))))
	mux.Handle("GET /admin/signed-out", adminHeaders(http.HandlerFunc(h.adminSignedOut)))
	mux.Handle("/admin/", adminHeaders(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.adminError(w, r, nil, http.StatusNotFound, "Not found", "There is no admin page at this address.")
	})))
}

type ctxKeyNonce struct{}

// adminHeaders: a fresh CSP nonce per response for the one inline
// stylesheet and the one script (the one-time link's Copy button); no other
// script may run, nothing may frame the page, no URL leaks through Referer,
// nothing is cached.
func adminHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nonce := randomToken(16)
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'nonce-"+nonce+"'; script-src 'nonce-"+nonce+"'; img-src 'self'; "+
			"form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKeyNonce{}, nonce)))
	})
}

// requireAdmin loads the session, checks the CSRF token of a POST, and lets
// only admins through: nobody signed in goes to the admin sign-in (a GET) or
// is told to sign in again (a POST: a redirect to the upstream would break
// the form-action policy); a signed-in non-admin gets 403.
func (h *Page) requireAdmin(next adminHandler, isPost bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sess, err := h.Session(r)
		if err != nil {
			h.adminUnavailable(w, r, "loading the browser session", err)
			return
		}
		if isPost && !h.checkCSRF(w, r, sess) {
			return
		}
		u, ok, err := h.adminUser(r.Context(), sess)
		if err != nil {
			h.adminUnavailable(w, r, "loading the signed-in user", err)
			return
		}
		if u == nil {
			if isPost {
				h.adminError(w, r, nil, http.StatusUnauthorized, "Signed out",
					"Your admin session has ended. Sign in again; nothing was changed.")
				return
			}
			http.Redirect(w, r, h.url("/admin/login"), http.StatusSeeOther)
			return
		}
		a := &adminRequest{user: u, sess: sess}
		if a.csrf, err = h.ensureCSRF(w, r, sess); err != nil {
			h.adminUnavailable(w, r, "saving the browser session", err)
			return
		}
		if !ok {
			h.Logger.WarnContext(r.Context(), "admin page refused: not an admin", "user_id", u.ID)
			h.render(w, r, http.StatusForbidden, "error", adminPage{Title: "Not an admin", User: u, CSRF: a.csrf, Page: errorPage{
				Heading: "You cannot use the admin page",
				Message: fmt.Sprintf("You are signed in as %s, who does not hold the role %s.", userLabel(u), h.AdminRole),
				Hint:    "Ask an admin to invite this account with that role, or sign out and sign in with another account.",
			}})
			return
		}
		next(w, r, a)
	})
}

// ensureCSRF returns the session's synchronizer token, minting one if needed.
func (h *Page) ensureCSRF(w http.ResponseWriter, r *http.Request, sess *gsessions.Session) (string, error) {
	if tok, _ := sess.Values[sessionCSRF].(string); tok != "" {
		return tok, nil
	}
	tok := randomToken(32)
	sess.Values[sessionCSRF] = tok
	return tok, sess.Save(r, w)
}

// checkCSRF compares the form's token with the session's in constant time.
func (h *Page) checkCSRF(w http.ResponseWriter, r *http.Request, sess *gsessions.Session) bool {
	r.Body = http.MaxBytesReader(w, r.Body, maxAdminForm)
	if err := r.ParseForm(); err != nil {
		h.adminError(w, r, nil, http.StatusBadRequest, "Form not readable", "The form could not be read (it may be too large).")
		return false
	}
	want, _ := sess.Values[sessionCSRF].(string)
	got := r.PostForm.Get(csrfField)
	if want == "" || got == "" || subtle.ConstantTimeCompare([]byte(want), []byte(got)) != 1 {
		h.Logger.WarnContext(r.Context(), "admin page: POST without a valid CSRF token", "path", r.URL.Path)
		h.adminError(w, r, nil, http.StatusForbidden, "Form expired",
			"This form was not sent from the current admin session (its security token is missing or stale), so nothing was changed. Reload the admin page and try again.")
		return false
	}
	return true
}

// --- dashboard --------------------------------------------------------------

// --- create ----------------------------------------------------------------

// --- sign out ----------------------------------------------------------------

func (h *Page) adminLogout(w http.ResponseWriter, r *http.Request) {
	sess, err := h.Session(r)
	if err != nil {
		h.adminUnavailable(w, r, "loading the browser session", err)
		return
	}
	if !h.checkCSRF(w, r, sess) {
		return
	}
	uid, _ := h.SignedIn(sess)
	sess.Options.MaxAge = -1
	if err := sess.Save(r, w); err != nil {
		h.adminUnavailable(w, r, "ending the browser session", err)
		return
	}
	if uid != "" {
		h.Logger.InfoContext(r.Context(), "admin page sign-out", "user_id", uid)
		h.audit(r.Context(), "admin.signed_out", uid, uid, nil)
	}
	http.Redirect(w, r, h.url("/admin/signed-out"), http.StatusSeeOther)
}

func (h *Page) adminSignedOut(w http.ResponseWriter, r *http.Request) {
	h.render(w, r, http.StatusOK, "error", adminPage{Title: "Signed out", Page: errorPage{
		Heading: "You are signed out of usher",
		Message: "Your usher session has ended.",
		Hint:    "The sign-in service may still remember you: to use another account, sign out there too.",
		LinkURL: h.url("/admin/login"), LinkText: "Sign in again",
	}})
}

// --- flash -------------------------------------------------------------------

// adminFlash is shown once, on the next page of the same browser. A fresh
// invitation link travels only this way: sealed (encrypted and
// authenticated) inside the server-side session, never in a URL, and deleted
// the moment it is shown.
type adminFlash struct {
	Invitation string    `json:"i,omitempty"`
	Link       string    `json:"l,omitempty"`
	Notice     string    `json:"n,omitempty"`
	Expires    time.Time `json:"e"`
}

func (h *Page) setFlash(sess *gsessions.Session, f adminFlash) {
	f.Expires = h.Now().Add(adminFlashTTL)
	enc, err := h.Sealer.Encode(sessionFlash, f)
	if err != nil {
		h.Logger.Error("admin page: sealing the flash", "err", err)
		return
	}
	sess.Values[sessionFlash] = enc
}

// takeFlash returns the flash meant for this page (invitation id, or "" for
// the dashboard) and deletes it from the session before the page is written.
func (h *Page) takeFlash(w http.ResponseWriter, r *http.Request, sess *gsessions.Session, invitation string) adminFlash {
	enc, _ := sess.Values[sessionFlash].(string)
	if enc == "" {
		return adminFlash{}
	}
	var f adminFlash
	err := h.Sealer.Decode(sessionFlash, enc, &f)
	stale := err != nil || h.Now().After(f.Expires)
	if !stale && f.Invitation != invitation {
		return adminFlash{} // meant for another page: keep it for there
	}
	delete(sess.Values, sessionFlash)
	if err := sess.Save(r, w); err != nil {
		h.Logger.ErrorContext(r.Context(), "admin page: clearing the flash", "err", err)
		return adminFlash{} // not shown unless it is gone
	}
	if stale {
		return adminFlash{}
	}
	return f
}

func (h *Page) saveAndRedirect(w http.ResponseWriter, r *http.Request, sess *gsessions.Session, path string) {
	if err := sess.Save(r, w); err != nil {
		h.adminUnavailable(w, r, "saving the browser session", err)
		return
	}
	http.Redirect(w, r, h.url(path), http.StatusSeeOther)
}

// --- helpers -----------------------------------------------------------------

func (h *Page) auditAdmin(ctx context.Context, action string, u *grants.User, target string, detail map[string]string) {
	h.audit(ctx, action, u.ID, target, detail)
}

// loadFailed answers a failed read of the record (kind, id) a page shows:
// 404 when there is none, 503 when the store failed. It reports whether it
// answered.
func (h *Page) loadFailed(w http.ResponseWriter, r *http.Request, a *adminRequest, err error, kind, id string) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, grants.ErrNotFound):
		title := strings.ToUpper(kind[:1]) + kind[1:] + " not found"
		h.adminError(w, r, a, http.StatusNotFound, title, fmt.Sprintf("No %s has the id %q.", kind, clip(id, 100)))
	default:
		h.adminUnavailable(w, r, "loading the "+kind, err)
	}
	return true
}

func (h *Page) adminError(w http.ResponseWriter, r *http.Request, a *adminRequest, status int, heading, msg string) {
	p := adminPage{Title: heading, Page: errorPage{Heading: heading, Message: msg, LinkURL: h.url("/admin"), LinkText: "Back to the admin page"}}
	if a != nil {
		p.User, p.CSRF = a.user, a.csrf
	}
	h.render(w, r, status, "error", p)
}

func (h *Page) adminUnavailable(w http.ResponseWriter, r *http.Request, what string, err error) {
	h.Logger.ErrorContext(r.Context(), "admin page: request failed", "what", what, "err", err)
	w.Header().Set("Retry-After", "5")
	h.adminError(w, r, nil, http.StatusServiceUnavailable, "Temporarily unavailable",
		"usher could not reach its store while "+what+". Try again in a moment.")
}

func userLabel(u *grants.User) string {
	if u.Email != "" {
		return u.Email
	}
	return u.ID
}

func inviterName(u *grants.User) string {
	if u.Name != "" {
		return u.Name
	}
	return userLabel(u)
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04 UTC")
}

func fmtTimeSeconds(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

func prettyJSON(v any) string {
	out, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(out)
}

func emailStatusLabel(s string) string {
	switch s {
	case "":
		return "—"
	case "not_requested":
		return "not mailed (link only)"
	}
	return s
}
