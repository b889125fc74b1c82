package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/client"
)

// startInviteDev starts a real usher (random ports, temporary store).
func startInviteDev(t *testing.T) *app.Dev {
	t.Helper()
	d, err := app.StartDev(context.Background(), app.DevOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

type cliResult struct {
	code           int
	stdout, stderr string
}

func (r cliResult) String() string {
	return "exit " + strconv.Itoa(r.code) + "\n--- stdout\n" + r.stdout + "--- stderr\n" + r.stderr
}

// usherInvite runs `usher invite SUB <connection flags> ARGS...` against d.
func usherInvite(t *testing.T, d *app.Dev, sub string, args ...string) cliResult {
	t.Helper()
	full := append([]string{"invite", sub, "--issuer", d.IssuerURL, "--client-id", app.DevFunnelClientID, "--client-secret", app.DevFunnelSecret}, args...)
	return runCLI(t, full...)
}

func runCLI(t *testing.T, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, args, &stdout, &stderr)
	return cliResult{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

func mustSucceed(t *testing.T, r cliResult) {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("want exit 0, got %s", r)
	}
}

var invIDRe = regexp.MustCompile(`\binv-[A-Za-z0-9_-]{16}\b`)

// listJSON lists invitations through the CLI's --json output.
func listJSON(t *testing.T, d *app.Dev, args ...string) []client.Invitation {
	t.Helper()
	r := usherInvite(t, d, "list", append([]string{"--json", "--all"}, args...)...)
	mustSucceed(t, r)
	var out struct {
		Invitations []client.Invitation `json:"invitations"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("list --json: %v\n%s", err, r.stdout)
	}
	return out.Invitations
}

func TestInviteLifecycle(t *testing.T) {
	t.Parallel()
	d := startInviteDev(t)

	// create, human-readable
	r := usherInvite(t, d, "create", "--email", "grace@example.com", "--role", "editor", "--role", "billing",
		"--claims", `{"crm_id":"C-1"}`, "--no-email", "--expires-in", "72h")
	mustSucceed(t, r)
	for _, want := range []string{"id ", "status", "pending", "expires_at", "email_status", "not_requested", "url", "/invite/inv_", "shown only now"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("create output lacks %q:\n%s", want, r.stdout)
		}
	}
	humanID := invIDRe.FindString(r.stdout)
	if humanID == "" {
		t.Fatalf("no invitation id in %s", r)
	}

	// create, --json: the API's JSON; --expires-in is sent as seconds
	r = usherInvite(t, d, "create", "--json", "--email", "linus@example.com", "--expires-in", "2h",
		"--metadata", `{"source":"cli-test"}`, "--email-match", "exact", "--inviter", "Test Suite", "--no-email")
	mustSucceed(t, r)
	var created struct {
		client.Invitation
		Metadata map[string]any `json:"metadata"`
		Inviter  string         `json:"inviter"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &created); err != nil {
		t.Fatalf("create --json: %v\n%s", err, r.stdout)
	}
	if created.ID == "" || created.Status != "pending" || !strings.Contains(created.URL, "/invite/inv_") {
		t.Errorf("create --json: %+v", created)
	}
	if got := created.ExpiresAt.Sub(created.CreatedAt); got != 2*time.Hour {
		t.Errorf("expires_in: lifetime %s, want 2h", got)
	}
	if created.Metadata["source"] != "cli-test" || created.Inviter != "Test Suite" || created.EmailMatch != "exact" {
		t.Errorf("create --json fields: %+v", created)
	}

	// list shows both pending, human and JSON
	r = usherInvite(t, d, "list", "--status", "pending")
	mustSucceed(t, r)
	for _, want := range []string{humanID, created.ID, "grace@example.com", "editor billing", "pending"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("list lacks %q:\n%s", want, r.stdout)
		}
	}
	if list := listJSON(t, d, "--email", "grace@example.com"); len(list) != 1 || list[0].ID != humanID || list[0].Claims["crm_id"] != "C-1" {
		t.Errorf("list --email grace: %+v", list)
	}
	if list := listJSON(t, d, "--email-prefix", "GRA"); len(list) != 1 || list[0].ID != humanID {
		t.Errorf("list --email-prefix GRA: %+v", list)
	}
	today := time.Now().UTC().Format(time.DateOnly)
	if list := listJSON(t, d, "--since", today, "--until", today); len(list) != 2 {
		t.Errorf("list --since/--until today: %d invitations, want 2", len(list))
	}
	if list := listJSON(t, d, "--until", "2000-01-01"); len(list) != 0 {
		t.Errorf("list --until 2000-01-01: %+v", list)
	}

	// revoke (flags after the ID) → list --status revoked shows it
	r = runCLI(t, "invite", "revoke", humanID, "--issuer", d.IssuerURL, "--client-id", app.DevFunnelClientID, "--client-secret", app.DevFunnelSecret)
	mustSucceed(t, r)
	if !strings.Contains(r.stdout, "revoked invitation "+humanID) {
		t.Errorf("revoke output: %s", r)
	}
	r = usherInvite(t, d, "list", "--status", "revoked")
	mustSucceed(t, r)
	if !strings.Contains(r.stdout, humanID) || strings.Contains(r.stdout, created.ID) {
		t.Errorf("list --status revoked:\n%s", r.stdout)
	}

	// resend of the revoked one fails clearly
	r = usherInvite(t, d, "resend", humanID)
	if r.code != 1 || !strings.Contains(r.stderr, "Invitation revoked") || !strings.Contains(r.stderr, "create a new one") {
		t.Errorf("resend revoked: %s", r)
	}

	// resend of the pending one gives a new link
	r = usherInvite(t, d, "resend", created.ID)
	mustSucceed(t, r)
	if !strings.Contains(r.stdout, "/invite/inv_") || strings.Contains(r.stdout, created.URL) || !strings.Contains(r.stdout, "previous one no longer works") {
		t.Errorf("resend: %s (old url %s)", r, created.URL)
	}

	// an external_id already pending comes back as "already invited"
	for i := range 2 {
		r = usherInvite(t, d, "create", "--email", "ext@example.com", "--external-id", "CRM-42", "--no-email")
		mustSucceed(t, r)
		if already := strings.Contains(r.stdout, "already invited"); already != (i == 1) {
			t.Errorf("create #%d with external_id: %s", i+1, r)
		}
	}
}

func TestInviteErrors(t *testing.T) {
	t.Parallel()
	d := startInviteDev(t)
	conn := []string{"--issuer", d.IssuerURL, "--client-id", app.DevFunnelClientID, "--client-secret", app.DevFunnelSecret}
	tests := []struct {
		name     string
		args     []string // after "invite"
		code     int
		stderr   []string
		noSecret bool
	}{
		{name: "bad email", args: append([]string{"create", "--email", "not-an-email"}, conn...), code: 1,
			stderr: []string{"Invalid invitation", "nothing was stored", "email: ", "not a valid email address"}},
		{name: "expiry over the limit", args: append([]string{"create", "--email", "a@example.com", "--expires-in", "900h"}, conn...), code: 1,
			stderr: []string{"expires_in: must be at most"}},
		{name: "wrong secret", args: []string{"create", "--email", "a@example.com", "--issuer", d.IssuerURL, "--client-id", "funnel", "--client-secret", "wrong-secret-value"}, code: 1,
			stderr: []string{"refused the client credentials", "--client-secret"}, noSecret: true},
		{name: "unknown client", args: []string{"list", "--issuer", d.IssuerURL, "--client-id", "nobody", "--client-secret", "x-secret-x"}, code: 1,
			stderr: []string{"refused the client credentials"}, noSecret: true},
		{name: "client not allowed client_credentials", args: []string{"list", "--issuer", d.IssuerURL, "--client-id", app.DevSPAClientID, "--client-secret", "x-secret-x"}, code: 1,
			stderr: []string{"demo"}, noSecret: true},
		{name: "revoke unknown id", args: append([]string{"revoke", "inv-doesnotexist0000"}, conn...), code: 1,
			stderr: []string{"Invitation not found", "inv-doesnotexist0000"}},
		{name: "issuer is not usher", args: []string{"list", "--issuer", d.SPAURL, "--client-id", "funnel", "--client-secret", "funnel-dev-secret"}, code: 1,
			stderr: []string{"is --issuer"}, noSecret: true},
		{name: "usher unreachable", args: []string{"list", "--issuer", "http://127.0.0.1:1", "--client-id", "funnel", "--client-secret", "funnel-dev-secret"}, code: 1,
			stderr: []string{"cannot reach usher", "--issuer", "USHER_ISSUER"}, noSecret: true},
		// usage errors: exit 2, nothing sent
		{name: "missing email", args: append([]string{"create"}, conn...), code: 2, stderr: []string{"--email is required"}},
		{name: "bad duration", args: append([]string{"create", "--email", "a@example.com", "--expires-in", "soon"}, conn...), code: 2, stderr: []string{"--expires-in", "not a duration"}},
		{name: "claims not JSON", args: append([]string{"create", "--email", "a@example.com", "--claims", "{crm_id:1}"}, conn...), code: 2, stderr: []string{"--claims: not valid JSON"}},
		{name: "claims not an object", args: append([]string{"create", "--email", "a@example.com", "--claims", `["a"]`}, conn...), code: 2, stderr: []string{"must be a JSON object"}},
		{name: "bad email-match", args: append([]string{"create", "--email", "a@example.com", "--email-match", "fuzzy"}, conn...), code: 2, stderr: []string{"--email-match"}},
		{name: "revoke without id", args: append([]string{"revoke"}, conn...), code: 2, stderr: []string{"invitation ID is required"}},
		{name: "resend two ids", args: append([]string{"resend", "a", "b"}, conn...), code: 2, stderr: []string{"one invitation ID"}},
		{name: "bad status", args: append([]string{"list", "--status", "gone"}, conn...), code: 2, stderr: []string{"--status"}},
		{name: "bad limit", args: append([]string{"list", "--limit", "0"}, conn...), code: 2, stderr: []string{"--limit"}},
		{name: "bad since", args: append([]string{"list", "--since", "yesterday"}, conn...), code: 2, stderr: []string{"--since", "YYYY-MM-DD"}},
		{name: "unknown flag", args: append([]string{"list", "--colour"}, conn...), code: 2, stderr: []string{"-colour"}},
		{name: "unknown subcommand", args: []string{"frobnicate"}, code: 2, stderr: []string{`unknown subcommand "frobnicate"`}},
		{name: "no subcommand", args: nil, code: 2, stderr: []string{"usher invite create"}},
		{name: "missing credentials", args: []string{"list", "--issuer", d.IssuerURL}, code: 2, stderr: []string{"--client-id and --client-secret"}},
		{name: "issuer not a URL", args: append([]string{"list"}, append(conn, "--issuer", "127.0.0.1:8080")...), code: 2, stderr: []string{"--issuer"}},
		{name: "import without file", args: append([]string{"import"}, conn...), code: 2, stderr: []string{"one CSV file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := runCLI(t, append([]string{"invite"}, tt.args...)...)
			if r.code != tt.code {
				t.Errorf("exit %d, want %d\n%s", r.code, tt.code, r)
			}
			for _, want := range tt.stderr {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("stderr lacks %q\n%s", want, r)
				}
			}
			if tt.noSecret {
				for _, s := range []string{"wrong-secret-value", "x-secret-x", app.DevFunnelSecret} {
					if strings.Contains(r.stdout+r.stderr, s) {
						t.Errorf("output shows the secret %q\n%s", s, r)
					}
				}
			}
		})
	}
}

