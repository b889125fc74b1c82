package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/usher-oidc/usher/grants"
	storeerrs "github.com/usher-oidc/usher/store/errs"
)

// inviteForm is the invite form as typed, kept on errors.
type inviteForm struct {
	Email, RolesText, Claims, Metadata, ExternalID, ClientID, EmailMatch, Days, Delivery, Link, Locale string
	Roles                                                                                              []string
}

type option struct {
	Value, Label string
	Selected     bool
}

type invitationRow struct {
	ID, Email, Roles, ExternalID, Created, Expires, EmailStatus string
	Status                                                      grants.Status
	// CanRevoke: still pending (not expired); CanResend: pending or
	// expired (a resend gives it a new link and a new expiry).
	CanRevoke, CanResend bool
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
	From, To          string // the creation-date filter, YYYY-MM-DD
	Statuses          []option
	Rows              []invitationRow
	pager
	Searched bool
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
			Status: st, CanRevoke: st == grants.StatusPending, CanResend: inv.Status == grants.StatusPending,
		})
	}
	by := ""
	if p.Query != "" {
		by = p.By
	}
	p.pager = h.pages("/admin", [][2]string{{"status", p.Status}, {"q", p.Query}, {"by", by}, {"from", p.From}, {"to", p.To}}, next, cursor)
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

// listInvitations reads the list's page: the status and date filters, the
// prefix search (email or external ID, whichever finds something first) and
// the cursor. It has answered the request itself when ok is false.
func (h *Page) listInvitations(w http.ResponseWriter, r *http.Request, p *dashboardPage, notice *string) (list []grants.Invitation, next, cursor string, ok bool) {
	ctx := r.Context()
	q := r.URL.Query()
	p.setStatus(q.Get("status"))
	p.Query = strings.TrimSpace(clip(q.Get("q"), 254))
	var window grants.InvitationFilter
	var dateNotice string
	if p.From, p.To, dateNotice = pageCreatedRange(q, &window); dateNotice != "" {
		*notice = dateNotice
	}
	p.Searched = p.Query != "" || p.From != "" || p.To != ""
	cursor = q.Get("cursor")
	order := searchOrder(p.Query, q.Get("by"))
	for i, field := range order {
		fl := grants.InvitationFilter{Status: grants.Status(p.Status), Cursor: cursor, Limit: adminPageSize,
			CreatedSince: window.CreatedSince, CreatedUntil: window.CreatedUntil}
		switch field {
		case "email":
			fl.EmailPrefix = p.Query
		case "external_id":
			fl.ExternalIDPrefix = p.Query
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

// setStatus sets the status filter (an unknown status is none) and its
// choices.
func (p *dashboardPage) setStatus(status string) {
	p.Status = status
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
}

// searchOrder is the fields a search tries, in turn: by's when it names one,
// else email first when the query looks like an email, else external ID
// first. Without a query, one unfiltered listing ("").
func searchOrder(query, by string) []string {
	switch {
	case query == "":
		return []string{""}
	case by == "email" || by == "external_id":
		return []string{by}
	case strings.Contains(query, "@"):
		return []string{"email", "external_id"}
	default:
		return []string{"external_id", "email"}
	}
}

func (h *Page) adminCreate(w http.ResponseWriter, r *http.Request, a *adminRequest) {
	ctx := r.Context()
	f := h.readInviteForm(r.PostForm)
	req, errs := h.inviteRequest(f, a.user)
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
	h.setFlash(a.sess, h.createdFlash(inv, token))
	h.saveAndRedirect(w, r, a.sess, "/admin/invitations/"+url.PathEscape(inv.ID))
}

// readInviteForm reads the invite form as typed. The roles are the
// catalog's checked boxes, or the words of the roles field when there is no
// catalog.
func (h *Page) readInviteForm(pf url.Values) inviteForm {
	f := inviteForm{
		Email: strings.TrimSpace(pf.Get("email")), RolesText: pf.Get("roles_text"), Claims: pf.Get("claims"),
		Metadata: pf.Get("metadata"), ExternalID: strings.TrimSpace(pf.Get("external_id")), ClientID: pf.Get("client_id"),
		EmailMatch: pf.Get("email_match"), Days: strings.TrimSpace(pf.Get("expires_days")), Delivery: pf.Get("delivery"),
		Link: pf.Get("link"), Locale: strings.TrimSpace(pf.Get("locale")),
	}
	if f.Delivery != "link" {
		f.Delivery = "email"
	}
	if len(h.RoleCatalog) > 0 {
		f.Roles = pf["roles"]
	} else {
		f.Roles = strings.FieldsFunc(f.RolesText, func(c rune) bool { return c == ',' || c == ' ' || c == '\n' || c == '\r' || c == '\t' })
	}
	return f
}

// inviteRequest is the create request of the form, by admin user u, with
// the problems only the form can have (JSON that does not parse, a number of
// days out of range) by form field.
func (h *Page) inviteRequest(f inviteForm, u *grants.User) (grants.CreateRequest, map[string][]string) {
	errs := map[string][]string{}
	send := f.Delivery == "email"
	req := grants.CreateRequest{
		Email: f.Email, Roles: f.Roles, ExternalID: f.ExternalID, ClientID: f.ClientID,
		EmailMatch: f.EmailMatch, SendEmail: &send, Inviter: grants.DisplayName(inviterName(u)), Link: f.Link, Locale: f.Locale,
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
	return req, errs
}

// createdFlash is the notice after a create: the mail is on its way, or the
// link to copy now (usher cannot show it again).
func (h *Page) createdFlash(inv *grants.Invitation, token string) adminFlash {
	fl := adminFlash{Invitation: inv.ID}
	if inv.SendEmail {
		fl.Notice = "Invitation created; the email to " + inv.Email + " is on its way."
	} else {
		fl.Link = h.Link(inv, token)
		fl.Notice = "Invitation created. Copy the link below now: usher keeps only a hash of it and cannot show it again."
	}
	return fl
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
		case field == "email", field == "claims", field == "metadata", field == "external_id", field == "client_id", field == "email_match", field == "locale":
		default:
			fe.Message = fe.Field + ": " + fe.Message
			field = "form"
		}
		if !slices.Contains(errs[field], fe.Message) {
			errs[field] = append(errs[field], fe.Message)
		}
	}
}
