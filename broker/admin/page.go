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
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	gsessions "github.com/gorilla/sessions"

	"github.com/usher-oidc/usher/client"
	"github.com/usher-oidc/usher/grants"
	storeerrs "github.com/usher-oidc/usher/store/errs"
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
	mux.Handle("POST /admin/invitations", post(h.adminCreate))
	mux.Handle("POST /admin/invitations/{id}/revoke", post(h.adminRevoke))
	mux.Handle("POST /admin/invitations/{id}/resend", post(h.adminResend))
	mux.Handle("POST /admin/users/{id}/claims", post(h.adminSetClaim))
	mux.Handle("POST /admin/logout", adminHeaders(cop.Handler(http.HandlerFunc(h.adminLogout))))
	mux.Handle("GET /admin/signed-out", adminHeaders(http.HandlerFunc(h.adminSignedOut)))
	mux.Handle("/admin/", adminHeaders(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.adminError(w, r, nil, http.StatusNotFound, "Not found", "There is no admin page at this address.")
	})))
}

type ctxKeyNonce struct{}

// adminHeaders: a fresh CSP nonce per response for the one inline
// stylesheet; no script may run, nothing may frame the page, no URL leaks
// through Referer, nothing is cached.
func adminHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nonce := randomToken(16)
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'nonce-"+nonce+"'; img-src 'self'; "+
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

// inviteForm is the invite form as typed, kept on errors.
type inviteForm struct {
	Email, RolesText, Claims, Metadata, ExternalID, ClientID, EmailMatch, Days, Delivery, Link string
	Roles                                                                                      []string
}

type option struct {
	Value, Label string
	Selected     bool
}

type invitationRow struct {
	ID, Email, Roles, ExternalID, Created, Expires, EmailStatus string
	Status                                                      grants.Status
	Actionable                                                  bool
}

type dashboardPage struct {
	Form        inviteForm
	Errors      map[string][]string
	Catalog     []option
	Clients     []option
	Matches     []option
	Links       []option
	DefaultDays int
	MaxDays     int

	Status, Query, By string
	Statuses          []option
	Rows              []invitationRow
	NextURL, FirstURL string
	Searched          bool
}

func (h *Page) adminDashboard(w http.ResponseWriter, r *http.Request, a *adminRequest) {
	notice := h.takeFlash(w, r, a.sess, "").Notice
	f := inviteForm{Days: strconv.Itoa(h.defaultDays()), Delivery: "email"}
	h.renderDashboard(w, r, a, http.StatusOK, f, nil, notice)
}

func (h *Page) defaultDays() int {
	d := h.DefaultTTL
	if d <= 0 {
		d = 7 * 24 * time.Hour
	}
	return max(1, int(d/(24*time.Hour)))
}

func (h *Page) maxDays() int {
	d := h.MaxTTL
	if d <= 0 {
		d = 30 * 24 * time.Hour
	}
	return max(1, int(d/(24*time.Hour)))
}

func (h *Page) renderDashboard(w http.ResponseWriter, r *http.Request, a *adminRequest, status int, f inviteForm, errs map[string][]string, notice string) {
	p := dashboardPage{Form: f, Errors: errs, DefaultDays: h.defaultDays(), MaxDays: h.maxDays()}
	h.formOptions(&p, f)
	list, next, cursor, ok := h.listInvitations(w, r, &p, &notice)
	if !ok {
		return
	}
	for i := range list {
		inv := &list[i]
		st := inv.EffectiveStatus(h.Now())
		p.Rows = append(p.Rows, invitationRow{
			ID: inv.ID, Email: inv.Email, Roles: strings.Join(inv.Roles, ", "), ExternalID: inv.ExternalID,
			Created: fmtTime(inv.CreatedAt), Expires: fmtTime(inv.ExpiresAt), EmailStatus: emailStatusLabel(inv.EmailStatus),
			Status: st, Actionable: inv.Status == grants.StatusPending,
		})
	}
	listURL := func(cur string) string {
		v := url.Values{}
		if p.Status != "" {
			v.Set("status", p.Status)
		}
		if p.Query != "" {
			v.Set("q", p.Query)
			v.Set("by", p.By)
		}
		if cur != "" {
			v.Set("cursor", cur)
		}
		if len(v) == 0 {
			return h.url("/admin")
		}
		return h.url("/admin?" + v.Encode())
	}
	if next != "" {
		p.NextURL = listURL(next)
	}
	if cursor != "" {
		p.FirstURL = listURL("")
	}
	h.render(w, r, status, "dashboard", adminPage{Title: "Invitations", User: a.user, CSRF: a.csrf, Notice: notice, Page: p})
}

