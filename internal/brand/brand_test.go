package brand

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseAccent(t *testing.T) {
	for _, tc := range []struct {
		in, onAccent, ink, err string
	}{
		{in: "", onAccent: "#ffffff", ink: DefaultAccent},
		{in: "#2D5BE3", onAccent: "#ffffff", ink: "#2d5be3"},
		{in: "#ffcc00", onAccent: "#000000", ink: "#1f2933"},
		{in: "#777777", onAccent: "#000000", ink: "#1f2933"},
		{in: "#000000", onAccent: "#ffffff", ink: "#000000"},
		{in: "2d5be3", err: "#RRGGBB"},
		{in: "#2d5be", err: "#RRGGBB"},
		{in: "#gg0000", err: "#RRGGBB"},
		{in: "red", err: "#RRGGBB"},
	} {
		c, err := ParseAccent(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseAccent(%q) error = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || c.OnAccent != tc.onAccent || c.Ink != tc.ink {
			t.Errorf("ParseAccent(%q) = %+v, %v; want on-accent %s, ink %s", tc.in, c, err, tc.onAccent, tc.ink)
		}
		// The promise: text on the accent and accent-coloured text on white pass AA.
		if r, _ := Contrast(c.Accent, c.OnAccent); r < 4.5 {
			t.Errorf("ParseAccent(%q): text on accent has contrast %.2f", tc.in, r)
		}
		if r, _ := Contrast(c.Ink, "#ffffff"); r < 4.5 {
			t.Errorf("ParseAccent(%q): ink on white has contrast %.2f", tc.in, r)
		}
	}
}

func TestLoadLogo(t *testing.T) {
	dir := t.TempDir()
	png := []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
	svg := []byte(`<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>`)
	for _, tc := range []struct {
		name string
		data []byte
		ct   string
		err  string
	}{
		{"logo.png", png, "image/png", ""},
		{"logo.svg", svg, "image/svg+xml", ""},
		{"logo.bin", png, "image/png", ""},
		{"logo.png.svg", []byte("just text"), "", "not a PNG, JPEG or SVG"},
		{"logo.html", []byte("<html><svg></svg></html>"), "", "not a PNG, JPEG or SVG"},
		{"big.png", append(png, make([]byte, MaxLogoBytes)...), "", "larger than"},
	} {
		p := filepath.Join(dir, tc.name)
		if err := os.WriteFile(p, tc.data, 0o600); err != nil {
			t.Fatal(err)
		}
		l, err := LoadLogo(p)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error = %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil || l.ContentType != tc.ct || !strings.HasPrefix(l.Name, "logo-") || len(l.Name) != len("logo-")+16+len(logoExts[tc.ct]) {
			t.Errorf("%s: %+v, %v", tc.name, l, err)
		}
	}
	if _, err := LoadLogo(filepath.Join(dir, "missing.png")); err == nil {
		t.Error("a missing logo loaded")
	}
}
