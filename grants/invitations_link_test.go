package grants

import (
	"errors"
	"testing"
)

// The link form is validated and stored; the default is stored as "" so that
// records from before link forms and new default ones read the same.
func TestInvitationLinkForm(t *testing.T) {
	tests := []struct {
		link, stored string
		bad          bool
	}{
		{link: "", stored: ""},
		{link: LinkInvite, stored: ""},
		{link: LinkAuthorize, stored: LinkAuthorize},
		{link: "Authorize", bad: true},
		{link: "magic", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.link, func(t *testing.T) {
			s := NewService(ServiceOptions{})
			inv, _, err := s.Validate(CreateRequest{Email: "a@example.com", Link: tt.link})
			var ve *ValidationError
			switch {
			case tt.bad && (!errors.As(err, &ve) || len(ve.Errors) != 1 || ve.Errors[0].Field != "link"):
				t.Errorf("link %q: want one error on link, got %v", tt.link, err)
			case !tt.bad && err != nil:
				t.Errorf("link %q refused: %v", tt.link, err)
			case !tt.bad && inv.Link != tt.stored:
				t.Errorf("link %q stored as %q, want %q", tt.link, inv.Link, tt.stored)
			}
		})
	}
}
