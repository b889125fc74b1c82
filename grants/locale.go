package grants

import "golang.org/x/text/language"

// checkLocale: "" or a well-formed BCP 47 tag of reasonable length; a
// language usher has no catalog for is allowed (English is used), so a
// funnel may record the invitee's language before a catalog exists.
func checkLocale(s string) string {
	if s == "" {
		return ""
	}
	if len(s) > 35 {
		return "must be a BCP 47 language tag of at most 35 characters"
	}
	if _, err := language.Parse(s); err != nil {
		return `must be a BCP 47 language tag such as "en", "fr" or "pt-BR"`
	}
	return ""
}
