package auth0_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/usher-oidc/usher/broker/upstream"
	"github.com/usher-oidc/usher/broker/upstream/auth0"
	"github.com/usher-oidc/usher/devidp"
)

// With the Management API, the Auth0 upstream reads email_verified fresh
// and asks Auth0 to resend the verification mail; without it, it cannot.
func TestEmailVerificationThroughManagementAPI(t *testing.T) {
	t.Parallel()
	tenant, domain, _, m := startMirror(t, nil, nil)
	ctx := context.Background()
	sub, err := tenant.AddUser(devidp.User{Email: "unverified@example.com", Password: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	up, ok := auth0.New(auth0.Options{Issuer: "http://" + domain + "/", ClientID: "c", Mirror: m}).(upstream.EmailVerification)
	if !ok {
		t.Fatal("the Auth0 upstream with a Management API is no upstream.EmailVerification")
	}
	if _, ok := auth0.New(auth0.Options{Issuer: "http://" + domain + "/", ClientID: "c"}).(upstream.EmailVerification); ok {
		t.Fatal("the Auth0 upstream without a Management API claims upstream.EmailVerification")
	}
	steps := []struct {
		name   string
		act    func() error
		verify bool
	}{
		{"before", func() error { return nil }, false},
		{"resent", func() error { return up.ResendVerification(ctx, sub) }, false},
		{"link followed", func() error {
			mails := tenant.VerificationMails("unverified@example.com")
			if len(mails) != 1 {
				t.Fatalf("verification mails: %+v", mails)
			}
			resp, err := http.Get(mails[0].Link)
			if err == nil {
				resp.Body.Close()
			}
			return err
		}, true},
	}
	for _, s := range steps {
		if err := s.act(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if email, got, err := up.EmailVerified(ctx, sub); err != nil || got != s.verify || email != "unverified@example.com" {
			t.Fatalf("%s: EmailVerified = %q, %v, %v; want %v", s.name, email, got, err, s.verify)
		}
	}
	if _, _, err := up.EmailVerified(ctx, "auth0|nobody"); err == nil {
		t.Fatal("EmailVerified of an unknown user: no error")
	}
	if err := up.ResendVerification(ctx, "auth0|nobody"); err == nil {
		t.Fatal("ResendVerification to an unknown user: no error")
	}
}