// formOptions fills the invite form's choices: roles, apps, email match, link form.
func (h *Page) formOptions(p *dashboardPage, f inviteForm) {
	for _, role := range h.RoleCatalog {
		p.Catalog = append(p.Catalog, option{Value: role, Label: role, Selected: slices.Contains(f.Roles, role)})
	}
	var apps []Client
	for _, c := range h.Clients {
		if c.Interactive {
			apps = append(apps, c)
		}
	}
	if len(apps) > 1 {
		slices.SortFunc(apps, func(x, y Client) int { return strings.Compare(x.ID, y.ID) })
		p.Clients = append(p.Clients, option{Value: "", Label: "(the invitation's default)", Selected: f.ClientID == ""})
		for _, c := range apps {
			label := c.ID
			if c.Name != "" {
				label = c.Name + " (" + c.ID + ")"
			}
			p.Clients = append(p.Clients, option{Value: c.ID, Label: label, Selected: f.ClientID == c.ID})
		}
	}
	def := h.DefaultEmailMatch
	if def == "" {
		def = grants.MatchAny
	}
	for _, m := range []struct{ v, l string }{
		{grants.MatchAny, "anyone holding the link"},
		{grants.MatchExact, "only this exact (verified) email"},
		{grants.MatchDomain, "any verified email of this domain"},
	} {
		sel := f.EmailMatch == m.v || f.EmailMatch == "" && m.v == def
		p.Matches = append(p.Matches, option{Value: m.v, Label: m.l, Selected: sel})
	}
	for _, l := range []struct{ v, l string }{
		{grants.LinkInvite, "/invite/… (usher's invitation page)"},
		{grants.LinkAuthorize, "/authorize?client_id=…&invitation=… (the app's sign-in)"},
	} {
		p.Links = append(p.Links, option{Value: l.v, Label: l.l, Selected: f.Link == l.v || f.Link == "" && l.v == grants.LinkInvite})
	}

}

// listInvitations reads the list's page: the status filter, the search
// (email or external ID, whichever finds something first) and the cursor. It
// has answered the request itself when ok is false.
func (h *Page) listInvitations(w http.ResponseWriter, r *http.Request, p *dashboardPage, notice *string) (list []grants.Invitation, next, cursor string, ok bool) {
	ctx := r.Context()
	q := r.URL.Query()
	p.Status = q.Get("status")
	switch grants.Status(p.Status) {
	case grants.StatusPending, grants.StatusRedeemed, grants.StatusRevoked, grants.StatusDeclined, grants.StatusExpired:
	default:
		p.Status = ""
	}
	for _, s := range []string{"", "pending", "redeemed", "revoked", "declined", "expired"} {
		label := s
		if s == "" {
			label = "all"
		}
		p.Statuses = append(p.Statuses, option{Value: s, Label: label, Selected: s == p.Status})
	}
	p.Query = strings.TrimSpace(clip(q.Get("q"), 254))
	p.Searched = p.Query != ""
	cursor = q.Get("cursor")
	by := q.Get("by")
	var order []string
	switch {
	case p.Query == "":
		order = []string{""}
	case by == "email" || by == "external_id":
		order = []string{by}
	case strings.Contains(p.Query, "@"):
		order = []string{"email", "external_id"}
	default:
		order = []string{"external_id", "email"}
	}
	for i, field := range order {
		fl := grants.InvitationFilter{Status: grants.Status(p.Status), Cursor: cursor, Limit: adminPageSize}
		switch field {
		case "email":
			fl.Email = p.Query
		case "external_id":
			fl.ExternalID = p.Query
		}
		var err error
		list, next, err = h.Store.ListInvitations(ctx, fl, h.Now())
		if cursor != "" && errors.Is(err, storeerrs.ErrBadCursor) {
			*notice = "That page link is no longer valid; showing the first page."
			cursor, fl.Cursor = "", ""
			list, next, err = h.Store.ListInvitations(ctx, fl, h.Now())
		}
		if err != nil {
			h.adminUnavailable(w, r, "listing invitations", err)
			return nil, "", "", false
		}
		p.By = field
		if len(list) > 0 || cursor != "" || i == len(order)-1 {
			break
		}
	}
	return list, next, cursor, true
}

// --- create ----------------------------------------------------------------

