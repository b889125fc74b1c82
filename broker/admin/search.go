package admin

import (
	"net/http"
	"net/url"
	"time"
	"unicode/utf8"

	"github.com/usher-oidc/usher/grants"
)

// Invitation search, shared by GET /api/invitations and the admin page:
// prefixes (grants/search.go) and a creation-date window.

// maxPrefix bounds a search prefix: no email is longer (RFC 5321).
const maxPrefix = 254

// parseCreatedBound reads a created_since / created_until value: an RFC 3339
// instant, or a date (YYYY-MM-DD, UTC) that stands for the whole day — its
// start as a lower bound, the next day's start as the (exclusive) upper one,
// so "until 2026-12-01" includes December 1st.
func parseCreatedBound(v string, upper bool) (time.Time, bool) {
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, true
	}
	d, err := time.Parse(time.DateOnly, v)
	if err != nil {
		return time.Time{}, false
	}
	if upper {
		d = d.AddDate(0, 0, 1)
	}
	return d, true
}

// searchFilter fills f's prefix and creation-window filters from q, under
// the parameter names given (the API's and the page's differ), and returns
// the field errors of values it cannot use.
func searchFilter(f *grants.InvitationFilter, q url.Values, since, until string) []grants.FieldError {
	var errs []grants.FieldError
	for _, p := range []struct {
		name string
		dst  *string
	}{{"email_prefix", &f.EmailPrefix}, {"external_id_prefix", &f.ExternalIDPrefix}} {
		v := q.Get(p.name)
		if utf8.RuneCountInString(v) > maxPrefix || !utf8.ValidString(v) {
			errs = append(errs, grants.FieldError{Field: p.name, Message: "must be text of at most 254 characters"})
			continue
		}
		*p.dst = v
	}
	for _, b := range []struct {
		name  string
		upper bool
		dst   *time.Time
	}{{since, false, &f.CreatedSince}, {until, true, &f.CreatedUntil}} {
		v := q.Get(b.name)
		if v == "" {
			continue
		}
		t, ok := parseCreatedBound(v, b.upper)
		if !ok {
			errs = append(errs, grants.FieldError{Field: b.name, Message: "must be a date (2026-12-01) or an RFC 3339 time (2026-12-01T09:30:00Z)"})
			continue
		}
		*b.dst = t
	}
	if !f.CreatedSince.IsZero() && !f.CreatedUntil.IsZero() && !f.CreatedSince.Before(f.CreatedUntil) {
		errs = append(errs, grants.FieldError{Field: until, Message: "must be after " + since})
	}
	return errs
}

// apiSearchFilter is searchFilter for the API: a bad value answers 400
// problem+json naming every field at fault; ok is false then.
func apiSearchFilter(w http.ResponseWriter, f *grants.InvitationFilter, q url.Values) (ok bool) {
	errs := searchFilter(f, q, "created_since", "created_until")
	if len(errs) == 0 {
		return true
	}
	writeProblem(w, http.StatusBadRequest, "invalid-query", "Invalid search",
		"email_prefix and external_id_prefix take text of up to 254 characters; created_since and created_until a date (YYYY-MM-DD, a whole day in UTC) or an RFC 3339 time, since before until.",
		errs...)
	return false
}

// pageCreatedRange reads the admin page's from/to dates into f and returns
// them as typed (for the form and the pager's links); values it cannot use
// are dropped, with a notice saying so.
func pageCreatedRange(q url.Values, f *grants.InvitationFilter) (from, to, notice string) {
	from, to = clip(q.Get("from"), 40), clip(q.Get("to"), 40)
	dates := url.Values{"from": {from}, "to": {to}}
	var window grants.InvitationFilter
	if errs := searchFilter(&window, dates, "from", "to"); len(errs) > 0 {
		return "", "", "The date filter was left out: " + errs[0].Field + " " + errs[0].Message + "."
	}
	f.CreatedSince, f.CreatedUntil = window.CreatedSince, window.CreatedUntil
	return from, to, ""
}
