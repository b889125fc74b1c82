package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
	boltstore "github.com/usher-oidc/usher/store/bolt"
)

// The operator's backup client: client_credentials only, scope store:backup.
const (
	backupClientID     = "ops-backup"
	backupClientSecret = "ops-backup-secret-0123456789abcdef"
)

func withBackupClient(c *config.Config) {
	c.Clients = append(c.Clients, config.Client{ID: backupClientID, Type: config.ClientConfidential, Secret: backupClientSecret,
		GrantTypes: []string{"client_credentials"}, Scopes: []string{"store:backup"}})
}

// TestOpenAPIStoreBackup: GET /api/store/backup answers as the contract
// says (each call below is validated against it): the bbolt file with
// store:backup, which opens as a usher database holding the invitation; a
// 403 problem for a token without the scope; a 401 problem without a token.
func TestOpenAPIStoreBackup(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{Configure: withBackupClient})
	inv := invite(t, d, funnelToken(t, d, "invitations:write"), map[string]any{"email": "backup@example.com", "send_email": false})

	res := apiCall(t, d, http.MethodGet, "/api/store/backup", clientToken(t, d, backupClientID, backupClientSecret, "store:backup"), nil)
	if res.status != http.StatusOK || res.header.Get("Content-Type") != "application/octet-stream" ||
		!strings.HasPrefix(res.header.Get("Content-Disposition"), `attachment; filename="usher-`) || res.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("backup: %d %v", res.status, res.header)
	}
	path := filepath.Join(t.TempDir(), "b.db")
	if err := os.WriteFile(path, []byte(res.raw), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := boltstore.Open(path, boltstore.Options{SweepInterval: -1})
	if err != nil {
		t.Fatalf("the backup does not open as a store: %v", err)
	}
	defer st.Close()
	if got, err := st.GetInvitation(t.Context(), inv["id"].(string)); err != nil || got.Email != "backup@example.com" {
		t.Fatalf("invitation in the backup: %+v, %v", got, err)
	}

	res = apiCall(t, d, http.MethodGet, "/api/store/backup", funnelToken(t, d, "invitations:read invitations:write"), nil)
	if res.status != http.StatusForbidden || res.body["type"] != "https://usher.dev/problems/insufficient-scope" {
		t.Fatalf("backup with an invitations token: %d %s", res.status, res.raw)
	}
	if res := apiCall(t, d, http.MethodGet, "/api/store/backup", "", nil); res.status != http.StatusUnauthorized {
		t.Fatalf("backup without a token: %d %s", res.status, res.raw)
	}
}

// TestRedisStoreBackupNotImplemented: on Redis the backup endpoint answers
// 501 with what to do instead, as the contract says.
func TestRedisStoreBackupNotImplemented(t *testing.T) {
	t.Parallel()
	rp := newRedisProc(t)
	d := startDev(t, app.DevOptions{Configure: func(c *config.Config) {
		c.Store.Driver = "redis"
		c.Store.Redis.URL = "redis://" + rp.addr() + "/0"
		withBackupClient(c)
	}})
	res := apiCall(t, d, http.MethodGet, "/api/store/backup", clientToken(t, d, backupClientID, backupClientSecret, "store:backup"), nil)
	detail, _ := res.body["detail"].(string)
	if res.status != http.StatusNotImplemented || !strings.Contains(detail, "usher store migrate") || !strings.Contains(detail, "AOF") {
		t.Fatalf("backup on Redis: %d %s", res.status, res.raw)
	}
}
