package devidp

// Email verification, as an Auth0 tenant does it
// (https://auth0.com/docs/manage-users/user-accounts/verify-emails): a
// database sign-up starts with email_verified false and gets a verification
// mail; the person follows its link (a single-use ticket, valid five days by
// default) and only from then on do ID tokens and the Management API say
// email_verified true. POST /api/v2/jobs/verification-email sends the mail
// again (https://auth0.com/docs/api/management/v2/jobs/post-verification-email).
//
// devidp sends no real mail: the mails go to an outbox in memory, which
// VerificationMails returns and GET /u/verification-mails lists (for
// `usher dev`).

import (
	"crypto/sha256"
	"encoding/hex"
	"html/template"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

const (
	verifyPath      = "/u/email-verification" // Auth0's ticket path
	verifyMailsPath = "/u/verification-mails"
	// verifyTicketLifetime is Auth0's default for the link of a
	// verification mail (url_lifetime_in_seconds 432000).
	verifyTicketLifetime = 5 * 24 * time.Hour
	maxVerificationMails = 1000
)

// VerificationMail is one verification mail devidp "sent".
type VerificationMail struct {
	To     string
	UserID string
	// Link verifies To once, within five days: GET it (any browser).
	Link string
	At   time.Time
}

type verifyTicket struct {
	sub     string
	expires time.Time
}

// verifications is the outbox and the open tickets.
type verifications struct {
	mu      sync.Mutex
	tickets map[string]verifyTicket // SHA-256 of the ticket → its user
	mails   []VerificationMail
}

// sendVerificationMail puts a mail with a fresh ticket for sub in the outbox.
func (s *Server) sendVerificationMail(sub string) (VerificationMail, bool) {
	u, ok := s.store.user(sub)
	if !ok || u.email == "" {
		return VerificationMail{}, false
	}
	ticket := hex.EncodeToString(randomBytes(24))
	m := VerificationMail{To: u.email, UserID: sub, At: time.Now(),
		Link: strings.TrimSuffix(s.issuer, "/") + verifyPath + "?ticket=" + ticket}
	v := &s.verify
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.tickets == nil {
		v.tickets = make(map[string]verifyTicket)
	}
	v.tickets[ticketKey(ticket)] = verifyTicket{sub: sub, expires: m.At.Add(verifyTicketLifetime)}
	if len(v.mails) >= maxVerificationMails {
		v.mails = slices.Delete(v.mails, 0, len(v.mails)/2)
	}
	v.mails = append(v.mails, m)
	s.log.Info("devidp: verification mail sent", "sub", sub)
	return m, true
}

func ticketKey(ticket string) string {
	sum := sha256.Sum256([]byte(ticket))
	return hex.EncodeToString(sum[:])
}

// VerificationMails returns the verification mails sent to email (any
// case; every mail when email is ""), oldest first.
func (s *Server) VerificationMails(email string) []VerificationMail {
	s.verify.mu.Lock()
	defer s.verify.mu.Unlock()
	var out []VerificationMail
	for _, m := range s.verify.mails {
		if email == "" || strings.EqualFold(m.To, strings.TrimSpace(email)) {
			out = append(out, m)
		}
	}
	return out
}

// verifyEmail is the mail's link: it spends the ticket and marks the
// user's email verified. A spent, unknown or expired ticket changes
// nothing (Auth0: "This URL can be used only once").
func (s *Server) verifyEmail(w http.ResponseWriter, r *http.Request) {
	key := ticketKey(r.URL.Query().Get("ticket"))
	s.verify.mu.Lock()
	t, ok := s.verify.tickets[key]
	delete(s.verify.tickets, key)
	s.verify.mu.Unlock()
	if !ok || time.Now().After(t.expires) {
		s.renderMessage(w, http.StatusBadRequest, "Link expired",
			"This verification link was already used or has expired. Ask for a new verification email.")
		return
	}
	s.store.mu.Lock()
	if u, ok := s.store.users[t.sub]; ok {
		u.emailVerified = true
	}
	s.store.mu.Unlock()
	s.mgmt.touch(t.sub, time.Now())
	s.log.Info("devidp: email verified", "sub", t.sub)
	s.renderMessage(w, http.StatusOK, "Email verified", "Your email address was verified. You can return to the application.")
}

// apiVerificationEmail is POST /api/v2/jobs/verification-email
// {"user_id", "client_id"?}: Auth0 answers 201 with a pending job of type
// verification_email
// (https://auth0.com/docs/api/management/v2/jobs/post-verification-email;
// the token needs update:users, checked by managementRoutes).
func (s *Server) apiVerificationEmail(w http.ResponseWriter, r *http.Request) {
	var body struct {
		UserID   string `json:"user_id"`
		ClientID string `json:"client_id"`
	}
	if !decodeAPIBody(w, r, &body) {
		return
	}
	if body.UserID == "" {
		writeAPIError(w, http.StatusBadRequest, "Payload validation error: 'Missing required property: user_id'.", "invalid_body")
		return
	}
	if _, ok := s.sendVerificationMail(body.UserID); !ok {
		writeAPIError(w, http.StatusNotFound, "The user does not exist.", "inexistent_user")
		return
	}
	writeJSON(w, http.StatusCreated, map[string]string{
		"type": "verification_email", "status": "pending",
		"created_at": auth0Time(time.Now()), "id": "job_" + hex.EncodeToString(randomBytes(8)),
	})
}

// verificationMailsPage lists the outbox for a person using `usher dev`.
func (s *Server) verificationMailsPage(w http.ResponseWriter, r *http.Request) {
	mails := s.VerificationMails("")
	slices.Reverse(mails) // newest first
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = verifyMailsTmpl.Execute(w, mails)
}

var verifyMailsTmpl = template.Must(template.New("mails").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>devidp verification mails</title></head><body>
<h1>Verification mails (devidp)</h1>
{{if not .}}<p>No verification mail was sent yet.</p>{{end}}
<ul>{{range .}}<li>{{.At.Format "15:04:05"}} to <strong>{{.To}}</strong>: <a class="verify-link" href="{{.Link}}">Verify your email</a></li>{{end}}</ul>
</body></html>`))

// touch records that sub's profile changed now (its updated_at).
func (m *management) touch(sub string, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seenLocked(sub, now)
	m.updated[sub] = now
}