func TestInviteEnvironmentAndTrailingSlash(t *testing.T) {
	t.Parallel()
	d := startInviteDev(t)
	env := map[string]string{
		"USHER_ISSUER":        strings.TrimSuffix(d.IssuerURL, "/") + "/",
		"USHER_CLIENT_ID":     app.DevFunnelClientID,
		"USHER_CLIENT_SECRET": app.DevFunnelSecret,
	}
	var stdout, stderr bytes.Buffer
	err := runInvite(context.Background(), []string{"create", "--email", "env@example.com", "--no-email", "--json"}, &stdout, &stderr, func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("create from env: %v\n%s", err, stderr.String())
	}
	var inv client.Invitation
	if err := json.Unmarshal(stdout.Bytes(), &inv); err != nil || inv.Email != "env@example.com" {
		t.Fatalf("create from env: %v %s", err, stdout.String())
	}
	// flags win over the environment
	stdout.Reset()
	err = runInvite(context.Background(), []string{"list", "--client-secret", "not-the-secret"}, &stdout, &stderr, func(k string) string { return env[k] })
	if err == nil || !strings.Contains(err.Error(), "refused the client credentials") {
		t.Errorf("--client-secret over env: %v", err)
	}
}

func TestInviteImport(t *testing.T) {
	t.Parallel()
	d := startInviteDev(t)
	dir := t.TempDir()
	csvPath := filepath.Join(dir, "people.csv")
	// line 1 header (columns in a non-default order), 2 ok, 3 bad email,
	// 4 ok (quoted claims, roles with ';'), 5 bad claims JSON.
	content := "external_id,email,roles,claims\n" +
		"C-1,ann@example.com,viewer editor,\n" +
		"C-2,not-an-email,viewer,\n" +
		`C-3,bob@example.com,viewer;billing,"{""crm_id"":""C-3""}"` + "\n" +
		`C-4,cy@example.com,,{oops}` + "\n"
	if err := os.WriteFile(csvPath, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}

	r := usherInvite(t, d, "import", csvPath, "--no-email", "--role", "member")
	if r.code != 1 {
		t.Fatalf("import with bad rows: want exit 1, got %s", r)
	}
	for _, want := range []string{
		"line 2: ann@example.com inv-", "line 4: bob@example.com inv-", "/invite/inv_",
		"line 3: email: ", "line 5: claims: not valid JSON", "imported 2 of 4; 2 failed",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("import output lacks %q\n%s", want, r)
		}
	}
	if !strings.Contains(r.stderr, "2 of 4 rows failed") {
		t.Errorf("import stderr: %s", r)
	}
	list := listJSON(t, d)
	if len(list) != 2 {
		t.Fatalf("after import: %d invitations, want 2: %+v", len(list), list)
	}
	byEmail := map[string]client.Invitation{}
	for _, inv := range list {
		byEmail[inv.Email] = inv
	}
	if ann := byEmail["ann@example.com"]; strings.Join(ann.Roles, " ") != "viewer editor member" || ann.ExternalID != "C-1" || ann.EmailStatus != "not_requested" {
		t.Errorf("ann: %+v", ann)
	}
	if bob := byEmail["bob@example.com"]; strings.Join(bob.Roles, " ") != "viewer billing member" || bob.Claims["crm_id"] != "C-3" {
		t.Errorf("bob: %+v", bob)
	}

	// the same file again: nothing new, the same ids
	r2 := usherInvite(t, d, "import", csvPath, "--no-email", "--role", "member")
	if r2.code != 1 || !strings.Contains(r2.stdout, "already imported") || !strings.Contains(r2.stdout, "imported 2 of 4; 2 failed") {
		t.Errorf("re-import: %s", r2)
	}
	for _, inv := range list {
		if !strings.Contains(r2.stdout, inv.ID) {
			t.Errorf("re-import does not name %s\n%s", inv.ID, r2.stdout)
		}
	}
	if n := len(listJSON(t, d)); n != 2 {
		t.Errorf("after re-import: %d invitations, want 2", n)
	}

	// another file with an external_id that is pending: "already invited"
	other := filepath.Join(dir, "more.csv")
	if err := os.WriteFile(other, []byte("\ufeffEmail,External_ID\r\nann@example.com,C-1\r\n,\r\ndee@example.com,\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r3 := usherInvite(t, d, "import", "--no-email", other)
	mustSucceed(t, r3)
	for _, want := range []string{"line 2: ann@example.com " + byEmail["ann@example.com"].ID + " already invited", "line 4: dee@example.com inv-", "imported 2 of 2; 0 failed; 1 already invited"} {
		if !strings.Contains(r3.stdout, want) {
			t.Errorf("import with a pending external_id lacks %q\n%s", want, r3.stdout)
		}
	}
	if n := len(listJSON(t, d)); n != 3 {
		t.Errorf("after the second file: %d invitations, want 3", n)
	}
}

// TestInviteImportFixedRowOnly: the error message promises that after fixing
// the failed rows the same command creates only those. Keys depend on each
// row's content, so a fixed file (whose hash changed) replays the others.
func TestInviteImportFixedRowOnly(t *testing.T) {
	t.Parallel()
	d := startInviteDev(t)
	csvPath := filepath.Join(t.TempDir(), "people.csv")
	write := func(badEmail string) {
		t.Helper()
		content := "email,roles,claims,external_id\n" +
			"ann@example.com,viewer,,\n" +
			badEmail + ",viewer,,\n" +
			`bob@example.com,viewer,"{""crm_id"":""C-3""}",` + "\n" +
			"cy@example.com,,,C-4\n"
		if err := os.WriteFile(csvPath, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("dee-at-example.com")
	r := usherInvite(t, d, "import", csvPath, "--no-email")
	if r.code != 1 || !strings.Contains(r.stdout, "imported 3 of 4; 1 failed") {
		t.Fatalf("import with a bad row: %s", r)
	}
	before := listJSON(t, d)
	if len(before) != 3 {
		t.Fatalf("after the first import: %d invitations, want 3", len(before))
	}

	write("dee@example.com") // the fix changes the file, not the other rows
	r = usherInvite(t, d, "import", csvPath, "--no-email")
	mustSucceed(t, r)
	if !strings.Contains(r.stdout, "imported 4 of 4; 0 failed; 3 already imported") {
		t.Errorf("import of the fixed file: %s", r)
	}
	after := listJSON(t, d)
	if len(after) != 4 {
		t.Fatalf("after the fixed import: %d invitations, want 4 (only the fixed row new)", len(after))
	}
	var created []string
	for _, inv := range after {
		if !slices.ContainsFunc(before, func(b client.Invitation) bool { return b.ID == inv.ID }) {
			created = append(created, inv.Email)
		}
	}
	if !slices.Equal(created, []string{"dee@example.com"}) {
		t.Errorf("created by the second run: %v, want only dee@example.com", created)
	}
}

func TestRowKey(t *testing.T) {
	row := func(email string, roles []string, claims map[string]any, externalID string) string {
		return rowKey(client.CreateRequest{Email: email, Claims: claims, ExternalID: externalID, Roles: append(roles, "from-flag")}, roles)
	}
	claims := map[string]any{"k": "v", "j": 1}
	base := row("a@example.com", []string{"x"}, claims, "")
	tests := []struct {
		name string
		key  string
		same bool
	}{
		{"claims in another order", row("a@example.com", []string{"x"}, map[string]any{"j": 1, "k": "v"}, ""), true},
		{"other email", row("b@example.com", []string{"x"}, claims, ""), false},
		{"other roles", row("a@example.com", []string{"y"}, claims, ""), false},
		{"other claims", row("a@example.com", []string{"x"}, map[string]any{"k": "w"}, ""), false},
		{"an external_id", row("a@example.com", []string{"x"}, claims, "C-1"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.key == base; got != tt.same {
				t.Errorf("same key = %v, want %v", got, tt.same)
			}
			if len(tt.key) > 255 {
				t.Errorf("key too long for Idempotency-Key: %d", len(tt.key))
			}
		})
	}
}

func TestDevExports(t *testing.T) {
	got := devExports("http://127.0.0.1:9999/")
	for _, want := range []string{"export USHER_ISSUER=http://127.0.0.1:9999\n", "export USHER_CLIENT_ID=" + app.DevFunnelClientID + "\n", "export USHER_CLIENT_SECRET=" + app.DevFunnelSecret + "\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("devExports lacks %q:\n%s", want, got)
		}
	}
}

func TestInviteImportFileErrors(t *testing.T) {
	t.Parallel()
	d := startInviteDev(t)
	dir := t.TempDir()
	tests := []struct {
		name, content, want string
	}{
		{"empty file", "", "is empty"},
		{"no email column", "name,roles\nann,viewer\n", `unknown column "name"`},
		{"header without email", "roles\nviewer\n", "no email column"},
		{"duplicate column", "email,email\na@example.com,b@example.com\n", "appears twice"},
	}
	t.Run("files", func(t *testing.T) {
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				p := filepath.Join(dir, strconv.Itoa(i)+".csv")
				if err := os.WriteFile(p, []byte(tt.content), 0o600); err != nil {
					t.Fatal(err)
				}
				r := usherInvite(t, d, "import", p)
				if r.code != 1 || !strings.Contains(r.stderr, tt.want) {
					t.Errorf("want exit 1 and %q\n%s", tt.want, r)
				}
			})
		}
	})
	if n := len(listJSON(t, d)); n != 0 {
		t.Errorf("%d invitations created from broken files", n)
	}
	r := usherInvite(t, d, "import", filepath.Join(dir, "missing.csv"))
	if r.code != 1 || !strings.Contains(r.stderr, "missing.csv") {
		t.Errorf("missing file: %s", r)
	}
}

