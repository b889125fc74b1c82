package grants

import (
	"errors"
	"strings"
	"testing"
)

// An invitation may not carry a claim name that any Go relying party
// (encoding/json folds keys) would read as a registered claim.
func TestInvitationValidateRefusesFoldedClaimNames(t *testing.T) {
	for _, name := range []string{
		"sub", "SUB", "Scope", "\u017fub", "\u017fcope", "role\u017f", "nic\u212aname", "\uff53\uff55\uff42", "e m a i l", "",
	} {
		t.Run(name, func(t *testing.T) {
			s := NewService(ServiceOptions{})
			_, _, err := s.Validate(CreateRequest{Email: "a@example.com", Claims: map[string]any{name: "x"}})
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("claim %q accepted", name)
			}
			if len(ve.Errors) != 1 || ve.Errors[0].Field != "claims."+name || !strings.Contains(ve.Errors[0].Message, "registered") && !strings.Contains(ve.Errors[0].Message, "ASCII") && !strings.Contains(ve.Errors[0].Message, "characters") {
				t.Errorf("claim %q: %+v", name, ve.Errors)
			}
		})
	}
	for _, name := range []string{"crm_id", "https://app.example.com/plan", "app:plan", "org_id", "subscription", "scopes_note"} {
		s := NewService(ServiceOptions{})
		if _, _, err := s.Validate(CreateRequest{Email: "a@example.com", Claims: map[string]any{name: "x"}}); err != nil {
			t.Errorf("claim %q refused: %v", name, err)
		}
	}
	// With a namespace, the name as it appears in the token is what counts.
	s := NewService(ServiceOptions{ClaimsNamespace: "https://app.example.com/"})
	if _, _, err := s.Validate(CreateRequest{Email: "a@example.com", Claims: map[string]any{"sub": "x"}}); err != nil {
		t.Errorf("namespaced sub refused: %v", err)
	}
}
