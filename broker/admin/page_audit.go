package admin

import (
	"errors"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/usher-oidc/usher/grants"
	storeerrs "github.com/usher-oidc/usher/store/errs"
)

// The audit log view: /admin/audit?action=&actor=&target=&since=&until=
// (dates, UTC, until inclusive), newest first, paged by the store's cursor.

const auditDateLayout = "2006-01-02"

type auditRow struct {
	At, Action, Actor, Target, Detail string
	TargetURL                         string
}

type auditPage struct {
	Action, Actor, Target, Since, Until string
	Errors                              map[string][]string
	Rows                                []auditRow
	pager
	Filtered bool
}

func (h *Page) adminAudit(w http.ResponseWriter, r *http.Request, a *adminRequest) {
	q := r.URL.Query()
	p := auditPage{Action: strings.TrimSpace(q.Get("action")), Actor: strings.TrimSpace(q.Get("actor")),
		Target: strings.TrimSpace(q.Get("target")), Since: q.Get("since"), Until: q.Get("until")}
	f := grants.AuditFilter{Action: p.Action, Actor: p.Actor, Target: p.Target, Limit: adminPageSize, Cursor: q.Get("cursor")}
	for _, d := range []struct {
		name, v string
		dst     *time.Time
		add     int
	}{{"since", p.Since, &f.Since, 0}, {"until", p.Until, &f.Until, 1}} {
		if d.v == "" {
			continue
		}
		t, err := time.Parse(auditDateLayout, d.v)
		if err != nil {
			p.Errors = map[string][]string{d.name: {"Give a date as YYYY-MM-DD."}}
			continue
		}
		*d.dst = t.AddDate(0, 0, d.add) // until the end of that day
	}
	p.Filtered = p.Action != "" || p.Actor != "" || p.Target != "" || p.Since != "" || p.Until != ""
	notice := ""
	recs, next, err := h.Store.ListAudit(r.Context(), f)
	if errors.Is(err, storeerrs.ErrBadCursor) {
		f.Cursor, notice = "", "That page link is no longer valid; showing the first page."
		recs, next, err = h.Store.ListAudit(r.Context(), f)
	}
	if err != nil {
		h.adminUnavailable(w, r, "reading the audit log", err)
		return
	}
	for _, rec := range recs {
		p.Rows = append(p.Rows, auditRow{At: fmtTimeSeconds(rec.At), Action: rec.Action, Actor: rec.Actor,
			Target: rec.Target, Detail: auditDetail(rec.Detail), TargetURL: h.auditTargetURL(rec)})
	}
	p.pager = h.pages("/admin/audit", [][2]string{{"action", p.Action}, {"actor", p.Actor}, {"target", p.Target}, {"since", p.Since}, {"until", p.Until}}, next, f.Cursor)
	h.render(w, r, http.StatusOK, "audit", adminPage{Title: "Audit log", User: a.user, CSRF: a.csrf, Notice: notice, Page: p})
}

// auditTargetURL links a record's target to its page when it has one.
func (h *Page) auditTargetURL(rec grants.AuditRecord) string {
	switch {
	case rec.Target == "":
		return ""
	case strings.HasPrefix(rec.Action, "invitation."):
		return h.url("/admin/invitations/" + url.PathEscape(rec.Target))
	case strings.HasPrefix(rec.Action, "grant.") || rec.Action == grants.EventUserSignedOutEverywhere:
		return h.url("/admin/users/" + url.PathEscape(rec.Target))
	}
	return ""
}

func auditDetail(d map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(d)) {
		parts = append(parts, strings.ReplaceAll(k, "_", " ")+": "+d[k])
	}
	return strings.Join(parts, "; ")
}
