package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/usher-oidc/usher/app"
)

// devExampleMarker precedes each README shell block that must run as is
// against `usher dev`. Blocks that block (go run . dev), need files
// (invite import people.csv) or run the test suite are left unmarked.
const devExampleMarker = "<!-- dev-example"

// readmeDevExamples returns the marked ```sh blocks of a README.
func readmeDevExamples(t *testing.T, readme string) []string {
	t.Helper()
	var blocks []string
	lines := strings.Split(readme, "\n")
	for i := 0; i < len(lines); i++ {
		if !strings.HasPrefix(strings.TrimSpace(lines[i]), devExampleMarker) {
			continue
		}
		if i+1 >= len(lines) || (lines[i+1] != "```sh" && lines[i+1] != "```bash") {
			t.Fatalf("README.md line %d: %s must be followed by a ```sh block", i+1, devExampleMarker)
		}
		var b strings.Builder
		for i += 2; i < len(lines) && lines[i] != "```"; i++ {
			b.WriteString(lines[i] + "\n")
		}
		blocks = append(blocks, b.String())
	}
	return blocks
}

// TestReadmeDevExamples runs the README's marked examples with bash against
// a real usher dev on free ports, the way a newcomer pastes them after
// exporting what `usher dev` prints. The CLI is built once and put on PATH
// as usher: `go run .` in every example would link usher again each time.
func TestReadmeDevExamples(t *testing.T) {
	for _, tool := range []string{"bash", "curl", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed to run the README's examples (scripts/install-test-deps.sh installs curl): %v", tool, err)
		}
	}
	raw, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := readmeDevExamples(t, string(raw))
	if len(blocks) < 2 {
		t.Fatalf("README.md has %d %s blocks, want the curl and the usher invite examples", len(blocks), devExampleMarker)
	}

	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(bin, "usher"), ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	d := startInviteDev(t)
	env := []string{
		"PATH=" + bin + string(os.PathListSeparator) + os.Getenv("PATH"),
		"HOME=" + t.TempDir(),
		"USHER_ISSUER=" + trimSlash(d.IssuerURL),
		"USHER_CLIENT_ID=" + app.DevFunnelClientID,
		"USHER_CLIENT_SECRET=" + app.DevFunnelSecret,
	}
	for i, block := range blocks {
		t.Run(firstLine(block), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", block)
			cmd.Dir, cmd.Env = t.TempDir(), env
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("README dev example %d failed: %v\n--- block\n%s--- output\n%s", i+1, err, block, out)
			}
			t.Logf("output:\n%s", out)
		})
	}
	// What the examples promised: the invitations they created are there.
	for _, email := range []string{"grace@example.com", "alan@example.com"} {
		if len(listJSON(t, d, "--email", email)) == 0 {
			t.Errorf("after the README examples, no invitation for %s", email)
		}
	}
}

func firstLine(s string) string {
	line, _ := bufio.NewReader(strings.NewReader(s)).ReadString('\n')
	return strings.TrimSpace(line)
}
