package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/usher-oidc/usher/grants"
)

// Issue 10 §1: a CSV row whose claims fold onto a registered claim is
// refused by the server, and the import says which claim and why.
func TestInviteImportRefusesFoldedClaimNames(t *testing.T) {
	t.Parallel()
	d := startInviteDev(t)
	csvPath := filepath.Join(t.TempDir(), "people.csv")
	content := "email,claims\n" +
		`eve@example.com,"{""ſub"":""usr-victim"",""crm_id"":""C-1""}"` + "\n" +
		`ann@example.com,"{""crm_id"":""C-2""}"` + "\n"
	if err := os.WriteFile(csvPath, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	r := usherInvite(t, d, "import", csvPath, "--no-email")
	if r.code != 1 {
		t.Fatalf("import with a folding claim name: want exit 1, got %s", r)
	}
	for _, want := range []string{"line 2: claims.ſub: ", `folds onto the registered claim "sub"`, "line 3: ann@example.com inv-", "imported 1 of 2; 1 failed"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("import output lacks %q\n%s", want, r)
		}
	}
	if list := listJSON(t, d); len(list) != 1 || list[0].Email != "ann@example.com" {
		t.Errorf("after import: %+v", list)
	}
	// An invitation stored before the rule existed: kept, and found by
	// `usher invite list --unsafe-claims`.
	_, hash := grants.NewToken()
	now := time.Now()
	if _, err := d.App.Store.CreateInvitation(context.Background(), &grants.Invitation{
		ID: "inv-legacy-fold01", TokenHash: hash, Email: "old@example.com", EmailMatch: grants.MatchAny,
		Claims: map[string]any{"ſub": "usr-victim", "crm_id": "C-0"}, Status: grants.StatusPending, CreatedAt: now, ExpiresAt: now.Add(time.Hour),
	}); err != nil {
		t.Fatal(err)
	}
	r = usherInvite(t, d, "list", "--unsafe-claims")
	mustSucceed(t, r)
	if !strings.Contains(r.stdout, "inv-legacy-fold01") || !strings.Contains(r.stdout, "unsafe claims (kept, never served): ſub") || strings.Contains(r.stdout, "ann@example.com") {
		t.Errorf("invite list --unsafe-claims:\n%s", r)
	}
	if list := listJSON(t, d, "--unsafe-claims"); len(list) != 1 || list[0].ID != "inv-legacy-fold01" || strings.Join(list[0].UnsafeClaims, ",") != "ſub" {
		t.Errorf("invite list --unsafe-claims --json: %+v", list)
	}
}
