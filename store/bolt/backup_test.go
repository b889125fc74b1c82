package bolt_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/sessions"
	boltstore "github.com/usher-oidc/usher/store/bolt"
	"github.com/usher-oidc/usher/store/conformance"
)

// TestBackupRestores: a backup of a store in use, written while other
// writes go on, opens as a store that holds the data written before it, and
// CheckBackup accepts it; the flow file's records (auth requests) are not in it.
func TestBackupRestores(t *testing.T) {
	ctx := t.Context()
	clock := conformance.NewClock(time.Now())
	dir := t.TempDir()
	s := open(t, filepath.Join(dir, "usher.db"), clock.Now)
	now := clock.Now()
	if _, err := s.CreateInvitation(ctx, &grants.Invitation{ID: "inv-1", TokenHash: "h1", Email: "a@example.com", ExternalID: "ext-1", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateRefreshToken(ctx, &sessions.RefreshToken{Hash: "rt", FamilyID: "fam", ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateAuthRequest(ctx, &sessions.AuthRequest{ID: "ar", ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}

	// Writes going on during the backup neither block it nor tear it.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_ = s.CreateRefreshToken(ctx, &sessions.RefreshToken{Hash: fmt.Sprintf("busy-%d", i), FamilyID: "f", ExpiresAt: now.Add(time.Hour)})
		}
	})
	var buf bytes.Buffer
	n, err := s.Backup(&buf)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(buf.Len()) || n == 0 {
		t.Fatalf("Backup reported %d bytes, wrote %d", n, buf.Len())
	}

	path := filepath.Join(dir, "restored.db")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if invs, err := boltstore.CheckBackup(path); err != nil || invs != 1 {
		t.Fatalf("CheckBackup: %d invitations, %v; want 1, nil", invs, err)
	}
	r := open(t, path, clock.Now)
	inv, err := r.GetInvitationByTokenHash(ctx, "h1")
	if err != nil || inv.ID != "inv-1" || inv.Email != "a@example.com" {
		t.Fatalf("invitation in the restored store: %+v, %v", inv, err)
	}
	if list, _, err := r.ListInvitations(ctx, grants.InvitationFilter{ExternalID: "ext-1"}, now); err != nil || len(list) != 1 {
		t.Fatalf("external_id index in the restored store: %v, %v", list, err)
	}
	if _, err := r.GetRefreshToken(ctx, "fam", "rt"); err != nil {
		t.Fatalf("refresh token in the restored store: %v", err)
	}
	if _, err := r.GetAuthRequest(ctx, "ar"); err == nil {
		t.Error("the restored store holds an auth request: the flow file is not meant to be in the backup")
	}
}

func TestCheckBackupRefuses(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.db")
	if err := os.WriteFile(junk, bytes.Repeat([]byte("x"), 8192), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := boltstore.CheckBackup(junk); !errors.Is(err, boltstore.ErrNotABackup) {
		t.Errorf("CheckBackup(junk) = %v, want ErrNotABackup", err)
	}
	if _, err := boltstore.CheckBackup(filepath.Join(dir, "absent.db")); err == nil {
		t.Error("CheckBackup of a missing file succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, "absent.db")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("CheckBackup created the missing file: %v", err)
	}
}
