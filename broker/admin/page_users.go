package admin

import (
	"encoding/json"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/usher-oidc/usher/grants"
)

// adminSetClaim is the admin page's way to set or change one claim of a
// user: the operator action that invitations never take (they keep a held
// claim). The value is JSON; a bare word is taken as a string.
func (h *Page) adminSetClaim(w http.ResponseWriter, r *http.Request, a *adminRequest) {
	ctx := r.Context()
	id := r.PathValue("id")
	key := strings.TrimSpace(r.PostFormValue("claim"))
	if err := grants.ValidateClaimName(h.ClaimsNamespace, key); err != nil {
		h.adminError(w, r, a, http.StatusUnprocessableEntity, "Claim not set", err.Error())
		return
	}
	raw := strings.TrimSpace(r.PostFormValue("value"))
	var value any
	if err := json.Unmarshal([]byte(raw), &value); err != nil {
		value = raw
	}
	if value == nil || raw == "" || len(raw) > grants.MaxClaimsBytes {
		h.adminError(w, r, a, http.StatusUnprocessableEntity, "Claim not set", "Give a value (JSON, or plain text for a string) of at most 8 KiB; to take a claim back, use the API's DELETE.")
		return
	}
	if _, err := h.Store.GetUser(ctx, id); err != nil {
		h.adminError(w, r, a, http.StatusNotFound, "User not found", "No user has this id.")
		return
	}
	if _, err := h.Invitations.ChangeGrant(ctx, id, grants.GrantChange{SetClaim: key, Value: value}, a.user.ID); err != nil {
		h.adminUnavailable(w, r, "setting the claim", err)
		return
	}
	h.Logger.InfoContext(ctx, "grant claim set", "user_id", id, "claim", key, "admin_user_id", a.user.ID)
	h.saveAndRedirect(w, r, a.sess, "/admin/users/"+url.PathEscape(id))
}

type userPage struct {
	U           *grants.User
	Created     string
	LastLogin   string
	Identities  []grants.Identity
	Roles       []string
	Claims      string
	Invitations []string
	IsAdmin     bool
	// ClaimKeys name the claims, for their Remove buttons; SignedOut is
	// the last sign out everywhere ("" never).
	ClaimKeys []string
	SignedOut string
}

func (h *Page) adminUserPage(w http.ResponseWriter, r *http.Request, a *adminRequest) {
	ctx := r.Context()
	id := r.PathValue("id")
	u, err := h.Store.GetUser(ctx, id)
	if h.loadFailed(w, r, a, err, "user", id) {
		return
	}
	ids, err := h.Store.Identities(ctx, id)
	if err != nil {
		h.adminUnavailable(w, r, "loading the user's identities", err)
		return
	}
	g, err := h.Store.GetGrant(ctx, id)
	if err != nil {
		h.adminUnavailable(w, r, "loading the user's grant", err)
		return
	}
	p := userPage{U: u, Created: fmtTime(u.CreatedAt), Identities: ids, Roles: g.Roles, Claims: prettyJSON(g.Claims),
		Invitations: g.Invitations, IsAdmin: slices.Contains(g.Roles, h.AdminRole)}
	if !u.LastLoginAt.IsZero() {
		p.LastLogin = fmtTime(u.LastLoginAt)
	}
	p.ClaimKeys = slices.Sorted(maps.Keys(g.Claims))
	if g.SignedOutAt != nil {
		p.SignedOut = fmtTime(*g.SignedOutAt)
	}
	notice := h.takeFlash(w, r, a.sess, userFlash(id)).Notice
	h.render(w, r, http.StatusOK, "user", adminPage{Title: userLabel(u), User: a.user, CSRF: a.csrf, Notice: notice, Page: p})
}
