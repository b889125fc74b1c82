package admin

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/usher-oidc/usher/client"
	"github.com/usher-oidc/usher/grants"
)

type timelineEntry struct {
	Type, Label, At, UserID, UserEmail, Connection, Reason string
	Details                                                []option // Value = key, Label = value
}

type detailPage struct {
	Inv               client.Invitation
	Link              string
	Claims, Metadata  string
	Timeline          []timelineEntry
	Created, Expires  string
	RedeemedAt        string
	RevokedAt         string
	DeclinedAt        string
	EmailStatus       string
	CanRevoke         bool
	CanResend         bool
	SendEmail         bool
	ClientName        string
	RedeemedUserEmail string
}

func (h *Page) adminInvitation(w http.ResponseWriter, r *http.Request, a *adminRequest) {
	ctx := r.Context()
	id := r.PathValue("id")
	inv, err := h.Store.GetInvitation(ctx, id)
	if h.loadFailed(w, r, a, err, "invitation", id) {
		return
	}
	fl := h.takeFlash(w, r, a.sess, inv.ID)
	v := h.view(inv)
	p := detailPage{
		Inv: v, Link: fl.Link, Claims: prettyJSON(v.Claims), Metadata: prettyJSON(v.Metadata),
		Created: fmtTime(inv.CreatedAt), Expires: fmtTime(inv.ExpiresAt), EmailStatus: emailStatusLabel(inv.EmailStatus),
		CanRevoke: v.Status == grants.StatusPending, CanResend: inv.Status == grants.StatusPending, SendEmail: inv.SendEmail,
	}
	if inv.RedeemedAt != nil {
		p.RedeemedAt = fmtTime(*inv.RedeemedAt)
	}
	if inv.RevokedAt != nil {
		p.RevokedAt = fmtTime(*inv.RevokedAt)
	}
	if inv.DeclinedAt != nil {
		p.DeclinedAt = fmtTime(*inv.DeclinedAt)
	}
	for _, c := range h.Clients {
		if c.ID == inv.ClientID && c.Name != "" {
			p.ClientName = c.Name
		}
	}
	if inv.RedeemedBy != "" {
		if u, err := h.Store.GetUser(ctx, inv.RedeemedBy); err == nil {
			p.RedeemedUserEmail = u.Email
		}
	}
	for _, e := range inv.Events {
		p.Timeline = append(p.Timeline, h.timelineEntry(r, inv, e))
	}
	h.render(w, r, http.StatusOK, "invitation", adminPage{Title: inv.Email, User: a.user, CSRF: a.csrf, Notice: fl.Notice, Page: p})
}

var eventLabels = map[string]string{
	"created":           "Created",
	"mailed":            "Email sent",
	"mail_failed":       "Email failed",
	"opened":            "Link opened",
	"redeemed":          "Redeemed",
	"redemption_failed": "Redemption failed",
	"revoked":           "Revoked",
	"declined":          "Declined by the invitee",
	"deferred":          "Put off (\"Not now\")",
	"resent":            "Resent with a new link",
	"expired":           "Expired",
	"mirror_queued":     "Queued for Auth0",
	"mirrored":          "Copied to Auth0",
	"mirror_failed":     "Copy to Auth0 failed",
}

// detailLabels are the timeline's detail keys in words; other keys are
// shown with their underscores as spaces.
var detailLabels = map[string]string{
	"email":     "Email",
	"roles":     "Roles",
	"claims":    "Claims kept as they were",
	"client_id": "Application",
	"actor":     "By",
	"error":     "Error",
	"ip":        "IP address",
}

func detailLabel(k string) string {
	if l, ok := detailLabels[k]; ok {
		return l
	}
	k = strings.ReplaceAll(k, "_", " ")
	if k == "" {
		return k
	}
	return strings.ToUpper(k[:1]) + k[1:]
}

