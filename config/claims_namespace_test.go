package config

import (
	"strings"
	"testing"
)

// invitations.claims_namespace goes in front of every invitation claim in
// tokens: it must be a safe ASCII prefix (issue 10 §1).
func TestClaimsNamespaceMustBeSafeASCII(t *testing.T) {
	t.Parallel()
	for _, ns := range []string{`"\u017f:"`, `"https://app.example.com/ "`, `"app\tx:"`} {
		_, err := Parse([]byte(doc{extra: "invitations:\n  claims_namespace: " + ns + "\n"}.String()), envOf(baseEnv()))
		if err == nil || !strings.Contains(err.Error(), "invitations.claims_namespace: ") {
			t.Errorf("claims_namespace %s: %v, want an error naming invitations.claims_namespace", ns, err)
		}
	}
	for _, ns := range []string{`"https://app.example.com/"`, `"app:"`} {
		_, err := Parse([]byte(doc{extra: "invitations:\n  claims_namespace: " + ns + "\n"}.String()), envOf(baseEnv()))
		if err != nil && strings.Contains(err.Error(), "claims_namespace") {
			t.Errorf("claims_namespace %s refused: %v", ns, err)
		}
	}
}
