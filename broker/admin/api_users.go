package admin

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/usher-oidc/usher/grants"
	storeerrs "github.com/usher-oidc/usher/store/errs"
)

// apiUsers lists users: ?email= finds that exact email (as before);
// otherwise ?q= is a case-insensitive prefix of the email, paged with
// limit and cursor (next_cursor), in email order.
func (h *API) apiUsers(w http.ResponseWriter, r *http.Request, c Caller) {
	q := r.URL.Query()
	if q.Get("email") != "" {
		h.apiFindUsers(w, r, c)
		return
	}
	f := grants.UserFilter{Query: q.Get("q"), Cursor: q.Get("cursor")}
	var ok bool
	if f.Limit, ok = queryLimit(w, q, 50); !ok {
		return
	}
	users, next, err := h.Store.ListUsers(r.Context(), f)
	if err != nil {
		if errors.Is(err, storeerrs.ErrBadCursor) {
			writeProblem(w, http.StatusBadRequest, "invalid-query", "Invalid cursor", "cursor must be a value returned as next_cursor.",
				grants.FieldError{Field: "cursor", Message: "not a cursor usher issued"})
			return
		}
		h.storeProblem(w, r, "listing users", err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Users      []grants.User `json:"users"`
		NextCursor string        `json:"next_cursor,omitempty"`
	}{users, next})
}

// apiSignOutUser ends every session, refresh token and access token of the
// user (grants.Service.SignOutEverywhere) and answers 204.
func (h *API) apiSignOutUser(w http.ResponseWriter, r *http.Request, c Caller) {
	id := r.PathValue("id")
	if _, err := h.Invitations.SignOutEverywhere(r.Context(), id, c.actor()); err != nil {
		h.userProblem(w, r, id, "signing the user out everywhere", err)
		return
	}
	h.Logger.InfoContext(r.Context(), "user signed out everywhere", "user_id", id, "client_id", c.ClientID)
	w.WriteHeader(http.StatusNoContent)
}

// apiEraseUser erases the user (grants.Service.EraseUser) and answers 204;
// a second call finds no user (404).
func (h *API) apiEraseUser(w http.ResponseWriter, r *http.Request, c Caller) {
	id := r.PathValue("id")
	if err := h.Invitations.EraseUser(r.Context(), id, c.actor()); err != nil {
		h.userProblem(w, r, id, "erasing the user", err)
		return
	}
	h.Logger.InfoContext(r.Context(), "user erased", "user_id", id, "client_id", c.ClientID)
	w.WriteHeader(http.StatusNoContent)
}

func (h *API) userProblem(w http.ResponseWriter, r *http.Request, id, what string, err error) {
	if errors.Is(err, grants.ErrNotFound) {
		writeProblem(w, http.StatusNotFound, "not-found", "User not found",
			fmt.Sprintf("No user has the id %q (an erased user is gone); find users with GET /api/users?q=.", clip(id, 100)))
		return
	}
	h.storeProblem(w, r, what, err)
}
