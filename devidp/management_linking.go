package devidp

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Account linking, as Auth0 does it
// (https://auth0.com/docs/manage-users/user-accounts/user-account-linking):
// POST /api/v2/users/{primary}/identities links a secondary user into the
// primary; afterwards the secondary's user_id is no longer a user (GET
// answers 404, users-by-email leaves it out) and its identity is listed in
// the primary's identities[] with its profileData. Like Auth0, the
// secondary's metadata and roles are not carried over. Only the
// {"provider","user_id"} body form is supported (not "link_with").
//
// GET /api/v2/users finds the primary again, with one query form of
// Auth0's user search
// (https://auth0.com/docs/manage-users/user-search/user-search-query-syntax):
// q=identities.user_id:"<id>" (search_engine v3, or left out).

// ErrLinkRefused: LinkUser was asked something Auth0 refuses.
var ErrLinkRefused = errors.New("devidp: link refused")

// primaryOf is the user a secondary sub was linked into ("" when none).
func (m *management) primaryOf(sub string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.linkedTo[sub]
}

// LinkUser links the user secondary into the user primary, as
// POST /api/v2/users/{primary}/identities would.
func (s *Server) LinkUser(primary, secondary string) error {
	status, msg := s.link(primary, secondary)
	if status != 0 {
		return fmt.Errorf("%w: %s", ErrLinkRefused, msg)
	}
	return nil
}

// link answers status 0 when it linked, else the API's status and message.
func (s *Server) link(primary, secondary string) (int, string) {
	p, ok := s.store.user(primary)
	if !ok || s.mgmt.primaryOf(primary) != "" {
		return http.StatusNotFound, "The user does not exist."
	}
	sec, ok := s.store.user(secondary)
	if !ok {
		return http.StatusBadRequest, "The secondary user does not exist." // devidp's wording
	}
	if secondary == p.sub {
		return http.StatusBadRequest, "Main identity cannot be linked to itself." // devidp's wording
	}
	provider, userID, _ := strings.Cut(sec.sub, "|")
	id := apiIdentity{
		Provider: provider, UserID: userID, Connection: sec.connection, IsSocial: provider != "auth0",
		ProfileData: map[string]any{"email": sec.email, "email_verified": sec.emailVerified, "name": sec.name},
	}
	m := s.mgmt
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.linkedTo[secondary] != "" {
		return http.StatusConflict, "The identity is already linked to another user." // devidp's wording
	}
	if len(m.linkedIDs[secondary]) > 0 {
		return http.StatusBadRequest, "The secondary user has linked identities of its own; unlink them first." // devidp's wording
	}
	m.linkedTo[secondary] = p.sub
	m.linkedIDs[p.sub] = append(m.linkedIDs[p.sub], id)
	delete(m.appMetadata, secondary)
	delete(m.userMetadata, secondary)
	delete(m.userRoles, secondary)
	m.seenLocked(p.sub, time.Now())
	m.updated[p.sub] = time.Now()
	return 0, ""
}

func (s *Server) apiLinkUser(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Provider     string `json:"provider"`
		UserID       any    `json:"user_id"` // Auth0 takes a string or a number
		ConnectionID string `json:"connection_id"`
		LinkWith     string `json:"link_with"`
	}
	if !decodeAPIBody(w, r, &body) {
		return
	}
	if body.LinkWith != "" {
		writeAPIError(w, http.StatusBadRequest, "Payload validation error: devidp supports linking by provider and user_id only, not link_with.", "invalid_body")
		return
	}
	var userID string
	switch v := body.UserID.(type) {
	case string:
		userID = v
	case float64:
		userID = fmt.Sprint(int64(v))
	}
	if body.Provider == "" || userID == "" {
		writeAPIError(w, http.StatusBadRequest, "Payload validation error: 'Missing required property: provider, user_id'.", "invalid_body")
		return
	}
	primary := r.PathValue("id")
	if status, msg := s.link(primary, body.Provider+"|"+userID); status != 0 {
		writeAPIError(w, status, msg, "")
		return
	}
	u, _ := s.store.user(primary)
	writeJSON(w, http.StatusCreated, s.mgmt.userJSON(u).Identities)
}

var identityQuery = regexp.MustCompile(`^identities\.user_id:"([^"\\]+)"$`)

func (s *Server) apiSearchUsers(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if e := q.Get("search_engine"); e != "" && e != "v3" {
		writeAPIError(w, http.StatusBadRequest, "Query validation error: search_engine: devidp supports v3 only.", "invalid_query_string")
		return
	}
	m := identityQuery.FindStringSubmatch(strings.TrimSpace(q.Get("q")))
	if m == nil {
		writeAPIError(w, http.StatusBadRequest, `Query validation error: devidp supports only q=identities.user_id:"<id>".`, "invalid_query_string")
		return
	}
	users := []apiUser{}
	for _, u := range s.store.allUsers() {
		if s.mgmt.primaryOf(u.sub) != "" {
			continue
		}
		j := s.mgmt.userJSON(u)
		if slices.ContainsFunc(j.Identities, func(id apiIdentity) bool { return id.UserID == m[1] }) {
			users = append(users, j)
		}
	}
	if q.Get("include_totals") != "true" {
		writeJSON(w, http.StatusOK, users)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"start": 0, "limit": len(users), "length": len(users), "total": len(users), "users": users,
	})
}

// allUsers returns every identity, sorted by sub.
func (s *store) allUsers() []identity {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]identity, 0, len(s.users))
	for _, u := range s.users {
		out = append(out, *u)
	}
	slices.SortFunc(out, func(a, b identity) int { return strings.Compare(a.sub, b.sub) })
	return out
}
