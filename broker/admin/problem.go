package admin

import (
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/usher-oidc/usher/client"
	"github.com/usher-oidc/usher/grants"
)

// ProblemTypeBase prefixes every problem type URI usher answers.
const ProblemTypeBase = client.ProblemTypeBase

// WriteProblem answers an RFC 9457 problem (application/problem+json) of
// type ProblemTypeBase+slug. The broker's own /api/ answers (body too large,
// rate limited) go through it too, so every admin API error has one shape.
func WriteProblem(w http.ResponseWriter, status int, slug, title, detail string, errs ...grants.FieldError) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(client.Problem{Type: ProblemTypeBase + slug, Title: title, Status: status, Detail: detail, Errors: errs})
}

func writeProblem(w http.ResponseWriter, status int, slug, title, detail string, errs ...grants.FieldError) {
	WriteProblem(w, status, slug, title, detail, errs...)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// WriteTooMany answers 429 with Retry-After (whole seconds, at least one).
func WriteTooMany(w http.ResponseWriter, retryAfter time.Duration) {
	secs := strconv.Itoa(int(math.Ceil(max(retryAfter, time.Second).Seconds())))
	w.Header().Set("Retry-After", secs)
	WriteProblem(w, http.StatusTooManyRequests, "rate-limited", "Too many requests",
		"This client sent too many requests; retry after "+secs+" seconds.")
}