func TestInviteLinkFlag(t *testing.T) {
	t.Parallel()
	d := startInviteDev(t)
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"authorize", []string{"--link", "authorize"}, 0, "/authorize?client_id=" + app.DevSPAClientID + "&invitation=inv_"},
		{"default", nil, 0, "/invite/inv_"},
		{"unknown", []string{"--link", "magic"}, 2, "--link must be invite or authorize"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"--email", tt.name + "@example.com", "--no-email", "--client-id-for", app.DevSPAClientID}, tt.args...)
			r := usherInvite(t, d, "create", args...)
			if r.code != tt.code || !strings.Contains(r.stdout+r.stderr, tt.want) {
				t.Errorf("want exit %d and %q, got %s", tt.code, tt.want, r)
			}
		})
	}
}

// --locale reaches the invitation (the mail's language); a malformed tag is
// refused by usher under its field.
func TestInviteLocaleFlag(t *testing.T) {
	t.Parallel()
	d := startInviteDev(t)
	r := usherInvite(t, d, "create", "--email", "locale@example.com", "--no-email", "--locale", "pt-BR")
	mustSucceed(t, r)
	if invs := listJSON(t, d); len(invs) != 1 || invs[0].Locale != "pt-BR" {
		t.Errorf("invitations after --locale pt-BR: %+v", invs)
	}
	if r := usherInvite(t, d, "create", "--email", "bad-locale@example.com", "--no-email", "--locale", "not a tag"); r.code == 0 || !strings.Contains(r.stderr, "locale") {
		t.Errorf("--locale 'not a tag': %s", r)
	}
}
