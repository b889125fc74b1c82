package broker

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/usher-oidc/usher/internal/messages"
)

// Every catalog key the pages and the mail use has an English text: a
// missing one would show its key to an invitee.
func TestCatalogHasEveryKey(t *testing.T) {
	en := messages.For(messages.Default)
	has := func(k string) bool { return en.Text(k) != k }
	var sources []string
	for _, glob := range []string{"*.go", "../notify/mail/templates/*"} {
		files, err := filepath.Glob(glob)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			sources = append(sources, string(b))
		}
	}
	src := strings.Join(sources, "\n")
	var want []string
	for _, m := range regexp.MustCompile(`\bKey: "([a-z_.]+)"`).FindAllStringSubmatch(src, -1) {
		want = append(want, m[1]+".title", m[1]+".message")
	}
	for _, re := range []string{`LinkKey: "([a-z_.]+)"`, `\.(?:Text|HTML|T|H)[ (]"([a-z_.]+)"`, `renderRefusal\([^)]*"([a-z_.]+)"\)`} {
		for _, m := range regexp.MustCompile(re).FindAllStringSubmatch(src, -1) {
			if !strings.HasSuffix(m[1], ".") { // a prefix ("refusal." + result): checked below
				want = append(want, m[1])
			}
		}
	}
	for _, r := range refusals {
		want = append(want, "refusal."+r.result)
	}
	if len(want) < 50 {
		t.Fatalf("found only %d key uses: the patterns no longer match the sources", len(want))
	}
	seen := map[string]bool{}
	for _, k := range want {
		if !seen[k] && !has(k) {
			t.Errorf("catalog key %q has no English text", k)
		}
		seen[k] = true
	}
}
