package grants

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxDisplayName is the longest inviter name, in characters.
const MaxDisplayName = 64

// CheckDisplayName says what is wrong with an inviter name, or "". The name
// is printed in the invitation mail, its subject included, so it must read
// as a name: no link a mail client would make clickable, no line breaks
// (header injection) or invisible formatting (bidi overrides).
func CheckDisplayName(s string) string {
	switch {
	case !utf8.ValidString(s):
		return "must be valid UTF-8"
	case utf8.RuneCountInString(s) > MaxDisplayName:
		return "must be at most 64 characters"
	case strings.Contains(s, "://") || strings.Contains(strings.ToLower(s), "www."):
		return "must be a plain name, without a link (no \"://\", no \"www.\")"
	case strings.IndexFunc(s, notPrintable) >= 0:
		return "must not contain control characters or line breaks"
	}
	return ""
}

// notPrintable: control characters (line breaks, tabs), line and paragraph
// separators, and format characters such as bidi overrides.
func notPrintable(r rune) bool {
	return unicode.IsControl(r) || unicode.In(r, unicode.Zl, unicode.Zp, unicode.Cf)
}

// DisplayName makes a name checked by CheckDisplayName out of any string
// (a user's profile name for the admin page's inviter): "" if it cannot.
func DisplayName(s string) string {
	s = strings.Join(strings.FieldsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || notPrintable(r) }), " ")
	if r := []rune(s); len(r) > MaxDisplayName {
		s = strings.TrimSpace(string(r[:MaxDisplayName]))
	}
	if CheckDisplayName(s) != "" {
		return ""
	}
	return s
}
