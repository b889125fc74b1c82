package e2e

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/internal/testkit"
)

// syncBuffer is a log sink several goroutines write to.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A full invitation run, logged at debug level (usher's logger and the OIDC
// library's default logger): no token, code, secret or password appears in
// the logs, and /metrics exposes the series operators need.
// Not parallel: it captures the process-wide default logger.
func TestLogsHoldNoSecretsAndMetricsExposed(t *testing.T) {
	logs := &syncBuffer{}
	logger := app.NewLogger(logs, "json", "debug")
	prev := slog.Default()
	slog.SetDefault(logger)
	defer slog.SetDefault(prev)

	d := startDev(t, app.DevOptions{Logger: logger})
	api := funnelToken(t, d, "invitations:write invitations:read")
	inv := invite(t, d, api, map[string]any{"email": "quiet@example.com", "roles": []string{"customer"}, "claims": map[string]any{"crm_id": "C-9"}})
	link := inv["url"].(string)
	// Wait for the mail (dev outbox) so the mailer's logs are in.
	if !testkit.Within(10*time.Second, func() bool { return len(d.Outbox.Messages()) > 0 }) {
		t.Fatal("no mail in the dev outbox within 10s: the mailer's logs would be missing")
	}
	a := newAgent(t, d.SPAURL)
	a.followInvite(link)
	u, verifier, _ := authorizeURL(d, url.Values{"invitation": {tokenOf(link)}})
	resp, body := a.get(u)
	password := "a-very-secret-password-42"
	resp, body = a.devidpForm(resp, body, "signup", url.Values{"email": {"quiet@example.com"}, "password": {password}, "name": {"Q"}})
	resp, body = a.answerAccept(resp, body, "accept")
	cb := a.callbackOf(resp, body)
	tr := exchangeCode(t, d, cb.Get("code"), verifier)
	tr2 := refresh(t, d, tr.RefreshToken)
	if tr2.AccessToken == "" {
		t.Fatalf("refresh: %+v", tr2)
	}
	userinfoStatus(t, d, tr2.AccessToken)
	// A replayed code and a reused refresh token make usher log warnings.
	exchangeCode(t, d, cb.Get("code"), verifier)
	refresh(t, d, tr.RefreshToken)

	secrets := map[string]string{
		"invitation token":        tokenOf(link),
		"authorization code":      cb.Get("code"),
		"access token":            tr.AccessToken,
		"refresh token":           tr.RefreshToken,
		"rotated refresh token":   tr2.RefreshToken,
		"ID token":                tr.IDToken,
		"funnel client secret":    app.DevFunnelSecret,
		"funnel access token":     api,
		"user password":           password,
		"token signature segment": tr.AccessToken[strings.LastIndex(tr.AccessToken, ".")+1:],
	}
	out := logs.String()
	if !strings.Contains(out, "invitation redeemed") {
		t.Fatalf("the capture missed usher's logs:\n%s", out)
	}
	for name, secret := range secrets {
		if secret != "" && strings.Contains(out, secret) {
			t.Errorf("the logs contain the %s", name)
		}
	}
	if !strings.Contains(out, `"request_id"`) {
		t.Errorf("log records carry no request_id")
	}

	resp2, err := http.Get(d.MetricsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	raw, _ := io.ReadAll(resp2.Body)
	metrics := string(raw)
	for _, series := range []string{
		`usher_logins_total{connection="Username-Password-Authentication",outcome="sign_up"} 1`,
		`usher_invitations_created_total 1`,
		`usher_invitation_redemptions_total{result="redeemed"} 1`,
		`usher_invitation_redemption_seconds_count 1`,
		`usher_token_request_seconds_count{grant_type="refresh_token"}`,
		`usher_token_requests_total{grant_type="authorization_code",status="4xx"} 1`,
		`usher_upstream_request_seconds_count{call="token"}`,
		`usher_mail_queue_depth 0`,
		`usher_webhook_queue_depth`,
		`usher_auth0_mirror_queue_depth`,
	} {
		if !strings.Contains(metrics, series) {
			t.Errorf("/metrics lacks %s", series)
		}
	}
	for name, secret := range secrets {
		if secret != "" && strings.Contains(metrics, secret) {
			t.Errorf("/metrics contains the %s", name)
		}
	}
}
