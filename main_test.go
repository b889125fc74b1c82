package main

import (
	"context"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

// TestConfigCheck runs `usher config check` and `usher serve` the way an
// operator does: every problem in one run, a suggestion for a misspelt key,
// and a pointer to the example config when no file was given.
func TestConfigCheck(t *testing.T) {
	t.Setenv("USHER_CONFIG", "") // the flag's default; the tests set --config
	dir := t.TempDir()
	typos := filepath.Join(dir, "typos.yaml")
	if err := os.WriteFile(typos, []byte("issuer: ftp://x\nclients:\n  - id: spa\n    type: public\n    redirect_uri: [https://a.example/cb]\nlog:\n  levle: debug\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr []string
	}{
		{"config check without a file", []string{"config", "check"}, 1,
			[]string{"no configuration file was given", "--config", "deploy/usher.example.yaml", "issuer: required"}},
		{"serve without a file", []string{"serve"}, 1,
			[]string{"no configuration file was given", "deploy/usher.example.yaml"}},
		{"every problem in one run", []string{"config", "check", "--config", typos}, 1,
			[]string{"invalid configuration", `clients[0].redirect_uri: line 5: unknown key; did you mean "redirect_uris"?`,
				`log.levle: line 7: unknown key; did you mean "level"?`, `issuer: "ftp://x" must use https`,
				"clients[0].redirect_uris: a public client needs", "sessions.secret: required"}},
		{"a missing file", []string{"config", "check", "--config", filepath.Join(dir, "nope.yaml")}, 1,
			[]string{"nope.yaml", "no such file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, tt.args...)
			if r.code != tt.code {
				t.Fatalf("want exit %d, got %s", tt.code, r)
			}
			for _, w := range tt.stderr {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr lacks %q\n%s", w, r)
				}
			}
		})
	}
}

// TestStoreMigrateCommand runs `usher store migrate` between two bolt files:
// it prints the verification table, and refuses the same store on both sides.
func TestStoreMigrateCommand(t *testing.T) {
	dir := t.TempDir()
	from, to := "bolt:"+dir+"/a.db", "bolt:"+dir+"/b.db"
	var out, errb strings.Builder
	if code := run(context.Background(), []string{"store", "migrate", "--from", from, "--to", to}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s%s", code, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "invitations") || !strings.Contains(out.String(), "0 copied") {
		t.Errorf("output:\n%s", out.String())
	}
	out.Reset()
	errb.Reset()
	if code := run(context.Background(), []string{"store", "migrate", "--from", from, "--to", from}, &out, &errb); code == 0 {
		t.Error("the same store on both sides was accepted")
	}
}

// TestTuneGC: without GOGC usher raises the GC target to defaultGCPercent;
// an operator's GOGC is left alone.
func TestTuneGC(t *testing.T) {
	orig := debug.SetGCPercent(100)
	defer debug.SetGCPercent(orig)
	for _, tc := range []struct {
		env  string
		want int
	}{
		{"", defaultGCPercent},
		{"100", 100},
		{"off", 100},
	} {
		debug.SetGCPercent(100)
		tuned := tuneGC(func(k string) string {
			if k == "GOGC" {
				return tc.env
			}
			return ""
		})
		if got := debug.SetGCPercent(100); got != tc.want || tuned != (tc.env == "") {
			t.Errorf("GOGC=%q: GC percent %d (tuned %v), want %d", tc.env, got, tuned, tc.want)
		}
	}
}
