package admin

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/usher-oidc/usher/grants"
	boltstore "github.com/usher-oidc/usher/store/bolt"
)

// backupAPI is testAPI with the bolt store's Backup and one more token,
// "backup", of the client "ops" holding only store:backup.
func backupAPI(t *testing.T) (*API, *boltstore.Store) {
	t.Helper()
	h, store := testAPI(t)
	bs := store.(*boltstore.Store)
	h.Backup = bs.Backup
	auth := h.Authenticate
	h.Authenticate = func(ctx context.Context, token string) (Caller, error) {
		if token == "backup" {
			return Caller{ClientID: "ops", Subject: "ops", Scopes: []string{scopeStoreBackup}}, nil
		}
		return auth(ctx, token)
	}
	return h, bs
}

func getBackup(h http.Handler, token string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, "/api/store/backup", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// TestAPIStoreBackup: with store:backup the answer is the bbolt file, as an
// attachment that is never cached, which opens as a store holding what was
// written; the audit log records who took it and how many bytes.
func TestAPIStoreBackup(t *testing.T) {
	h, store := backupAPI(t)
	mux := mounted(h)
	a := call(t, mux, "POST", "/api/invitations", "write", `{"email":"kept@example.com","roles":["editor"],"send_email":false}`)
	if a.status != http.StatusCreated {
		t.Fatalf("create: %d %v", a.status, a.body)
	}
	id := a.body["id"].(string)

	rec := getBackup(mux, "backup")
	if rec.Code != http.StatusOK {
		t.Fatalf("backup: %d %s", rec.Code, rec.Body)
	}
	wantName := `attachment; filename="usher-` + h.Now().UTC().Format("20060102T150405Z") + `.db"`
	for k, want := range map[string]string{"Content-Type": "application/octet-stream", "Content-Disposition": wantName,
		"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"} {
		if got := rec.Header().Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	path := filepath.Join(t.TempDir(), "b.db")
	if err := os.WriteFile(path, rec.Body.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if n, err := boltstore.CheckBackup(path); err != nil || n != 1 {
		t.Fatalf("CheckBackup: %d invitations, %v", n, err)
	}
	restored, err := boltstore.Open(path, boltstore.Options{SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer restored.Close()
	if inv, err := restored.GetInvitation(t.Context(), id); err != nil || inv.Email != "kept@example.com" {
		t.Fatalf("invitation in the backup: %+v, %v", inv, err)
	}

	recs, _, err := store.ListAudit(t.Context(), grants.AuditFilter{Action: "store.backup"})
	if err != nil || len(recs) != 1 {
		t.Fatalf("audit: %v, %v", recs, err)
	}
	if r := recs[0]; r.Actor != "client:ops" || r.Detail["bytes"] != strconv.Itoa(rec.Body.Len()) || !strings.HasPrefix(r.Target, "usher-") {
		t.Errorf("audit record: %+v (body %d bytes)", r, rec.Body.Len())
	}
}

// TestAPIStoreBackupNeedsItsScope: invitations:write is not enough, and
// nothing is recorded.
func TestAPIStoreBackupNeedsItsScope(t *testing.T) {
	h, store := backupAPI(t)
	a := call(t, mounted(h), "GET", "/api/store/backup", "write", "")
	wantProblem(t, a, http.StatusForbidden, "insufficient-scope")
	if got := a.header.Get("WWW-Authenticate"); !strings.Contains(got, `scope="store:backup"`) {
		t.Errorf("WWW-Authenticate = %q", got)
	}
	if !strings.Contains(a.body["detail"].(string), `"store:backup"`) {
		t.Errorf("detail = %v", a.body["detail"])
	}
	wantProblem(t, call(t, mounted(h), "GET", "/api/store/backup", "", ""), http.StatusUnauthorized, "unauthorized")
	if recs, _, _ := store.ListAudit(t.Context(), grants.AuditFilter{Action: "store.backup"}); len(recs) != 0 {
		t.Errorf("audit records for refused backups: %v", recs)
	}
}

// TestAPIStoreBackupNotOnRedis: without a backup function (a Redis store)
// the answer is 501 and says what to do instead.
func TestAPIStoreBackupNotOnRedis(t *testing.T) {
	h, _ := backupAPI(t)
	h.Backup = nil
	a := call(t, mounted(h), "GET", "/api/store/backup", "backup", "")
	wantProblem(t, a, http.StatusNotImplemented, "backup-not-supported")
	detail, _ := a.body["detail"].(string)
	for _, want := range []string{"Redis", "RDB", "AOF", "usher store migrate --from redis://… --to bolt:FILE"} {
		if !strings.Contains(detail, want) {
			t.Errorf("detail lacks %q: %s", want, detail)
		}
	}
}

// TestAPIStoreBackupFailures: a failure before the first byte is a 503
// problem; one after it cuts the connection, so the caller never takes the
// bytes so far for a whole backup.
func TestAPIStoreBackupFailures(t *testing.T) {
	h, _ := backupAPI(t)
	h.Backup = func(io.Writer) (int64, error) { return 0, errors.New("disk gone") }
	rec := getBackup(mounted(h), "backup")
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Content-Type") != "application/problem+json" {
		t.Fatalf("failure before the first byte: %d %s %s", rec.Code, rec.Header().Get("Content-Type"), rec.Body)
	}

	h.Backup = func(w io.Writer) (int64, error) {
		n, _ := w.Write(make([]byte, 4096))
		return int64(n), errors.New("disk gone half way")
	}
	srv := httptest.NewServer(mounted(h))
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/api/store/backup", nil)
	req.Header.Set("Authorization", "Bearer backup")
	resp, err := srv.Client().Do(req)
	if err != nil {
		return // cut before the headers came: also not a backup
	}
	defer resp.Body.Close()
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Fatal("a backup cut off half way read as a complete answer")
	}
}
