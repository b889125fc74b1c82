package devidp

// The Management API's token endpoint: client-credentials requests for the
// /api/v2/ audience, picked out of /oauth/token (see management.go).

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// --- token endpoint ---

// routeTokenRequest sends client-credentials requests for the Management
// API audience (anything ending in /api/v2/) to managementToken and every
// other token request to next (the OIDC provider). The body is read and put
// back, so next sees the request unchanged.
func (s *Server) routeTokenRequest(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.Body == nil {
			next.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxManagementBody))
		r.Body.Close()
		if err != nil {
			writeOAuthError(w, http.StatusBadRequest, "invalid_request", "cannot read the request body")
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		params := tokenParams(r.Header.Get("Content-Type"), body)
		if params.Get("grant_type") == "client_credentials" && strings.HasSuffix(params.Get("audience"), "/api/v2/") {
			s.managementToken(w, r, params)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// tokenParams reads a form or (as Auth0 also accepts) a JSON token request.
func tokenParams(contentType string, body []byte) url.Values {
	mt, _, _ := mime.ParseMediaType(contentType)
	if mt == "application/json" {
		var m map[string]any
		if json.Unmarshal(body, &m) != nil {
			return url.Values{}
		}
		v := url.Values{}
		for k, val := range m {
			if str, ok := val.(string); ok {
				v.Set(k, str)
			}
		}
		return v
	}
	v, err := url.ParseQuery(string(body))
	if err != nil {
		return url.Values{}
	}
	return v
}

func (s *Server) managementToken(w http.ResponseWriter, r *http.Request, params url.Values) {
	rec := &statusRecorder{ResponseWriter: w}
	defer func() { s.mgmt.record(r, rec.status, 0) }()
	w = rec
	w.Header().Set("Cache-Control", "no-store")
	s.mgmt.mu.Lock()
	down := s.mgmt.down
	s.mgmt.mu.Unlock()
	if down {
		writeOAuthError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "devidp: the Management API is down (ManagementDown)")
		return
	}
	id, secret, basic := r.BasicAuth()
	if basic {
		// RFC 6749 §2.3.1: form-urlencoded before base64.
		if u, err := url.QueryUnescape(id); err == nil {
			id = u
		}
		if u, err := url.QueryUnescape(secret); err == nil {
			secret = u
		}
	} else {
		id, secret = params.Get("client_id"), params.Get("client_secret")
	}
	s.mgmt.mu.Lock()
	want, known := s.mgmt.clients[id]
	s.mgmt.mu.Unlock()
	if !known || subtle.ConstantTimeCompare([]byte(want), []byte(secret)) != 1 {
		writeOAuthError(w, http.StatusUnauthorized, "access_denied", "Unauthorized")
		return
	}
	if aud := params.Get("audience"); aud != s.issuer+"api/v2/" {
		writeOAuthError(w, http.StatusForbidden, "access_denied", "Service not enabled within domain: "+aud)
		return
	}
	token := rand.Text() + rand.Text()
	now := time.Now()
	s.mgmt.mu.Lock()
	for t, info := range s.mgmt.tokens {
		if now.After(info.expires) {
			delete(s.mgmt.tokens, t)
		}
	}
	scopes := s.mgmt.scopes[id]
	s.mgmt.tokens[token] = mgmtToken{clientID: id, expires: now.Add(managementTokenLifetime)}
	s.mgmt.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": token,
		"token_type":   "Bearer",
		"expires_in":   int(managementTokenLifetime.Seconds()),
		"scope":        scopeString(scopes),
	})
}

func writeOAuthError(w http.ResponseWriter, status int, code, description string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": description})
}
