package grants

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/mail"
	"slices"
	"strings"
	"time"
)

// Email-match policies of an invitation.
const (
	MatchAny    = "any"    // whoever holds the link (the token is the proof)
	MatchExact  = "exact"  // the upstream email must be verified and equal
	MatchDomain = "domain" // a verified email in the invited email's domain
)

// Limits on what a caller may put in an invitation.
const (
	MaxClaimsBytes   = 8 << 10
	MaxMetadataBytes = 16 << 10
	maxShortField    = 200
	tokenPrefix      = "inv_"
)

// ScopeAdmin lets an admin API client put privileged roles on invitations.
const ScopeAdmin = "invitations:admin"

// ErrEmailMismatch: the person who signed in does not satisfy the
// invitation's email_match policy.
var ErrEmailMismatch = errors.New("the signed-in email does not match the invitation")

// ErrEmailUnverified: the signed-in email satisfies the invitation's
// email_match policy but the upstream has not verified it yet (an Auth0
// database sign-up before its verification mail was followed). Unlike
// ErrEmailMismatch it can be cured: see Service.AwaitVerification.
var ErrEmailUnverified = errors.New("the signed-in email is not verified yet")

// FieldError is one problem with one field of a request.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// ValidationError lists every problem of a request; nothing was stored.
type ValidationError struct{ Errors []FieldError }

func (v *ValidationError) Error() string {
	parts := make([]string, 0, len(v.Errors))
	for _, e := range v.Errors {
		parts = append(parts, e.Field+": "+e.Message)
	}
	return "invalid invitation: " + strings.Join(parts, "; ")
}

