package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBranding(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	png := filepath.Join(dir, "logo.png")
	if err := os.WriteFile(png, []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"), 0o600); err != nil {
		t.Fatal(err)
	}
	text := filepath.Join(dir, "logo.txt")
	if err := os.WriteFile(text, []byte("not an image"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, extra string
		want        []string // substrings of the error; none: valid
	}{
		{"none", "", nil},
		{"logo and accent", "branding:\n  logo: " + png + "\n  accent: \"#0a7d55\"\n", nil},
		{"bad accent", "branding:\n  accent: teal\n", []string{`branding.accent: must be a colour written "#RRGGBB"`, `got "teal"`}},
		{"short accent", "branding:\n  accent: \"#fff\"\n", []string{"branding.accent:"}},
		{"missing logo", "branding:\n  logo: " + filepath.Join(dir, "nope.png") + "\n", []string{"branding.logo:", "no such file"}},
		{"not an image", "branding:\n  logo: " + text + "\n", []string{"branding.logo:", "not a PNG, JPEG or SVG"}},
		{"both reported", "branding:\n  logo: " + text + "\n  accent: blue\n", []string{"branding.logo:", "branding.accent:"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(doc{extra: tc.extra}.String()), envOf(baseEnv()))
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("valid branding refused: %v", err)
				}
				return
			}
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q: %v", w, err)
				}
			}
		})
	}
}
