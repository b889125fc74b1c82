package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
	for _, want := range []string{"line 2: claims.ſub: ", `folds onto "sub"`, "line 3: ann@example.com inv-", "imported 1 of 2; 1 failed"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("import output lacks %q\n%s", want, r)
		}
	}
	if list := listJSON(t, d); len(list) != 1 || list[0].Email != "ann@example.com" {
		t.Errorf("after import: %+v", list)
	}
}