func (h *Page) adminCreate(w http.ResponseWriter, r *http.Request, a *adminRequest) {
	ctx := r.Context()
	pf := r.PostForm
	f := inviteForm{
		Email: strings.TrimSpace(pf.Get("email")), RolesText: pf.Get("roles_text"), Claims: pf.Get("claims"),
		Metadata: pf.Get("metadata"), ExternalID: strings.TrimSpace(pf.Get("external_id")), ClientID: pf.Get("client_id"),
		EmailMatch: pf.Get("email_match"), Days: strings.TrimSpace(pf.Get("expires_days")), Delivery: pf.Get("delivery"),
		Link: pf.Get("link"),
	}
	if f.Delivery != "link" {
		f.Delivery = "email"
	}
	errs := map[string][]string{}
	if len(h.RoleCatalog) > 0 {
		f.Roles = pf["roles"]
	} else {
		f.Roles = strings.FieldsFunc(f.RolesText, func(c rune) bool { return c == ',' || c == ' ' || c == '\n' || c == '\r' || c == '\t' })
	}
	send := f.Delivery == "email"
	req := grants.CreateRequest{
		Email: f.Email, Roles: f.Roles, ExternalID: f.ExternalID, ClientID: f.ClientID,
		EmailMatch: f.EmailMatch, SendEmail: &send, Inviter: grants.DisplayName(inviterName(a.user)), Link: f.Link,
		MayGrantPrivileged: true, // an admin, signed in on the admin page
	}
	var err error
	if req.Claims, err = parseJSONObject(f.Claims); err != nil {
		errs["claims"] = append(errs["claims"], err.Error())
	}
	if req.Metadata, err = parseJSONObject(f.Metadata); err != nil {
		errs["metadata"] = append(errs["metadata"], err.Error())
	}
	if f.Days != "" {
		n, err := strconv.Atoi(f.Days)
		if err != nil || n < 1 || n > h.maxDays() {
			errs["expires"] = append(errs["expires"], fmt.Sprintf("must be a whole number of days from 1 to %d", h.maxDays()))
		} else {
			secs := int64(n) * 86400
			req.ExpiresIn = &secs
		}
	}
	if len(errs) > 0 {
		// Report every other problem too, in one round trip.
		_, _, verr := h.Invitations.Validate(req)
		addFieldErrors(errs, verr)
		h.renderDashboard(w, r, a, http.StatusUnprocessableEntity, f, errs, "")
		return
	}
	inv, token, existed, err := h.Invitations.Create(ctx, req, a.user.ID)
	var ve *grants.ValidationError
	switch {
	case errors.As(err, &ve):
		addFieldErrors(errs, ve)
		h.renderDashboard(w, r, a, http.StatusUnprocessableEntity, f, errs, "")
		return
	case err != nil:
		h.adminUnavailable(w, r, "storing the invitation", err)
		return
	case existed:
		h.setFlash(a.sess, adminFlash{Invitation: inv.ID, Notice: "A pending invitation with this external ID already exists: here it is. Nothing new was created."})
		h.saveAndRedirect(w, r, a.sess, "/admin/invitations/"+url.PathEscape(inv.ID))
		return
	}
	h.Logger.InfoContext(ctx, "invitation created", "invitation_id", inv.ID, "admin_user_id", a.user.ID, "send_email", inv.SendEmail)
	h.Metrics.invitationCreated()
	fl := adminFlash{Invitation: inv.ID}
	if inv.SendEmail {
		fl.Notice = "Invitation created; the email to " + inv.Email + " is on its way."
	} else {
		fl.Link = h.Link(inv, token)
		fl.Notice = "Invitation created. Copy the link below now: usher keeps only a hash of it and cannot show it again."
	}
	h.setFlash(a.sess, fl)
	h.saveAndRedirect(w, r, a.sess, "/admin/invitations/"+url.PathEscape(inv.ID))
}

// parseJSONObject reads a textarea of JSON: empty means none.
func parseJSONObject(s string) (map[string]any, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var m map[string]any
	err := json.Unmarshal([]byte(s), &m)
	if err == nil {
		if m == nil {
			return nil, errors.New(`must be a JSON object like {"crm_id": "123"}, not null`)
		}
		return m, nil
	}
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		line, col := lineCol(s, int(se.Offset))
		return nil, fmt.Errorf("is not valid JSON: %s (line %d, column %d)", strings.TrimPrefix(se.Error(), "json: "), line, col)
	case errors.As(err, &te):
		return nil, fmt.Errorf(`must be a JSON object like {"crm_id": "123"}, not a JSON %s`, te.Value)
	}
	return nil, fmt.Errorf("is not valid JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
}

func lineCol(s string, offset int) (int, int) {
	offset = min(max(offset, 0), len(s))
	before := s[:offset]
	line := strings.Count(before, "\n") + 1
	return line, offset - strings.LastIndexByte(before, '\n')
}

// addFieldErrors files the service's field errors under the form's fields.
func addFieldErrors(errs map[string][]string, err error) {
	var ve *grants.ValidationError
	if !errors.As(err, &ve) {
		return
	}
	for _, fe := range ve.Errors {
		field := fe.Field
		switch {
		case strings.HasPrefix(field, "roles["), field == "roles":
			field = "roles"
		case strings.HasPrefix(field, "claims."):
			fe.Message = strings.TrimPrefix(fe.Field, "claims.") + ": " + fe.Message
			field = "claims"
		case field == "expires_in":
			field = "expires"
		case field == "email", field == "claims", field == "metadata", field == "external_id", field == "client_id", field == "email_match":
		default:
			fe.Message = fe.Field + ": " + fe.Message
			field = "form"
		}
		if !slices.Contains(errs[field], fe.Message) {
			errs[field] = append(errs[field], fe.Message)
		}
	}
}

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
		return "not sent (link copied)"
	}
	return s
}
