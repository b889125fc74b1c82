package devidp

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"
)

type apiIdentity struct {
	Provider   string `json:"provider"`
	UserID     string `json:"user_id"`
	Connection string `json:"connection"`
	IsSocial   bool   `json:"isSocial"`
	// ProfileData: a linked (secondary) identity's profile.
	ProfileData map[string]any `json:"profileData,omitempty"`
}

type apiUser struct {
	UserID        string         `json:"user_id"`
	Email         string         `json:"email"`
	EmailVerified bool           `json:"email_verified"`
	Name          string         `json:"name"`
	Nickname      string         `json:"nickname"`
	Picture       string         `json:"picture"`
	Identities    []apiIdentity  `json:"identities"`
	AppMetadata   map[string]any `json:"app_metadata,omitempty"`
	UserMetadata  map[string]any `json:"user_metadata,omitempty"`
	CreatedAt     string         `json:"created_at"`
	UpdatedAt     string         `json:"updated_at"`
}

// auth0Time is how Auth0 writes instants: UTC, milliseconds, "Z".
func auth0Time(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// seenLocked records the first time the API saw a user, its created_at.
func (m *management) seenLocked(sub string, now time.Time) {
	if _, ok := m.created[sub]; !ok {
		m.created[sub] = now
		m.updated[sub] = now
	}
}

func (m *management) userJSON(u identity) apiUser {
	provider, userID, _ := strings.Cut(u.sub, "|")
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seenLocked(u.sub, now)
	return apiUser{
		UserID:        u.sub,
		Email:         u.email,
		EmailVerified: u.emailVerified,
		Name:          u.name,
		Nickname:      u.nickname(),
		Picture:       u.picture(),
		Identities: append([]apiIdentity{{
			Provider: provider, UserID: userID, Connection: u.connection,
			IsSocial: provider != "auth0",
		}}, m.linkedIDs[u.sub]...),
		AppMetadata:  deepCopy(m.appMetadata[u.sub]),
		UserMetadata: deepCopy(m.userMetadata[u.sub]),
		CreatedAt:    auth0Time(m.created[u.sub]),
		UpdatedAt:    auth0Time(m.updated[u.sub]),
	}
}

// usersByEmail returns every identity with exactly that email, whatever its
// connection. Like Auth0's users-by-email it is case-sensitive: database
// emails are stored lowercased, social ones as given, so "make sure that you
// are searching for users via email addresses using the correct case"
// (https://auth0.com/docs/api/management/v2/users-by-email/get-users-by-email).
func (s *store) usersByEmail(email string) []identity {
	email = strings.TrimSpace(email)
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []identity
	for _, u := range s.users {
		if u.email == email {
			out = append(out, *u)
		}
	}
	slices.SortFunc(out, func(a, b identity) int { return strings.Compare(a.sub, b.sub) })
	return out
}

func (s *Server) apiUsersByEmail(w http.ResponseWriter, r *http.Request) {
	email := r.URL.Query().Get("email")
	if email == "" {
		writeAPIError(w, http.StatusBadRequest, "Query validation error: 'Missing required property: email'", "invalid_query_string")
		return
	}
	users := []apiUser{}
	for _, u := range s.store.usersByEmail(email) {
		if s.mgmt.primaryOf(u.sub) != "" {
			continue // linked into another user: no longer a user itself
		}
		users = append(users, s.mgmt.userJSON(u))
	}
	writeJSON(w, http.StatusOK, users)
}

// apiUser looks the path's user up, answering 404 itself when there is none.
func (s *Server) apiUser(w http.ResponseWriter, r *http.Request) (identity, bool) {
	u, ok := s.store.user(r.PathValue("id"))
	if ok && s.mgmt.primaryOf(u.sub) != "" {
		ok = false // linked into another user (management_linking.go)
	}
	if !ok {
		writeAPIError(w, http.StatusNotFound, "The user does not exist.", "inexistent_user")
	}
	return u, ok
}

func (s *Server) apiGetUser(w http.ResponseWriter, r *http.Request) {
	if u, ok := s.apiUser(w, r); ok {
		writeJSON(w, http.StatusOK, s.mgmt.userJSON(u))
	}
}

// apiPatchUser supports app_metadata and user_metadata (Auth0's merge:
// top-level keys merged, null deletes a key, nested values replaced, {}
// clears all; field names as Auth0 allows them, see metadataNameError) and name. Other properties are refused, as Auth0 refuses
// unknown ones.
func (s *Server) apiPatchUser(w http.ResponseWriter, r *http.Request) {
	u, ok := s.apiUser(w, r)
	if !ok {
		return
	}
	var body map[string]json.RawMessage
	if !decodeAPIBody(w, r, &body) {
		return
	}
	patch, ok := parseUserPatch(w, body)
	if !ok {
		return
	}
	if !patchScope(w, r, body) {
		return
	}
	for field, md := range map[string]map[string]any{"app_metadata": patch.app, "user_metadata": patch.usr} {
		if msg := metadataNameError(field, md); msg != "" {
			writeAPIError(w, http.StatusBadRequest, msg, "invalid_body")
			return
		}
	}
	s.applyUserPatch(&u, patch)
	writeJSON(w, http.StatusOK, s.mgmt.userJSON(u))
}

// userPatch is what a PATCH /api/v2/users/{id} body asks for; nil: leave as is.
type userPatch struct {
	app, usr map[string]any // app_metadata, user_metadata
	name     *string
}

// parseUserPatch decodes a PATCH body's properties, answering 400 itself
// (ok false) for one devidp does not support or whose value is wrong.
func parseUserPatch(w http.ResponseWriter, body map[string]json.RawMessage) (p userPatch, ok bool) {
	for k, raw := range body {
		var err error
		switch k {
		case "app_metadata":
			err = decodeMetadata(raw, &p.app)
		case "user_metadata":
			err = decodeMetadata(raw, &p.usr)
		case "name":
			err = json.Unmarshal(raw, &p.name)
			if err == nil && (p.name == nil || strings.TrimSpace(*p.name) == "") {
				err = errors.New("must be a non-empty string")
			}
		default:
			writeAPIError(w, http.StatusBadRequest, fmt.Sprintf("Payload validation error: 'Additional properties not allowed: %s' (devidp supports app_metadata, user_metadata, name).", k), "invalid_body")
			return userPatch{}, false
		}
		if err != nil {
			writeAPIError(w, http.StatusBadRequest, fmt.Sprintf("Payload validation error: %s: %v", k, err), "invalid_body")
			return userPatch{}, false
		}
	}
	return p, true
}

// applyUserPatch writes a checked patch: the name to the store (and to u),
// the metadata with Auth0's merge.
func (s *Server) applyUserPatch(u *identity, p userPatch) {
	if p.name != nil {
		s.store.mu.Lock()
		if id, ok := s.store.users[u.sub]; ok {
			id.name = strings.TrimSpace(*p.name)
		}
		s.store.mu.Unlock()
		u.name = strings.TrimSpace(*p.name)
	}
	now := time.Now()
	s.mgmt.mu.Lock()
	s.mgmt.seenLocked(u.sub, now)
	if p.app != nil {
		s.mgmt.appMetadata[u.sub] = mergeMetadata(s.mgmt.appMetadata[u.sub], p.app)
	}
	if p.usr != nil {
		s.mgmt.userMetadata[u.sub] = mergeMetadata(s.mgmt.userMetadata[u.sub], p.usr)
	}
	s.mgmt.updated[u.sub] = now
	s.mgmt.mu.Unlock()
}

func decodeMetadata(raw json.RawMessage, dst *map[string]any) error {
	if err := json.Unmarshal(raw, dst); err != nil || *dst == nil {
		return errors.New("expected type object")
	}
	return nil
}

// mergeMetadata applies an Auth0 metadata patch: an empty patch clears the
// metadata, top-level keys are merged, a nil value deletes its key, and
// nested values replace what was there. It returns nil for empty metadata.
func mergeMetadata(cur, patch map[string]any) map[string]any {
	if len(patch) == 0 {
		return nil
	}
	out := maps.Clone(cur)
	if out == nil {
		out = make(map[string]any, len(patch))
	}
	for k, v := range patch {
		if v == nil {
			delete(out, k)
		} else {
			out[k] = v
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// deepCopy copies a JSON-shaped map through JSON, so callers cannot alias
// devidp's state (numbers come back as float64, as from any JSON API).
func deepCopy(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil
	}
	var out map[string]any
	if json.Unmarshal(b, &out) != nil {
		return nil
	}
	return out
}

func decodeAPIBody(w http.ResponseWriter, r *http.Request, dst any) bool {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxManagementBody))
	if err == nil {
		err = json.Unmarshal(body, dst)
	}
	if err != nil {
		writeAPIError(w, http.StatusBadRequest, "Payload validation error: 'Invalid JSON'", "invalid_body")
		return false
	}
	return true
}

// patchScope: Auth0 lets update:users_app_metadata change app_metadata
// alone; any other field needs update:users.
func patchScope(w http.ResponseWriter, r *http.Request, body map[string]json.RawMessage) bool {
	if _, appOnly := body["app_metadata"]; appOnly && len(body) == 1 {
		return hasScope(w, r, "update:users", "update:users_app_metadata")
	}
	return hasScope(w, r, "update:users")
}
