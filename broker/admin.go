package broker

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	gsessions "github.com/gorilla/sessions"

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

// adminRequest is what every admin handler gets: the signed-in admin, the
// browser session and its CSRF token.
type adminRequest struct {
	user *grants.User
	sess *gsessions.Session
	csrf string
}

type adminHandler func(w http.ResponseWriter, r *http.Request, a *adminRequest)

func (b *Broker) adminRoutes(mux *http.ServeMux) {
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.log.WarnContext(r.Context(), "admin page: cross-origin POST refused", "path", r.URL.Path)
		b.adminError(w, r, nil, http.StatusForbidden, "Request refused",
			"This form was sent from another site, so usher refused it. Open the admin page and try again from there.")
	}))
	get := func(h adminHandler) http.Handler { return adminHeaders(b.requireAdmin(h, false)) }
	post := func(h adminHandler) http.Handler { return adminHeaders(cop.Handler(b.requireAdmin(h, true))) }

	mux.Handle("GET /admin", get(b.adminDashboard))
	mux.Handle("GET /admin/{$}", adminHeaders(http.RedirectHandler(b.url("/admin"), http.StatusSeeOther)))
	mux.Handle("GET /admin/invitations/{id}", get(b.adminInvitation))
	mux.Handle("GET /admin/users/{id}", get(b.adminUserPage))
	mux.Handle("POST /admin/invitations", post(b.adminCreate))
	mux.Handle("POST /admin/invitations/{id}/revoke", post(b.adminRevoke))
	mux.Handle("POST /admin/invitations/{id}/resend", post(b.adminResend))
	mux.Handle("POST /admin/users/{id}/claims", post(b.adminSetClaim))
	mux.Handle("POST /admin/logout", adminHeaders(cop.Handler(http.HandlerFunc(b.adminLogout))))
	mux.Handle("GET /admin/signed-out", adminHeaders(http.HandlerFunc(b.adminSignedOut)))
	mux.Handle("/admin/", adminHeaders(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.adminError(w, r, nil, http.StatusNotFound, "Not found", "There is no admin page at this address.")
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
func (b *Broker) requireAdmin(h adminHandler, isPost bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sess, err := b.browser.Get(r, b.cookie)
		if err != nil {
			b.adminUnavailable(w, r, "loading the browser session", err)
			return
		}
		if isPost && !b.checkCSRF(w, r, sess) {
			return
		}
		u, ok, err := b.adminUser(r)
		if err != nil {
			b.adminUnavailable(w, r, "loading the signed-in user", err)
			return
		}
		if u == nil {
			if isPost {
				b.adminError(w, r, nil, http.StatusUnauthorized, "Signed out",
					"Your admin session has ended. Sign in again; nothing was changed.")
				return
			}
			http.Redirect(w, r, b.url("/admin/login"), http.StatusSeeOther)
			return
		}
		a := &adminRequest{user: u, sess: sess}
		if a.csrf, err = b.ensureCSRF(w, r, sess); err != nil {
			b.adminUnavailable(w, r, "saving the browser session", err)
			return
		}
		if !ok {
			b.log.WarnContext(r.Context(), "admin page refused: not an admin", "user_id", u.ID)
			b.render(w, r, http.StatusForbidden, "error", adminPage{Title: "Not an admin", User: u, CSRF: a.csrf, Page: errorPage{
				Heading: "You cannot use the admin page",
				Message: fmt.Sprintf("You are signed in as %s, who does not hold the role %s.", userLabel(u), b.opts.AdminRole),
				Hint:    "Ask an admin to invite this account with that role, or sign out and sign in with another account.",
			}})
			return
		}
		h(w, r, a)
	})
}

// ensureCSRF returns the session's synchronizer token, minting one if needed.
func (b *Broker) ensureCSRF(w http.ResponseWriter, r *http.Request, sess *gsessions.Session) (string, error) {
	if tok, _ := sess.Values[sessionCSRF].(string); tok != "" {
		return tok, nil
	}
	tok := randomToken(32)
	sess.Values[sessionCSRF] = tok
	return tok, sess.Save(r, w)
}

