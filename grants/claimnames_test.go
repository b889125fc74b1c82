package grants

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

func TestValidateClaimName(t *testing.T) {
	tests := []struct {
		ns, name string
		folds    string // the reserved claim named in the error; "" = grammar refusal
		ok       bool
	}{
		{name: "crm_id", ok: true},
		{name: "org_id", ok: true},
		{name: "https://app.example.com/plan", ok: true},
		{name: "app:plan", ok: true},
		{name: "subscription", ok: true},
		{name: "x", ok: true},
		{name: strings.Repeat("a", 100), ok: true},
		{ns: "https://app.example.com/", name: "sub", ok: true},
		{ns: "https://app.example.com/", name: "crm_id", ok: true},

		{name: "sub", folds: "sub"},
		{name: "roles", folds: "roles"},
		{name: "\u017fub", folds: "sub"},                         // ſub, LATIN SMALL LETTER LONG S
		{name: "\u017fcope", folds: "scope"},                     // ſcope
		{name: "role\u017f", folds: "roles"},                     // roleſ
		{name: "\u017fid", folds: "sid"},                         // ſid
		{name: "nic\u212aname", folds: "nickname"},               // KELVIN SIGN
		{name: "\u212Aid", folds: ""},                            // "kid" is not reserved: grammar only
		{name: "\uff53\uff55\uff42", folds: "sub"},               // fullwidth ｓｕｂ (NFKC)
		{name: "\uff33\uff23\uff2f\uff30\uff25", folds: "scope"}, // fullwidth ＳＣＯＰＥ
		{name: "\u1d43ud", folds: "aud"},                         // MODIFIER LETTER SMALL A (NFKC)
		{ns: "su", name: "b", folds: "sub"},                      // the namespace makes it sub
		{ns: "S", name: "UB", folds: "sub"},
		{ns: "https://x/", name: "\u017fub", folds: ""},

		{name: ""},
		{name: strings.Repeat("a", 101)},
		{name: "crm id"},
		{name: "crm\tid"},
		{name: "caf\u00e9"},
		{name: "crm_id\x00"},
		{name: "crm_id\x7f"},
	}
	for _, tc := range tests {
		err := ValidateClaimName(tc.ns, tc.name)
		if tc.ok {
			if err != nil {
				t.Errorf("ValidateClaimName(%q, %q) = %v, want nil", tc.ns, tc.name, err)
			}
			continue
		}
		var ce *ClaimNameError
		if !errors.Is(err, ErrClaimName) || !errors.As(err, &ce) {
			t.Errorf("ValidateClaimName(%q, %q) = %v, want a *ClaimNameError", tc.ns, tc.name, err)
			continue
		}
		if !strings.Contains(err.Error(), strconv.Quote(tc.name)) {
			t.Errorf("error %q does not name the claim %q", err, tc.name)
		}
		if tc.folds != "" && (ce.FoldsOnto != tc.folds || !strings.Contains(err.Error(), `"`+tc.folds+`"`)) {
			t.Errorf("ValidateClaimName(%q, %q) = %v (folds onto %q), want it to name %q", tc.ns, tc.name, err, ce.FoldsOnto, tc.folds)
		}
	}
}

// Every reserved name is refused in every casing a lenient reader accepts.
func TestValidateClaimNameEveryReservedNameInEveryCase(t *testing.T) {
	for _, r := range ReservedClaims {
		variants := map[string]bool{r: true, strings.ToUpper(r): true, strings.ToTitle(r[:1]) + r[1:]: true}
		// Alternate case, and each single letter upper-cased.
		alt := []rune(r)
		for i, c := range alt {
			if i%2 == 1 {
				alt[i] = unicode.ToUpper(c)
			}
		}
		variants[string(alt)] = true
		for i := range r {
			variants[r[:i]+strings.ToUpper(r[i:i+1])+r[i+1:]] = true
		}
		// s -> ſ and k -> K everywhere: what encoding/json folds.
		variants[strings.NewReplacer("s", "\u017f", "k", "\u212a").Replace(r)] = true
		for v := range variants {
			var ce *ClaimNameError
			if err := ValidateClaimName("", v); !errors.As(err, &ce) || ce.FoldsOnto != r {
				t.Errorf("ValidateClaimName(%q) = %v, want it to fold onto %q", v, err, r)
			}
		}
	}
}

func TestValidateClaimsNamespace(t *testing.T) {
	for _, ns := range []string{"", "https://app.example.com/", "app:", "urn:example:"} {
		if err := ValidateClaimsNamespace(ns); err != nil {
			t.Errorf("ValidateClaimsNamespace(%q) = %v", ns, err)
		}
	}
	for _, ns := range []string{"https://app.example.com/ ", "\u017f:", "app\n", strings.Repeat("a", 201)} {
		if err := ValidateClaimsNamespace(ns); !errors.Is(err, ErrClaimName) {
			t.Errorf("ValidateClaimsNamespace(%q) = %v, want ErrClaimName", ns, err)
		}
	}
}

func TestUnsafeClaimNames(t *testing.T) {
	got := UnsafeClaimNames("", map[string]any{"\u017fub": 1, "crm_id": 2, "SCOPE": 3, "roles": 4})
	if strings.Join(got, ",") != "SCOPE,roles,\u017fub" {
		t.Errorf("UnsafeClaimNames = %q", got)
	}
	if got := UnsafeClaimNames("https://x/", map[string]any{"sub": 1}); got != nil {
		t.Errorf("namespaced: %q", got)
	}
}
