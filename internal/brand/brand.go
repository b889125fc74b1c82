// Package brand is what invitees see of the product they are invited to
// besides its name: a logo, read from a file and served by usher itself (a
// third-party URL would tell that party the invitee's IP address), and an
// accent colour, with the text colours that keep WCAG AA contrast on it.
package brand

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// MaxLogoBytes bounds the logo: it is held in memory and embedded in every
// invitation mail.
const MaxLogoBytes = 256 << 10

// DefaultAccent is the accent of an unbranded usher.
const DefaultAccent = "#2d5be3"

// Logo is a logo file read at start.
type Logo struct {
	Data        []byte
	ContentType string // image/png, image/jpeg or image/svg+xml
	// Name is logo-<first 16 hex of SHA-256>.<ext>: the content decides the
	// name, so it can be cached for ever and a new logo gets a new URL.
	Name string
}

var logoExts = map[string]string{"image/png": ".png", "image/jpeg": ".jpg", "image/svg+xml": ".svg"}

// LoadLogo reads and checks the logo at path: PNG, JPEG or SVG (by content,
// not by name), at most MaxLogoBytes.
func LoadLogo(path string) (*Logo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxLogoBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxLogoBytes {
		return nil, fmt.Errorf("%s is larger than %d KiB", path, MaxLogoBytes>>10)
	}
	ct := sniff(data, filepath.Ext(path))
	ext, ok := logoExts[ct]
	if !ok {
		return nil, fmt.Errorf("%s is not a PNG, JPEG or SVG image (found %s)", path, ct)
	}
	sum := sha256.Sum256(data)
	return &Logo{Data: data, ContentType: ct, Name: "logo-" + hex.EncodeToString(sum[:8]) + ext}, nil
}

// sniff is the content type of data; SVG is text to http.DetectContentType,
// so an .svg file that starts like XML/SVG markup is taken as SVG.
func sniff(data []byte, ext string) string {
	ct, _, _ := strings.Cut(http.DetectContentType(data), ";")
	if strings.EqualFold(ext, ".svg") && (ct == "text/xml" || ct == "text/plain") && bytes.Contains(data[:min(len(data), 1024)], []byte("<svg")) {
		return "image/svg+xml"
	}
	return ct
}

// Colours is an accent with the text colours that go with it.
type Colours struct {
	Accent string // buttons, the header rule
	// OnAccent is the text on Accent: black or white, whichever contrasts
	// more (always at least 4.58:1, WCAG AA for normal text).
	OnAccent string
	// Ink is Accent where it is text on white (links, outline buttons) if
	// that reaches 4.5:1, else a dark grey that does.
	Ink string
}

// ParseAccent checks a "#RRGGBB" colour; "" is DefaultAccent.
func ParseAccent(s string) (Colours, error) {
	if s == "" {
		s = DefaultAccent
	}
	rgb, err := parseHex(s)
	if err != nil {
		return Colours{}, err
	}
	c := Colours{Accent: strings.ToLower(s), OnAccent: "#ffffff", Ink: strings.ToLower(s)}
	l := luminance(rgb)
	if contrast(l, 0) > contrast(l, 1) {
		c.OnAccent = "#000000"
	}
	if contrast(l, 1) < 4.5 {
		c.Ink = "#1f2933"
	}
	return c, nil
}

var errAccent = errors.New(`must be a colour written "#RRGGBB", e.g. "#2d5be3"`)

func parseHex(s string) ([3]float64, error) {
	if len(s) != 7 || s[0] != '#' {
		return [3]float64{}, errAccent
	}
	var rgb [3]float64
	for i := range rgb {
		v, err := strconv.ParseUint(s[1+2*i:3+2*i], 16, 8)
		if err != nil {
			return [3]float64{}, errAccent
		}
		rgb[i] = float64(v) / 255
	}
	return rgb, nil
}

// luminance is WCAG 2's relative luminance of an sRGB colour.
func luminance(rgb [3]float64) float64 {
	lin := func(c float64) float64 {
		if c <= 0.03928 {
			return c / 12.92
		}
		return math.Pow((c+0.055)/1.055, 2.4)
	}
	return 0.2126*lin(rgb[0]) + 0.7152*lin(rgb[1]) + 0.0722*lin(rgb[2])
}

// contrast is WCAG 2's contrast ratio of two luminances.
func contrast(a, b float64) float64 {
	if a < b {
		a, b = b, a
	}
	return (a + 0.05) / (b + 0.05)
}

// Contrast is the WCAG contrast ratio of two "#RRGGBB" colours (tests).
func Contrast(a, b string) (float64, error) {
	x, err := parseHex(a)
	if err != nil {
		return 0, err
	}
	y, err := parseHex(b)
	if err != nil {
		return 0, err
	}
	return contrast(luminance(x), luminance(y)), nil
}
