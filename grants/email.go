package grants

import "strings"

// EmailKey is the form in which emails are compared and indexed: trimmed,
// ASCII letters lowered, every other byte unchanged. Unicode case folding
// (strings.EqualFold, strings.ToLower) would make a verified
// "boſs@example.com" (long s) equal "boss@example.com", and lowers the Kelvin
// sign K to "k": another person's address.
func EmailKey(email string) string {
	email = strings.TrimSpace(email)
	b := []byte(email)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// SameEmail compares two addresses ASCII-case-insensitively over the whole address.
func SameEmail(a, b string) bool { return EmailKey(a) == EmailKey(b) }

// EmailDomain is the EmailKey of the part after the last '@' ("" without one).
func EmailDomain(email string) string {
	i := strings.LastIndexByte(email, '@')
	if i < 0 {
		return ""
	}
	return EmailKey(email[i+1:])
}
