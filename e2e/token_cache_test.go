package e2e

import (
	"net/http"
	"testing"

	"github.com/usher-oidc/usher/app"
)

// The admin API remembers a verified token's signature check for a minute;
// revoking the token still takes effect on the very next call.
func TestAdminAPIRevokedTokenRefusedAfterItWasVerified(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	api := funnelToken(t, d, "invitations:read")
	for range 2 { // verified, then answered from the cache
		if r := apiCall(t, d, http.MethodGet, "/api/invitations?limit=1", api, nil); r.status != http.StatusOK {
			t.Fatalf("before revocation: %d %s", r.status, r.raw)
		}
	}
	if st := revoke(t, d, app.DevFunnelClientID, app.DevFunnelSecret, api, "access_token"); st != http.StatusOK {
		t.Fatalf("revoke: %d", st)
	}
	if r := apiCall(t, d, http.MethodGet, "/api/invitations?limit=1", api, nil); r.status != http.StatusUnauthorized {
		t.Fatalf("after revocation: %d %s, want 401", r.status, r.raw)
	}
}