func (h *Page) timelineEntry(r *http.Request, inv *grants.Invitation, e grants.Event) timelineEntry {
	t := timelineEntry{Type: e.Type, Label: eventLabels[e.Type], At: fmtTimeSeconds(e.At)}
	if t.Label == "" {
		t.Label = e.Type
	}
	d := e.Detail
	t.UserID = d["user_id"]
	t.Reason = d["reason"]
	t.Connection = d["connection"]
	if e.Type == "redeemed" {
		if t.UserID == "" {
			t.UserID = inv.RedeemedBy
		}
		if t.Connection == "" {
			t.Connection = inv.RedeemedConnection
		}
	}
	if e.Type == "redemption_failed" || e.Type == "declined" || e.Type == "deferred" {
		h.whoTried(r, &t, d)
	}
	keys := make([]string, 0, len(d))
	for k := range d {
		if k == "email" && t.UserEmail != "" {
			continue // shown with the user
		}
		if k != "user_id" && k != "reason" && k != "connection" && d[k] != "" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		t.Details = append(t.Details, option{Value: detailLabel(k), Label: d[k]})
	}
	return t
}

// whoTried fills in the email and connection of the user an event names
// when its detail does not carry them: the user's email, and the connection
// of their identities when they have only one (otherwise it is unknown).
func (h *Page) whoTried(r *http.Request, t *timelineEntry, d map[string]string) {
	t.UserEmail = d["email"]
	if t.UserID == "" || t.UserEmail != "" && t.Connection != "" {
		return
	}
	ctx := r.Context()
	if t.UserEmail == "" {
		if u, err := h.Store.GetUser(ctx, t.UserID); err == nil {
			t.UserEmail = u.Email
		}
	}
	if t.Connection == "" {
		if ids, err := h.Store.Identities(ctx, t.UserID); err == nil {
			conns := map[string]bool{}
			for _, id := range ids {
				if id.Connection != "" {
					conns[id.Connection] = true
				}
			}
			if len(conns) == 1 {
				for c := range conns {
					t.Connection = c
				}
			}
		}
	}
}

func (h *Page) adminRevoke(w http.ResponseWriter, r *http.Request, a *adminRequest) {
	ctx := r.Context()
	id := r.PathValue("id")
	_, err := h.Invitations.Revoke(ctx, id, a.user.ID)
	if !h.invitationActionFailed(w, r, a, id, err) {
		h.Logger.InfoContext(ctx, "invitation revoked", "invitation_id", id, "admin_user_id", a.user.ID)
		h.setFlash(a.sess, adminFlash{Invitation: id, Notice: "Invitation revoked: its link no longer works."})
	}
	h.saveAndRedirect(w, r, a.sess, "/admin/invitations/"+url.PathEscape(id))
}

func (h *Page) adminResend(w http.ResponseWriter, r *http.Request, a *adminRequest) {
	ctx := r.Context()
	id := r.PathValue("id")
	inv, token, err := h.Invitations.Resend(ctx, id, a.user.ID)
	if !h.invitationActionFailed(w, r, a, id, err) {
		h.Logger.InfoContext(ctx, "invitation resent", "invitation_id", id, "admin_user_id", a.user.ID)
		fl := adminFlash{Invitation: id}
		if inv.SendEmail {
			fl.Notice = "A new invitation email is on its way to " + inv.Email + "; the previous link no longer works."
		} else {
			fl.Link = h.Link(inv, token)
			fl.Notice = "New link minted; the previous one no longer works. Copy it now: it cannot be shown again."
		}
		h.setFlash(a.sess, fl)
	}
	h.saveAndRedirect(w, r, a.sess, "/admin/invitations/"+url.PathEscape(id))
}

// invitationActionFailed turns a revoke/resend refusal into a notice on the
// detail page. It answers itself (and returns true) only when there is no
// detail page to go back to or the store failed.
func (h *Page) invitationActionFailed(w http.ResponseWriter, r *http.Request, a *adminRequest, id string, err error) bool {
	var notice string
	switch {
	case err == nil:
		return false
	case errors.Is(err, grants.ErrInvitationRedeemed):
		notice = "This invitation was already redeemed, so it cannot be revoked or resent. To take back what it granted, change the user's grant."
	case errors.Is(err, grants.ErrInvitationRevoked):
		notice = "This invitation was revoked; create a new one instead."
	case errors.Is(err, grants.ErrInvitationDeclined):
		notice = "The invitee declined this invitation; create a new one if they should still get it."
	case errors.Is(err, grants.ErrNotFound):
		notice = "No invitation has this id."
	default:
		h.Logger.ErrorContext(r.Context(), "admin page: updating the invitation", "invitation_id", id, "err", err)
		notice = "usher could not reach its store; nothing was changed. Try again in a moment."
	}
	h.setFlash(a.sess, adminFlash{Invitation: id, Notice: notice})
	return true
}
