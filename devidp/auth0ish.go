package devidp

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// denyByRule answers a completed sign-in with the Misbehavior.Deny error
// instead of a code. Auth0 does this when a post-login Action calls
// api.access.deny(reason) or a Rule returns an UnauthorizedError: "Any error
// resulting from a rule goes to your callback URL in the protocol's standard
// response mode … a standard OAuth2 error with error and error_description"
// (https://auth0.com/docs/customize/rules/raise-errors-from-rules; for
// Actions, https://auth0.com/docs/customize/actions/explore-triggers/post-login).
// Actions send error=access_denied; Rules' UnauthorizedError is reported
// with error=unauthorized.
// guardCallback has already checked that this browser finished the request.
func (s *Server) denyByRule(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d := s.store.getMisbehavior().Deny
		ar, err := s.store.authRequest(r.URL.Query().Get("id"))
		if d == nil || err != nil {
			next.ServeHTTP(w, r)
			return
		}
		u, ok := s.store.user(ar.sub)
		if !ok || !strings.EqualFold(u.email, strings.TrimSpace(d.Email)) {
			next.ServeHTTP(w, r)
			return
		}
		code := d.Error
		if code == "" {
			code = "access_denied"
		}
		q := url.Values{"error": {code}, "error_description": {d.Description}}
		if ar.state != "" {
			q.Set("state", ar.state)
		}
		sep := "?"
		if strings.Contains(ar.redirectURI, "?") {
			sep = "&"
		}
		s.log.Info("devidp: sign-in denied by rule", "sub", ar.sub, "error", code)
		http.Redirect(w, r, ar.redirectURI+sep+q.Encode(), http.StatusFound)
	})
}

// Auth0's /userinfo limit for a user: a burst of 10, then 5 a minute
// (https://auth0.com/docs/troubleshoot/customer-support/operational-policies/rate-limit-policy/rate-limit-configurations/self-service-public,
// "User Info … To a unique User ID").
const userinfoRateLimit = 10

// limitUserinfo counts /userinfo calls and, under
// Misbehavior.UserinfoRateLimited, answers as Auth0 does past its per-user
// limit: 429 with the X-RateLimit-* headers
// (https://auth0.com/docs/api/authentication/user-profile/get-user-info).
func (s *Server) limitUserinfo(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.userinfoCalls.Add(1)
		if !s.store.getMisbehavior().UserinfoRateLimited {
			next.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		h.Set("X-RateLimit-Limit", strconv.Itoa(userinfoRateLimit))
		h.Set("X-RateLimit-Remaining", "0")
		h.Set("X-RateLimit-Reset", strconv.FormatInt(time.Now().Add(12*time.Second).Unix(), 10))
		http.Error(w, "Too Many Requests", http.StatusTooManyRequests)
	})
}

// UserinfoCalls is how many requests /userinfo has had.
func (s *Server) UserinfoCalls() int { return int(s.userinfoCalls.Load()) }

// clientSecret is the secret of a registered client ("" if unknown).
func (s *store) clientSecret(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.clients[id]; ok {
		return c.secret
	}
	return ""
}
