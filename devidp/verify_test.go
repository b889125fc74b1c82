package devidp_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/auth0/go-auth0/management"
	"golang.org/x/oauth2"

	"github.com/usher-oidc/usher/devidp"
)

// A database sign-up is unverified (ID token and Management API) until the
// link of its verification mail is followed, in any browser, once
// (https://auth0.com/docs/manage-users/user-accounts/verify-emails).
func TestSignUpVerifiedOnlyThroughTheMail(t *testing.T) {
	t.Parallel()
	srv, domain := startTenant(t)
	p := &idp{srv: srv, base: "http://" + domain}
	b := newBrowser(t, p)
	f, pg := b.authorize(url.Values{"screen_hint": {"signup"}})
	res := b.post("/u/signup", url.Values{"state": {requestID(t, pg)}, "email": {"Ada2@Example.com"}, "password": {"pw"}, "name": {"Ada"}})
	if c := mustVerify(t, p.exchange(t, f, callback(t, res), oauth2.AuthStyleInHeader), f); c.EmailVerified == nil || *c.EmailVerified {
		t.Fatalf("a fresh sign-up's ID token: email_verified %v, want false", c.EmailVerified)
	}
	sub, _ := srv.UserSub(devidp.ConnectionPassword, "ada2@example.com")
	api := newAPI(t, domain)
	verified := func() bool {
		u, err := api.User.Read(context.Background(), sub)
		if err != nil {
			t.Fatal(err)
		}
		return u.GetEmailVerified()
	}
	if verified() {
		t.Fatal("the Management API says verified before the mail was followed")
	}
	mails := srv.VerificationMails("ADA2@example.com")
	if len(mails) != 1 || mails[0].UserID != sub || !strings.HasPrefix(mails[0].Link, p.base+"/u/email-verification?ticket=") {
		t.Fatalf("verification mails: %+v", mails)
	}
	if page := newBrowser(t, p).get(p.base + "/u/verification-mails"); !strings.Contains(page.body, "ada2@example.com") {
		t.Fatalf("the outbox page does not list the mail: %s", page.body)
	}

	other := newBrowser(t, p) // verifying in another browser is fine
	steps := []struct {
		name       string
		link       string
		wantStatus int
	}{
		{"forged ticket", p.base + "/u/email-verification?ticket=forged", http.StatusBadRequest},
		{"the mail's link", mails[0].Link, http.StatusOK},
		{"the link again", mails[0].Link, http.StatusBadRequest},
	}
	for _, s := range steps {
		if got := other.get(s.link); got.status != s.wantStatus {
			t.Fatalf("%s: %d, want %d: %s", s.name, got.status, s.wantStatus, got.body)
		}
		if s.wantStatus == http.StatusBadRequest && s.name == "forged ticket" && verified() {
			t.Fatal("a forged ticket verified the email")
		}
	}
	if !verified() {
		t.Fatal("the Management API still says unverified after the link was followed")
	}
	f, tk := passwordLogin(t, p, newBrowser(t, p), "ada2@example.com", "pw")
	if c := mustVerify(t, tk, f); c.EmailVerified == nil || !*c.EmailVerified {
		t.Fatalf("ID token after verification: email_verified %v, want true", c.EmailVerified)
	}
}

// POST /api/v2/jobs/verification-email sends a new mail and answers 201
// with a pending verification_email job
// (https://auth0.com/docs/api/management/v2/jobs/post-verification-email).
func TestManagementVerificationEmailJob(t *testing.T) {
	t.Parallel()
	srv, domain := startTenant(t, devidp.User{Email: "bob@example.com", Password: "pw"})
	sub, _ := srv.UserSub(devidp.ConnectionPassword, "bob@example.com")
	tok := goodToken(t, domain)
	cases := []struct {
		name       string
		body       map[string]any
		wantStatus int
		wantMails  int
	}{
		{"resend", map[string]any{"user_id": sub}, http.StatusCreated, 1},
		{"again", map[string]any{"user_id": sub, "client_id": clientID}, http.StatusCreated, 2},
		{"unknown user", map[string]any{"user_id": "auth0|nobody"}, http.StatusNotFound, 2},
		{"no user", map[string]any{}, http.StatusBadRequest, 2},
	}
	for _, c := range cases {
		var job map[string]any
		resp := call(t, http.MethodPost, "http://"+domain+"/api/v2/jobs/verification-email", tok, c.body, &job)
		if resp.StatusCode != c.wantStatus {
			t.Fatalf("%s: %d %v, want %d", c.name, resp.StatusCode, job, c.wantStatus)
		}
		if c.wantStatus == http.StatusCreated && (job["type"] != "verification_email" || job["status"] != "pending" ||
			!strings.HasPrefix(job["id"].(string), "job_") || job["created_at"] == nil) {
			t.Fatalf("%s: job %v", c.name, job)
		}
		if got := len(srv.VerificationMails("bob@example.com")); got != c.wantMails {
			t.Fatalf("%s: %d mails, want %d", c.name, got, c.wantMails)
		}
	}
	// go-auth0, as usher calls it.
	if err := newAPI(t, domain).Job.VerifyEmail(context.Background(), &management.Job{UserID: &sub}); err != nil {
		t.Fatalf("go-auth0 Job.VerifyEmail: %v", err)
	}
	// devidp keeps every unexpired ticket: an older mail's link works too.
	mails := srv.VerificationMails("bob@example.com")
	if got := newBrowser(t, &idp{srv: srv, base: "http://" + domain}).get(mails[0].Link); got.status != http.StatusOK {
		t.Fatalf("the first mail's link: %d", got.status)
	}
}
