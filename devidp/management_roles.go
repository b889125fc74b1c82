package devidp

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

type apiRole struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Description string `json:"description"`
}

var errRoleExists = errors.New("role name already exists")

func (m *management) createRole(name, description string) (*mgmtRole, error) {
	name = strings.TrimSpace(name)
	if name == "" {
		return nil, errors.New("name is required")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.roles {
		if r.name == name {
			return nil, errRoleExists
		}
	}
	b := make([]byte, 8)
	rand.Read(b)
	r := &mgmtRole{id: "rol_" + hex.EncodeToString(b), name: name, description: description}
	m.roles[r.id] = r
	m.roleOrder = append(m.roleOrder, r.id)
	return r, nil
}

func (s *Server) apiCreateRole(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Name        string `json:"name"`
		Description string `json:"description"`
	}
	if !decodeAPIBody(w, r, &body) {
		return
	}
	if strings.TrimSpace(body.Name) == "" {
		writeAPIError(w, http.StatusBadRequest, "Payload validation error: 'Missing required property: name'.", "invalid_body")
		return
	}
	role, err := s.mgmt.createRole(body.Name, body.Description)
	if errors.Is(err, errRoleExists) {
		writeAPIError(w, http.StatusConflict, "Role name already exists", "role_already_exists")
		return
	}
	if err != nil {
		writeAPIError(w, http.StatusBadRequest, err.Error(), "invalid_body")
		return
	}
	writeJSON(w, http.StatusOK, apiRole{ID: role.id, Name: role.name, Description: role.description})
}

// apiListRoles filters by name_filter, case-insensitively on a substring
// (the caller compares names exactly itself).
func (s *Server) apiListRoles(w http.ResponseWriter, r *http.Request) {
	filter := strings.ToLower(r.URL.Query().Get("name_filter"))
	s.mgmt.mu.Lock()
	var roles []apiRole
	for _, id := range s.mgmt.roleOrder {
		role := s.mgmt.roles[id]
		if filter == "" || strings.Contains(strings.ToLower(role.name), filter) {
			roles = append(roles, apiRole{ID: role.id, Name: role.name, Description: role.description})
		}
	}
	s.mgmt.mu.Unlock()
	writeRoleList(w, r, roles)
}

func (s *Server) apiUserRoles(w http.ResponseWriter, r *http.Request) {
	u, ok := s.apiUser(w, r)
	if !ok {
		return
	}
	s.mgmt.mu.Lock()
	var roles []apiRole
	for _, id := range s.mgmt.roleOrder {
		if s.mgmt.userRoles[u.sub][id] {
			role := s.mgmt.roles[id]
			roles = append(roles, apiRole{ID: role.id, Name: role.name, Description: role.description})
		}
	}
	s.mgmt.mu.Unlock()
	writeRoleList(w, r, roles)
}

// writeRoleList pages a list as Auth0 does: page (from 0), per_page
// (default 50, at most 100), and include_totals=true for the
// {roles,start,limit,total} envelope instead of a bare array.
func writeRoleList(w http.ResponseWriter, r *http.Request, roles []apiRole) {
	q := r.URL.Query()
	page, _ := strconv.Atoi(q.Get("page"))
	perPage, err := strconv.Atoi(q.Get("per_page"))
	if err != nil || perPage <= 0 {
		perPage = 50
	}
	perPage = min(perPage, 100)
	page = max(page, 0)
	total := len(roles)
	start := min(page*perPage, total)
	end := min(start+perPage, total)
	pageRoles := append([]apiRole{}, roles[start:end]...)
	if q.Get("include_totals") == "true" {
		writeJSON(w, http.StatusOK, map[string]any{
			"roles": pageRoles, "start": start, "limit": perPage, "total": total,
		})
		return
	}
	writeJSON(w, http.StatusOK, pageRoles)
}

func (s *Server) apiAssignRoles(w http.ResponseWriter, r *http.Request) {
	s.changeUserRoles(w, r, true)
}

func (s *Server) apiRemoveRoles(w http.ResponseWriter, r *http.Request) {
	s.changeUserRoles(w, r, false)
}

func (s *Server) changeUserRoles(w http.ResponseWriter, r *http.Request, assign bool) {
	u, ok := s.apiUser(w, r)
	if !ok {
		return
	}
	var body struct {
		Roles []string `json:"roles"`
	}
	if !decodeAPIBody(w, r, &body) {
		return
	}
	if len(body.Roles) == 0 {
		writeAPIError(w, http.StatusBadRequest, "Payload validation error: 'Array is too short (0), minimum 1' on property roles.", "invalid_body")
		return
	}
	s.mgmt.mu.Lock()
	defer s.mgmt.mu.Unlock()
	for _, id := range body.Roles {
		if _, ok := s.mgmt.roles[id]; !ok {
			writeAPIError(w, http.StatusNotFound, "One or more of the roles do not exist: "+id, "inexistent_role")
			return
		}
	}
	s.mgmt.seenLocked(u.sub, time.Now())
	set := s.mgmt.userRoles[u.sub]
	if set == nil {
		set = make(map[string]bool)
		s.mgmt.userRoles[u.sub] = set
	}
	for _, id := range body.Roles {
		if assign {
			set[id] = true
		} else {
			delete(set, id)
		}
	}
	w.WriteHeader(http.StatusNoContent)
}
