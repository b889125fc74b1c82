package grants

import (
	"errors"
	"strings"
	"testing"
)

// The mail's language is a BCP 47 tag, kept as given; one usher has no
// catalog for is accepted (the mail is then English).
func TestInvitationLocale(t *testing.T) {
	tests := []struct {
		locale string
		bad    bool
	}{
		{locale: ""},
		{locale: "fr"},
		{locale: "pt-BR"},
		{locale: "zh-Hant-TW"},
		{locale: "french", bad: true},
		{locale: "en_US!", bad: true},
		{locale: "en-" + strings.Repeat("a", 40), bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.locale, func(t *testing.T) {
			s := NewService(ServiceOptions{})
			inv, _, err := s.Validate(CreateRequest{Email: "a@example.com", Locale: tt.locale})
			var ve *ValidationError
			switch {
			case tt.bad && (!errors.As(err, &ve) || len(ve.Errors) != 1 || ve.Errors[0].Field != "locale"):
				t.Errorf("locale %q: want one error on locale, got %v", tt.locale, err)
			case !tt.bad && err != nil:
				t.Errorf("locale %q refused: %v", tt.locale, err)
			case !tt.bad && inv.Locale != tt.locale:
				t.Errorf("locale %q stored as %q", tt.locale, inv.Locale)
			}
		})
	}
}
