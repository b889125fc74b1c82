package admin

import (
	"errors"
	"html/template"
	"net/http"
	"net/url"
	"strings"

	"github.com/usher-oidc/usher/grants"
	storeerrs "github.com/usher-oidc/usher/store/errs"
)

// The admin page's users: the list with its search (/admin/users?q=, a
// prefix of the email), and the user page's actions — take a role or a
// claim back, sign out everywhere, erase — each behind a confirmation
// (a <details> disclosure: the CSP allows no script).

func init() {
	funcs := template.FuncMap{
		"join": strings.Join,
		"errs": func(m map[string][]string, field string) []string { return m[field] },
	}
	for _, name := range []string{"users", "audit"} {
		t := template.Must(template.New("layout.html").Funcs(funcs).ParseFS(adminTemplateFS, "templates/admin/layout.html"))
		adminTemplates[name] = template.Must(t.ParseFS(adminTemplateFS, "templates/admin/"+name+".html"))
	}
}

type userRow struct {
	ID, Email, Name, Created, LastLogin string
}

type usersPage struct {
	Query string
	Rows  []userRow
	pager
}

// flashUsers is the flash key of the user list (the erase lands there).
const flashUsers = "users"

func (h *Page) adminUsers(w http.ResponseWriter, r *http.Request, a *adminRequest) {
	notice := h.takeFlash(w, r, a.sess, flashUsers).Notice
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	cursor := r.URL.Query().Get("cursor")
	users, next, err := h.Store.ListUsers(r.Context(), grants.UserFilter{Query: q, Limit: adminPageSize, Cursor: cursor})
	if errors.Is(err, storeerrs.ErrBadCursor) {
		users, next, err = h.Store.ListUsers(r.Context(), grants.UserFilter{Query: q, Limit: adminPageSize})
		cursor, notice = "", "That page link is no longer valid; showing the first page."
	}
	if err != nil {
		h.adminUnavailable(w, r, "listing users", err)
		return
	}
	p := usersPage{Query: q}
	for _, u := range users {
		row := userRow{ID: u.ID, Email: u.Email, Name: u.Name, Created: fmtTime(u.CreatedAt)}
		if !u.LastLoginAt.IsZero() {
			row.LastLogin = fmtTime(u.LastLoginAt)
		}
		p.Rows = append(p.Rows, row)
	}
	p.pager = h.pages("/admin/users", [][2]string{{"q", q}}, next, cursor)
	h.render(w, r, http.StatusOK, "users", adminPage{Title: "Users", User: a.user, CSRF: a.csrf, Notice: notice, Page: p})
}

func userFlash(id string) string { return "user:" + id }

// userAction runs one operator action on the user of the path, then shows
// the user page (or, after an erase, the list) with notice.
func (h *Page) userAction(w http.ResponseWriter, r *http.Request, a *adminRequest, what string, act func(id string) (notice, next string, err error)) {
	id := r.PathValue("id")
	if _, err := h.Store.GetUser(r.Context(), id); h.loadFailed(w, r, a, err, "user", id) {
		return
	}
	notice, next, err := act(id)
	if err != nil {
		h.adminUnavailable(w, r, what, err)
		return
	}
	h.Logger.InfoContext(r.Context(), "admin page: "+what, "user_id", id, "admin_user_id", a.user.ID)
	key := userFlash(id)
	if next == "/admin/users" {
		key = flashUsers
	}
	h.setFlash(a.sess, adminFlash{Invitation: key, Notice: notice})
	h.saveAndRedirect(w, r, a.sess, next)
}

func (h *Page) adminRemoveRole(w http.ResponseWriter, r *http.Request, a *adminRequest) {
	role := r.PostFormValue("role")
	h.userAction(w, r, a, "removing a role", func(id string) (string, string, error) {
		if role == "" {
			return "No role named; nothing changed.", "/admin/users/" + url.PathEscape(id), nil
		}
		_, err := h.Invitations.ChangeGrant(r.Context(), id, grants.GrantChange{RemoveRole: role}, a.user.ID)
		return "Role " + role + " removed (and from Auth0, when mirrored).", "/admin/users/" + url.PathEscape(id), err
	})
}

func (h *Page) adminRemoveClaim(w http.ResponseWriter, r *http.Request, a *adminRequest) {
	claim := r.PostFormValue("claim")
	h.userAction(w, r, a, "removing a claim", func(id string) (string, string, error) {
		if claim == "" {
			return "No claim named; nothing changed.", "/admin/users/" + url.PathEscape(id), nil
		}
		_, err := h.Invitations.ChangeGrant(r.Context(), id, grants.GrantChange{RemoveClaim: claim}, a.user.ID)
		return "Claim " + claim + " removed.", "/admin/users/" + url.PathEscape(id), err
	})
}

func (h *Page) adminSignOutUser(w http.ResponseWriter, r *http.Request, a *adminRequest) {
	h.userAction(w, r, a, "signing a user out everywhere", func(id string) (string, string, error) {
		_, err := h.Invitations.SignOutEverywhere(r.Context(), id, a.user.ID)
		return "Signed out everywhere: every session and refresh token of this user ended; their next sign-in works as usual.",
			"/admin/users/" + url.PathEscape(id), err
	})
}

func (h *Page) adminEraseUser(w http.ResponseWriter, r *http.Request, a *adminRequest) {
	h.userAction(w, r, a, "erasing a user", func(id string) (string, string, error) {
		err := h.Invitations.EraseUser(r.Context(), id, a.user.ID)
		return "User " + id + " erased: their profile, identities and grant are gone; the audit log keeps their ID.", "/admin/users", err
	})
}
