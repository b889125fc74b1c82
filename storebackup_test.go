package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/client"
	"github.com/usher-oidc/usher/config"
	boltstore "github.com/usher-oidc/usher/store/bolt"
)

// The operator's backup client of these tests: client_credentials only,
// scope store:backup and nothing else.
const (
	backupClientID     = "ops-backup"
	backupClientSecret = "ops-backup-secret-0123456789abcdef"
)

// startBackupDev is startInviteDev with the backup client configured.
func startBackupDev(t *testing.T) *app.Dev {
	t.Helper()
	d, err := app.StartDev(context.Background(), app.DevOptions{
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Configure: func(c *config.Config) {
			c.Clients = append(c.Clients, config.Client{ID: backupClientID, Type: config.ClientConfidential, Secret: backupClientSecret,
				GrantTypes: []string{config.GrantClientCredentials}, Scopes: []string{client.ScopeStoreBackup}})
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

func usherBackup(t *testing.T, d *app.Dev, id, secret string, args ...string) cliResult {
	t.Helper()
	return runCLI(t, append([]string{"store", "backup", "--issuer", d.IssuerURL, "--client-id", id, "--client-secret", secret}, args...)...)
}

// TestStoreBackupCommand: `usher store backup` takes a snapshot of the
// running usher's bbolt store through the admin API; the file opens as a
// store holding the invitation created before; an existing file is kept
// unless --force; the audit log records the backup; a client without
// store:backup gets nothing, and the command says why in words.
func TestStoreBackupCommand(t *testing.T) {
	t.Parallel()
	d := startBackupDev(t)
	ctx := t.Context()
	funnel := &client.Client{Issuer: d.IssuerURL, ClientID: app.DevFunnelClientID, ClientSecret: app.DevFunnelSecret,
		Scope: client.ScopeWrite + " " + client.ScopeRead}
	no := false
	inv, _, err := funnel.CreateInvitation(ctx, client.CreateRequest{Email: "kept@example.com", Roles: []string{"editor"}, SendEmail: &no}, "")
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	out := filepath.Join(dir, "b.db")
	r := usherBackup(t, d, backupClientID, backupClientSecret, "--out", out)
	mustSucceed(t, r)
	fi, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"backup written: " + out, humanBytes(fi.Size()), "1 invitation)", "flow file"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("files beside the backup: %v (a temporary file left behind?)", entries)
	}
	st, err := boltstore.Open(out, boltstore.Options{SweepInterval: -1})
	if err != nil {
		t.Fatalf("the backup does not open as a store: %v", err)
	}
	got, err := st.GetInvitation(ctx, inv.ID)
	st.Close()
	if err != nil || got.Email != "kept@example.com" {
		t.Fatalf("invitation %s in the backup: %+v, %v", inv.ID, got, err)
	}

	// An existing file is kept, unless --force.
	before, _ := os.ReadFile(out)
	r = usherBackup(t, d, backupClientID, backupClientSecret, "--out", out)
	if r.code != 1 || !strings.Contains(r.stderr, "already exists") || !strings.Contains(r.stderr, "--force") {
		t.Errorf("backup over an existing file: %s", r)
	}
	if after, _ := os.ReadFile(out); string(after) != string(before) {
		t.Error("the refused backup changed the existing file")
	}
	mustSucceed(t, usherBackup(t, d, backupClientID, backupClientSecret, "--out", out, "--force"))

	// The audit log names the client and the byte count of each backup.
	recs, err := funnel.Do(ctx, http.MethodGet, "/api/audit?action=store.backup", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var audit struct {
		Records []struct {
			Actor  string            `json:"actor"`
			Detail map[string]string `json:"detail"`
		} `json:"records"`
	}
	_ = json.Unmarshal(recs.Body, &audit)
	if len(audit.Records) != 2 || audit.Records[0].Actor != "client:"+backupClientID || audit.Records[0].Detail["bytes"] == "" {
		t.Errorf("audit records of the backups: %s", recs.Body)
	}

	// A client without store:backup: the API answers 403 to its token…
	tok, err := funnel.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, d.IssuerURL+"/api/store/backup", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get("Content-Type") != "application/problem+json" || !strings.Contains(string(body), "store:backup") {
		t.Errorf("backup with an invitations token: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	// …and the command, which asks for the scope, says so and writes nothing.
	refused := filepath.Join(dir, "refused.db")
	r = usherBackup(t, d, app.DevFunnelClientID, app.DevFunnelSecret, "--out", refused)
	if r.code != 1 {
		t.Fatalf("backup by the funnel client: %s", r)
	}
	for _, want := range []string{`client "funnel" may not take backups`, "store:backup", "client_credentials", "was not written"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("refusal lacks %q: %s", want, r)
		}
	}
	if _, err := os.Stat(refused); !os.IsNotExist(err) {
		t.Errorf("a refused backup left %s: %v", refused, err)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, ".*partial")); len(leftovers) != 0 {
		t.Errorf("temporary files left behind: %v", leftovers)
	}
}

// TestStoreBackupUsage: --out is required, and a client must be named.
func TestStoreBackupUsage(t *testing.T) {
	t.Setenv("USHER_CLIENT_ID", "")
	t.Setenv("USHER_CLIENT_SECRET", "")
	if r := runCLI(t, "store", "backup"); r.code != 2 || !strings.Contains(r.stderr, "--out FILE is required") {
		t.Errorf("without --out: %s", r)
	}
	if r := runCLI(t, "store", "backup", "--out", filepath.Join(t.TempDir(), "b.db")); r.code != 2 || !strings.Contains(r.stderr, "a client is required") {
		t.Errorf("without a client: %s", r)
	}
	if r := runCLI(t, "store", "help"); r.code != 0 || !strings.Contains(r.stdout, "store:backup") {
		t.Errorf("store help: %s", r)
	}
}