func (v *ValidationError) add(field, format string, args ...any) {
	v.Errors = append(v.Errors, FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
}

// CreateRequest is the body of POST /api/invitations.
type CreateRequest struct {
	Email      string         `json:"email"`
	Roles      []string       `json:"roles"`
	Claims     map[string]any `json:"claims"`
	Metadata   map[string]any `json:"metadata"`
	ExternalID string         `json:"external_id"`
	ClientID   string         `json:"client_id"`
	// ExpiresIn in seconds; nil = the configured default.
	ExpiresIn  *int64 `json:"expires_in"`
	SendEmail  *bool  `json:"send_email"`
	EmailMatch string `json:"email_match"`
	Inviter    string `json:"inviter"`
	// Link: "invite" (default) or "authorize", the link's form (Invitation.Link).
	Link string `json:"link"`
	// Locale: the BCP 47 language of the invitation mail (Invitation.Locale).
	Locale string `json:"locale"`
	// MayGrantPrivileged: the caller may put PrivilegedRoles on the
	// invitation (scope invitations:admin, or an admin on the admin page).
	// Set by the server from who calls, never read from the request body.
	MayGrantPrivileged bool `json:"-"`
}

// NewToken returns a fresh invitation token and the hash that is stored.
// 256 bits from crypto/rand: unguessable; the data it grants lives server-side.
func NewToken() (token, hash string) {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	token = tokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	return token, HashToken(token)
}

// HashToken is how a token is stored and looked up.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// ParseToken checks a token's shape without any lookup, so garbage never
// reaches the store. It returns the hash to look up.
func ParseToken(token string) (string, bool) {
	if len(token) != len(tokenPrefix)+43 || !strings.HasPrefix(token, tokenPrefix) {
		return "", false
	}
	raw, err := base64.RawURLEncoding.DecodeString(token[len(tokenPrefix):])
	if err != nil || len(raw) != 32 {
		return "", false
	}
	return HashToken(token), true
}

// Validate checks a create request; on success it returns the invitation to
// store (without token) and whether to send mail.
func (s *Service) Validate(req CreateRequest) (*Invitation, bool, error) {
	v := &ValidationError{}
	email := checkEmail(v, req.Email)
	roles := s.checkRoles(v, req.Roles, req.MayGrantPrivileged)
	s.checkClaims(v, req.Claims)
	if req.Metadata != nil {
		if b, _ := json.Marshal(req.Metadata); len(b) > MaxMetadataBytes {
			v.add("metadata", "is %d bytes of JSON; the limit is %d", len(b), MaxMetadataBytes)
		}
	}
	if len(req.ExternalID) > maxShortField {
		v.add("external_id", "must be at most %d characters", maxShortField)
	}
	if msg := CheckDisplayName(req.Inviter); msg != "" {
		v.add("inviter", "%s", msg)
	}
	if req.ClientID != "" && s.o.KnownClient != nil && !s.o.KnownClient(req.ClientID) {
		v.add("client_id", "%q is not a registered client", ClipStr(req.ClientID, 100))
	}
	ttl := s.checkExpiresIn(v, req.ExpiresIn)
	match := s.checkEmailMatch(v, req.EmailMatch)
	if req.Link != "" && req.Link != LinkInvite && req.Link != LinkAuthorize {
		v.add("link", "must be invite (/invite/<token>, the default) or authorize (/authorize?client_id=…&invitation=<token>)")
	}
	if msg := checkLocale(req.Locale); msg != "" {
		v.add("locale", "%s", msg)
	}
	if len(v.Errors) > 0 {
		return nil, false, v
	}
	inv := s.newInvitation(req, email, roles, ttl, match)
	return inv, inv.SendEmail, nil
}

// checkEmail checks the invitee's address and returns it trimmed.
func checkEmail(v *ValidationError, raw string) string {
	email := strings.TrimSpace(raw)
	if email == "" {
		v.add("email", "is required")
	} else if a, err := mail.ParseAddress(email); err != nil || a.Address != email || len(email) > 254 || !strings.Contains(email[strings.LastIndexByte(email, '@')+1:], ".") && !strings.HasSuffix(email, "@localhost") {
		v.add("email", "%q is not a valid email address (expected name@domain, without a display name)", ClipStr(raw, 80))
	}
	return email
}

// checkRoles checks each role against the privileged roles and the catalog,
// and returns the valid ones without duplicates, in order.
func (s *Service) checkRoles(v *ValidationError, reqRoles []string, mayGrantPrivileged bool) []string {
	roles := make([]string, 0, len(reqRoles))
	for i, r := range reqRoles {
		switch {
		case strings.TrimSpace(r) == "" || len(r) > 100:
			v.add(fmt.Sprintf("roles[%d]", i), "must be a non-empty name of at most 100 characters")
		case !mayGrantPrivileged && slices.Contains(s.o.PrivilegedRoles, r):
			v.add(fmt.Sprintf("roles[%d]", i), "role %q is privileged: only a client holding the scope %s (or an admin on the admin page) may invite to it", ClipStr(r, 100), ScopeAdmin)
		case len(s.o.RoleCatalog) > 0 && !slices.Contains(s.o.RoleCatalog, r):
			v.add(fmt.Sprintf("roles[%d]", i), "role %q is not in the configured catalog (%s)", ClipStr(r, 100), strings.Join(s.o.RoleCatalog, ", "))
		case !slices.Contains(roles, r):
			roles = append(roles, r)
		}
	}
	return roles
}

// checkClaims checks the claims' size and each claim's name, in name order
// so the errors come in a stable order.
func (s *Service) checkClaims(v *ValidationError, claims map[string]any) {
	if claims == nil {
		return
	}
	if b, _ := json.Marshal(claims); len(b) > MaxClaimsBytes {
		v.add("claims", "is %d bytes of JSON; the limit is %d", len(b), MaxClaimsBytes)
	}
	keys := make([]string, 0, len(claims))
	for k := range claims {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		var ce *ClaimNameError
		if errors.As(ValidateClaimName(s.o.ClaimsNamespace, k), &ce) {
			v.add("claims."+k, "%s", ce.Error())
		}
	}
}

// checkExpiresIn checks the requested lifetime and returns it, or the
// configured default when none was requested.
func (s *Service) checkExpiresIn(v *ValidationError, expiresIn *int64) time.Duration {
	if expiresIn == nil {
		return s.o.DefaultTTL
	}
	switch {
	case *expiresIn <= 0:
		v.add("expires_in", "must be a positive number of seconds")
	case *expiresIn > int64(s.o.MaxTTL/time.Second):
		v.add("expires_in", "must be at most %d seconds (%s)", int64(s.o.MaxTTL/time.Second), s.o.MaxTTL)
	}
	return time.Duration(*expiresIn) * time.Second
}

// checkEmailMatch checks the email_match policy and returns it, or the
// configured default when none was requested.
func (s *Service) checkEmailMatch(v *ValidationError, requested string) string {
	match := requested
	if match == "" {
		match = s.o.DefaultEmailMatch
	}
	if match != MatchAny && match != MatchExact && match != MatchDomain {
		v.add("email_match", "must be one of any, exact, domain")
	}
	return match
}

// newInvitation is the pending invitation a valid request creates, with its
// "created" event.
func (s *Service) newInvitation(req CreateRequest, email string, roles []string, ttl time.Duration, match string) *Invitation {
	now := s.o.Now()
	send := req.SendEmail == nil || *req.SendEmail
	inv := &Invitation{
		ID: "inv-" + randomID(), Email: email, Roles: roles, Claims: req.Claims, Metadata: req.Metadata,
		ExternalID: req.ExternalID, ClientID: req.ClientID, EmailMatch: match, Inviter: req.Inviter,
		Link: linkForm(req.Link), Locale: req.Locale, Status: StatusPending, CreatedAt: now, ExpiresAt: now.Add(ttl), SendEmail: send,
		Events: []Event{{Type: "created", At: now, Detail: map[string]string{"inviter": req.Inviter}}},
	}
	if !send {
		inv.EmailStatus = "not_requested"
	}
	return inv
}

// The forms of an invitation link.
const (
	LinkInvite    = "invite"    // {base}/invite/<token>
	LinkAuthorize = "authorize" // {issuer}/authorize?client_id=…&invitation=<token>
)

// linkForm stores the default form as "" (records from before links had forms).
func linkForm(s string) string {
	if s == LinkInvite {
		return ""
	}
	return s
}

// EmailMatches applies an email_match policy. An account without a verified
// email can only redeem "any": an address that would match once verified
// gets ErrEmailUnverified, any other ErrEmailMismatch. Emails compare by
// EmailKey (ASCII case only).
func EmailMatches(policy, invited, got string, verified bool) error {
	var matches bool
	switch policy {
	case MatchAny, "":
		return nil
	case MatchExact:
		matches = SameEmail(invited, got)
	case MatchDomain:
		matches = EmailDomain(got) != "" && EmailDomain(invited) == EmailDomain(got)
	}
	switch {
	case !matches:
		return ErrEmailMismatch
	case !verified:
		return ErrEmailUnverified
	}
	return nil
}

func randomID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func ClipStr(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
