package grants

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
)

// MaxClaimNameLen bounds a claim name (the namespace not included).
const MaxClaimNameLen = 100

// ErrClaimName is wrapped by every *ClaimNameError: a claim name that may
// not enter a token.
var ErrClaimName = errors.New("claim name not allowed")

// ClaimNameError names the refused claim and says why.
type ClaimNameError struct {
	Name string // as given, without the namespace
	// FoldsOnto is the reserved claim the name folds onto ("" when the name
	// was refused for its characters or length only).
	FoldsOnto string
	// InToken is the name as it would appear in tokens (namespace + Name).
	InToken string
	reason  string
}

func (e *ClaimNameError) Error() string { return fmt.Sprintf("claim %q %s", e.Name, e.reason) }
func (e *ClaimNameError) Unwrap() error { return ErrClaimName }

// Reason is the message without the claim's name (for field errors that
// already name it).
func (e *ClaimNameError) Reason() string { return e.reason }

// ReservedClaims carry a token's own meaning or usher's: JWT (RFC 7519 §4.1),
// OIDC Core §2, §3.1.3.6, §5.1, §5.6.2, RFC 9068 §2.2, RFC 8693 §4, RFC 7800
// (cnf), RFC 7662 §2.2 (introspection members), RFC 9068 §2.2.3.1
// (roles, groups, entitlements), and what usher itself puts in tokens
// (roles). An invitation, a hook or a config file may not set them.
var ReservedClaims = []string{
	// RFC 7519
	"iss", "sub", "aud", "exp", "nbf", "iat", "jti",
	// OIDC Core standard claims
	"name", "given_name", "family_name", "middle_name", "nickname", "preferred_username",
	"profile", "picture", "website", "email", "email_verified", "gender", "birthdate",
	"zoneinfo", "locale", "phone_number", "phone_number_verified", "address", "updated_at",
	// OIDC Core ID token and aggregated/distributed claims
	"nonce", "azp", "at_hash", "c_hash", "s_hash", "auth_time", "acr", "amr", "sid",
	"_claim_names", "_claim_sources",
	// RFC 9068, RFC 8693, RFC 7800, RFC 7662
	"client_id", "scope", "typ", "gty", "act", "may_act", "cnf", "active", "username", "token_type",
	// authorization attributes (RFC 9068 §2.2.3.1) and usher's own
	"roles", "groups", "permissions", "entitlements",
}

// foldKey is the name a lenient reader may take s for: NFKC (fullwidth
// letters become ASCII, "ſ" becomes "s") and then Unicode case folding.
func foldKey(s string) string {
	return strings.ToLower(cases.Fold().String(norm.NFKC.String(s)))
}

// foldsOnto returns the reserved claim s would be read as, or "". Go's
// encoding/json matches object keys with strings.EqualFold (Unicode simple
// folding: "ſub" is "sub", "\u212Aid" is "kid"); NFKC covers readers that
// normalise first.
func foldsOnto(s string) string {
	key := foldKey(s)
	for _, r := range ReservedClaims {
		if strings.EqualFold(s, r) || key == r {
			return r
		}
	}
	return ""
}

// claimNameASCII: printable ASCII without space (0x21–0x7E), so that no
// reader can fold, normalise or trim a name into another one.
func claimNameASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7E {
			return false
		}
	}
	return true
}

// ValidateClaimName checks one claim name a caller wants in tokens:
// 1–100 printable ASCII characters, and not a reserved claim, even after
// case folding and NFKC, once the configured namespace is put in front.
// Namespaced forms apps use pass: crm_id, app:plan, https://app.example.com/plan.
// The error is a *ClaimNameError (errors.Is ErrClaimName).
func ValidateClaimName(namespace, name string) error {
	e := &ClaimNameError{Name: name, InToken: namespace + name}
	if r := foldsOnto(e.InToken); r != "" {
		e.FoldsOnto = r
		switch {
		case e.InToken == r:
			e.reason = fmt.Sprintf("is the registered claim %q and cannot be set", r)
		case namespace != "":
			e.reason = fmt.Sprintf("is %q in tokens, which folds onto the registered claim %q (case or Unicode folding)", e.InToken, r)
		default:
			e.reason = fmt.Sprintf("folds onto the registered claim %q (case or Unicode folding: Go's encoding/json and other lenient readers take it for %q)", r, r)
		}
		return e
	}
	switch {
	case name == "" || len(name) > MaxClaimNameLen:
		e.reason = fmt.Sprintf("is not allowed: claim names must be 1 to %d characters", MaxClaimNameLen)
	case !claimNameASCII(name):
		e.reason = "is not allowed: claim names must be printable ASCII without spaces (0x21-0x7E)"
	default:
		return nil
	}
	return e
}

// ValidateClaimsNamespace checks invitations.claims_namespace: a safe ASCII
// prefix (each name is checked again with it in front).
func ValidateClaimsNamespace(ns string) error {
	if len(ns) > 200 || !claimNameASCII(ns) {
		return fmt.Errorf("%w: namespace %q must be at most 200 printable ASCII characters without spaces", ErrClaimName, ns)
	}
	return nil
}

// UnsafeClaimNames lists, sorted, the names in claims that ValidateClaimName
// refuses: stored before the rule existed, they are kept in the store but
// never served.
func UnsafeClaimNames(namespace string, claims map[string]any) []string {
	var out []string
	for k := range claims {
		if ValidateClaimName(namespace, k) != nil {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}
