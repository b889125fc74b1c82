package broker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/zitadel/oidc/v3/pkg/oidc"

	"github.com/usher-oidc/usher/broker/admin"
	"github.com/usher-oidc/usher/sessions"
	"github.com/usher-oidc/usher/store/errs"
)

// Request size limits. Every body usher reads is a small form or JSON
// document; the authorize parameters are stored with the auth request, so
// each is bounded before it can reach the store.
const (
	maxRequestBody     = 64 << 10
	maxAuthorizeTotal  = 8 << 10 // every parameter name and value together
	maxAuthorizeParams = 40
	maxAuthorizeParam  = 2048 // any parameter not listed below
	maxStateNonce      = 512
	maxLoginHint       = 254 // the longest email address (RFC 5321)
)

var authorizeParamLimits = map[string]int{"state": maxStateNonce, "nonce": maxStateNonce, "login_hint": maxLoginHint}

// edge wraps every route: one client address per request, bounded bodies,
// Retry-After on every 503.
func (b *Broker) edge(next http.Handler) http.Handler {
	return b.withClientIP(limitBody(retryAfter503(next)))
}

// retryAfter503 gives every 503 usher answers a Retry-After when its handler
// set none. A 503 always means the store (or the signing key) is out for a
// moment, e.g. during a Redis Sentinel failover: clients and load balancers
// should retry, not give up. The OIDC library writes the token endpoint's
// 503 itself, and the pages' 503 had none.
func retryAfter503(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(&retryAfterWriter{ResponseWriter: w}, r)
	})
}

// storeDown tells a store failure from a record that is missing (or an ID
// that cannot exist): a person whose sign-in is stored but unreachable for a
// moment should see "temporarily unavailable" (503), not "sign-in expired".
func storeDown(err error) bool {
	return err != nil && !errors.Is(err, sessions.ErrNotFound) && !errors.Is(err, errs.ErrInvalid)
}

type retryAfterWriter struct{ http.ResponseWriter }

func (w *retryAfterWriter) WriteHeader(code int) {
	if code == http.StatusServiceUnavailable && w.Header().Get("Retry-After") == "" {
		w.Header().Set("Retry-After", "2")
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *retryAfterWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// limitBody refuses a body announced as too large before reading it, and
// cuts off one that grows too large while being read (chunked).
func limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > maxRequestBody {
			if strings.HasPrefix(r.URL.Path, "/api/") { // the admin API answers problems (broker/admin/openapi.json)
				admin.WriteProblem(w, http.StatusRequestEntityTooLarge, "too-large", "Request body too large",
					fmt.Sprintf("The request body must be at most %d bytes.", maxRequestBody))
				return
			}
			http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = http.MaxBytesReader(w, r.Body, maxRequestBody)
		}
		next.ServeHTTP(w, r)
	})
}

// authorizeWithinLimits answers an /authorize request whose parameters are
// too large (invalid_request, on a page: echoing an oversized state to the
// client would only move the problem), and rate-limits a full authorize
// request that carries an invitation as /invite/ is. r.Form must be parsed.
func (b *Broker) authorizeWithinLimits(w http.ResponseWriter, r *http.Request) bool {
	if msg := authorizeParamsProblem(r); msg != "" {
		b.renderPage(w, r, http.StatusBadRequest, page{Title: "Invalid sign-in request",
			Message: "The application sent a sign-in request usher cannot accept (invalid_request: " + msg + ")."})
		return false
	}
	isLink := r.Form.Get("response_type") == "" && r.Form.Get("redirect_uri") == ""
	if r.Form.Get("invitation") == "" || isLink {
		return true // the invitation-link form is limited by limitInvites
	}
	return b.inviteAllowed(w, r)
}

func authorizeParamsProblem(r *http.Request) string {
	if len(r.Form) > maxAuthorizeParams {
		return fmt.Sprintf("more than %d parameters", maxAuthorizeParams)
	}
	total := 0
	for k, vs := range r.Form {
		limit, ok := authorizeParamLimits[k]
		if !ok {
			limit = maxAuthorizeParam
		}
		total += len(k)
		for _, v := range vs {
			total += len(v)
			if len(v) > limit {
				return fmt.Sprintf("parameter %q is longer than %d bytes", clip(k, 40), limit)
			}
		}
	}
	if total > maxAuthorizeTotal {
		return fmt.Sprintf("the parameters exceed %d bytes", maxAuthorizeTotal)
	}
	return ""
}

// allowAuthRequest limits how many auth requests one client address may
// store. It runs where a request is stored, so requests answered at once
// (from usher's session) do not count.
func (b *Broker) allowAuthRequest(ctx context.Context) error {
	ip := clientIPFrom(ctx)
	if ip == "" {
		return nil
	}
	if ok, _ := b.limits.authorize.allow(ctx, ip); ok {
		return nil
	}
	b.metrics.rateLimited.WithLabelValues("authorize").Inc()
	return &oidc.Error{ErrorType: "temporarily_unavailable",
		Description: "too many sign-in requests from this network; try again in a minute"}
}