// checkCSRF compares the form's token with the session's in constant time.
func (b *Broker) checkCSRF(w http.ResponseWriter, r *http.Request, sess *gsessions.Session) bool {
	r.Body = http.MaxBytesReader(w, r.Body, maxAdminForm)
	if err := r.ParseForm(); err != nil {
		b.adminError(w, r, nil, http.StatusBadRequest, "Form not readable", "The form could not be read (it may be too large).")
		return false
	}
	want, _ := sess.Values[sessionCSRF].(string)
	got := r.PostForm.Get(csrfField)
	if want == "" || got == "" || subtle.ConstantTimeCompare([]byte(want), []byte(got)) != 1 {
		b.log.WarnContext(r.Context(), "admin page: POST without a valid CSRF token", "path", r.URL.Path)
		b.adminError(w, r, nil, http.StatusForbidden, "Form expired",
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

func (b *Broker) adminDashboard(w http.ResponseWriter, r *http.Request, a *adminRequest) {
	notice := b.takeFlash(w, r, a.sess, "").Notice
	f := inviteForm{Days: strconv.Itoa(b.defaultDays()), Delivery: "email"}
	b.renderDashboard(w, r, a, http.StatusOK, f, nil, notice)
}

func (b *Broker) defaultDays() int {
	d := b.opts.InvitationDefaultTTL
	if d <= 0 {
		d = 7 * 24 * time.Hour
	}
	return max(1, int(d/(24*time.Hour)))
}

func (b *Broker) maxDays() int {
	d := b.opts.InvitationMaxTTL
	if d <= 0 {
		d = 30 * 24 * time.Hour
	}
	return max(1, int(d/(24*time.Hour)))
}

func (b *Broker) renderDashboard(w http.ResponseWriter, r *http.Request, a *adminRequest, status int, f inviteForm, errs map[string][]string, notice string) {
	ctx := r.Context()
	p := dashboardPage{Form: f, Errors: errs, DefaultDays: b.defaultDays(), MaxDays: b.maxDays()}
	for _, role := range b.opts.RoleCatalog {
		p.Catalog = append(p.Catalog, option{Value: role, Label: role, Selected: slices.Contains(f.Roles, role)})
	}
	var apps []*Client
	for _, c := range b.clients {
		if len(c.RedirectURIs) > 0 {
			apps = append(apps, c)
		}
	}
	if len(apps) > 1 {
		slices.SortFunc(apps, func(x, y *Client) int { return strings.Compare(x.ID, y.ID) })
		p.Clients = append(p.Clients, option{Value: "", Label: "(the invitation's default)", Selected: f.ClientID == ""})
		for _, c := range apps {
			label := c.ID
			if c.Name != "" {
				label = c.Name + " (" + c.ID + ")"
			}
			p.Clients = append(p.Clients, option{Value: c.ID, Label: label, Selected: f.ClientID == c.ID})
		}
	}
	def := b.opts.InvitationEmailMatch
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

	// The list: filter, search, page.
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
	cursor := q.Get("cursor")
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
	var list []grants.Invitation
	var next string
	for i, field := range order {
		fl := grants.InvitationFilter{Status: grants.Status(p.Status), Cursor: cursor, Limit: adminPageSize}
		switch field {
		case "email":
			fl.Email = p.Query
		case "external_id":
			fl.ExternalID = p.Query
		}
		var err error
		list, next, err = b.grants.ListInvitations(ctx, fl, b.now())
		if cursor != "" && errors.Is(err, storeerrs.ErrBadCursor) {
			notice = "That page link is no longer valid; showing the first page."
			cursor, fl.Cursor = "", ""
			list, next, err = b.grants.ListInvitations(ctx, fl, b.now())
		}
		if err != nil {
			b.adminUnavailable(w, r, "listing invitations", err)
			return
		}
		p.By = field
		if len(list) > 0 || cursor != "" || i == len(order)-1 {
			break
		}
	}
	for i := range list {
		inv := &list[i]
		st := inv.EffectiveStatus(b.now())
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
			return b.url("/admin")
		}
		return b.url("/admin?" + v.Encode())
	}
	if next != "" {
		p.NextURL = listURL(next)
	}
	if cursor != "" {
		p.FirstURL = listURL("")
	}
	b.render(w, r, status, "dashboard", adminPage{Title: "Invitations", User: a.user, CSRF: a.csrf, Notice: notice, Page: p})
}

// --- create ----------------------------------------------------------------

func (b *Broker) adminCreate(w http.ResponseWriter, r *http.Request, a *adminRequest) {
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
	if len(b.opts.RoleCatalog) > 0 {
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
		if err != nil || n < 1 || n > b.maxDays() {
			errs["expires"] = append(errs["expires"], fmt.Sprintf("must be a whole number of days from 1 to %d", b.maxDays()))
		} else {
			secs := int64(n) * 86400
			req.ExpiresIn = &secs
		}
	}
	if len(errs) > 0 {
		// Report every other problem too, in one round trip.
		_, _, verr := b.invitations.Validate(req)
		addFieldErrors(errs, verr)
		b.renderDashboard(w, r, a, http.StatusUnprocessableEntity, f, errs, "")
		return
	}
	inv, token, existed, err := b.invitations.Create(ctx, req, a.user.ID)
	var ve *grants.ValidationError
	switch {
	case errors.As(err, &ve):
		addFieldErrors(errs, ve)
		b.renderDashboard(w, r, a, http.StatusUnprocessableEntity, f, errs, "")
		return
	case err != nil:
		b.adminUnavailable(w, r, "storing the invitation", err)
		return
	case existed:
		b.setFlash(a.sess, adminFlash{Invitation: inv.ID, Notice: "A pending invitation with this external ID already exists: here it is. Nothing new was created."})
		b.saveAndRedirect(w, r, a.sess, "/admin/invitations/"+url.PathEscape(inv.ID))
		return
	}
	b.log.InfoContext(ctx, "invitation created", "invitation_id", inv.ID, "admin_user_id", a.user.ID, "send_email", inv.SendEmail)
	b.metrics.invitationsMade.Inc()
	fl := adminFlash{Invitation: inv.ID}
	if inv.SendEmail {
		fl.Notice = "Invitation created; the email to " + inv.Email + " is on its way."
	} else {
		fl.Link = b.inviteLink(inv, token)
		fl.Notice = "Invitation created. Copy the link below now: usher keeps only a hash of it and cannot show it again."
	}
	b.setFlash(a.sess, fl)
	b.saveAndRedirect(w, r, a.sess, "/admin/invitations/"+url.PathEscape(inv.ID))
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

func (b *Broker) adminLogout(w http.ResponseWriter, r *http.Request) {
	sess, err := b.browser.Get(r, b.cookie)
	if err != nil {
		b.adminUnavailable(w, r, "loading the browser session", err)
		return
	}
	if !b.checkCSRF(w, r, sess) {
		return
	}
	uid, _ := sess.Values["uid"].(string)
	sess.Options.MaxAge = -1
	if err := sess.Save(r, w); err != nil {
		b.adminUnavailable(w, r, "ending the browser session", err)
		return
	}
	if uid != "" {
		b.log.InfoContext(r.Context(), "admin page sign-out", "user_id", uid)
		if b.audit != nil {
			b.audit(r.Context(), AuditEvent{Action: "admin.signed_out", Actor: uid, Target: uid})
		}
	}
	http.Redirect(w, r, b.url("/admin/signed-out"), http.StatusSeeOther)
}

func (b *Broker) adminSignedOut(w http.ResponseWriter, r *http.Request) {
	b.render(w, r, http.StatusOK, "error", adminPage{Title: "Signed out", Page: errorPage{
		Heading: "You are signed out of usher",
		Message: "Your usher session has ended.",
		Hint:    "The sign-in service may still remember you: to use another account, sign out there too.",
		LinkURL: b.url("/admin/login"), LinkText: "Sign in again",
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

func (b *Broker) setFlash(sess *gsessions.Session, f adminFlash) {
	f.Expires = b.now().Add(adminFlashTTL)
	enc, err := b.browser.codec.Encode(sessionFlash, f)
	if err != nil {
		b.log.Error("admin page: sealing the flash", "err", err)
		return
	}
	sess.Values[sessionFlash] = enc
}

// takeFlash returns the flash meant for this page (invitation id, or "" for
// the dashboard) and deletes it from the session before the page is written.
func (b *Broker) takeFlash(w http.ResponseWriter, r *http.Request, sess *gsessions.Session, invitation string) adminFlash {
	enc, _ := sess.Values[sessionFlash].(string)
	if enc == "" {
		return adminFlash{}
	}
	var f adminFlash
	err := b.browser.codec.Decode(sessionFlash, enc, &f)
	stale := err != nil || b.now().After(f.Expires)
	if !stale && f.Invitation != invitation {
		return adminFlash{} // meant for another page: keep it for there
	}
	delete(sess.Values, sessionFlash)
	if err := sess.Save(r, w); err != nil {
		b.log.ErrorContext(r.Context(), "admin page: clearing the flash", "err", err)
		return adminFlash{} // not shown unless it is gone
	}
	if stale {
		return adminFlash{}
	}
	return f
}

func (b *Broker) saveAndRedirect(w http.ResponseWriter, r *http.Request, sess *gsessions.Session, path string) {
	if err := sess.Save(r, w); err != nil {
		b.adminUnavailable(w, r, "saving the browser session", err)
		return
	}
	http.Redirect(w, r, b.url(path), http.StatusSeeOther)
}

// --- helpers -----------------------------------------------------------------

func (b *Broker) auditAdmin(ctx context.Context, action string, u *grants.User, target string, detail map[string]string) {
	if b.audit != nil {
		b.audit(ctx, AuditEvent{Action: action, Actor: u.ID, Target: target, Detail: detail})
	}
}

func (b *Broker) adminError(w http.ResponseWriter, r *http.Request, a *adminRequest, status int, heading, msg string) {
	p := adminPage{Title: heading, Page: errorPage{Heading: heading, Message: msg, LinkURL: b.url("/admin"), LinkText: "Back to the admin page"}}
	if a != nil {
		p.User, p.CSRF = a.user, a.csrf
	}
	b.render(w, r, status, "error", p)
}

func (b *Broker) adminUnavailable(w http.ResponseWriter, r *http.Request, what string, err error) {
	b.log.ErrorContext(r.Context(), "admin page: request failed", "what", what, "err", err)
	w.Header().Set("Retry-After", "5")
	b.adminError(w, r, nil, http.StatusServiceUnavailable, "Temporarily unavailable",
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
