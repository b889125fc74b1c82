package grants

import (
	"context"
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
	// MayGrantPrivileged: the caller may put PrivilegedRoles on the
	// invitation (scope invitations:admin, or an admin on the admin page).
	// Set by the server from who calls, never read from the request body.
	MayGrantPrivileged bool `json:"-"`
}

// InvitationsOptions configure the invitation service.
type InvitationsOptions struct {
	Store             Store
	DefaultTTL        time.Duration
	MaxTTL            time.Duration
	DefaultEmailMatch string
	// RoleCatalog, when not empty, is the set of roles an invitation may grant.
	RoleCatalog []string
	// PrivilegedRoles need CreateRequest.MayGrantPrivileged.
	PrivilegedRoles []string
	// ClaimsNamespace prefixes claim names in tokens; claim names are checked
	// as they appear there (ValidateClaimName).
	ClaimsNamespace string
	// KnownClient reports whether client_id names a registered client.
	KnownClient func(string) bool
	Now         func() time.Time
}

// Invitations mints, checks, redeems, revokes and re-sends invitations.
type Invitations struct{ o InvitationsOptions }

func NewInvitations(o InvitationsOptions) *Invitations {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.DefaultTTL <= 0 {
		o.DefaultTTL = 7 * 24 * time.Hour
	}
	if o.MaxTTL <= 0 {
		o.MaxTTL = 30 * 24 * time.Hour
	}
	if o.DefaultEmailMatch == "" {
		o.DefaultEmailMatch = MatchAny
	}
	return &Invitations{o: o}
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
func (s *Invitations) Validate(req CreateRequest) (*Invitation, bool, error) {
	v := &ValidationError{}
	email := strings.TrimSpace(req.Email)
	if email == "" {
		v.add("email", "is required")
	} else if a, err := mail.ParseAddress(email); err != nil || a.Address != email || len(email) > 254 || !strings.Contains(email[strings.LastIndexByte(email, '@')+1:], ".") && !strings.HasSuffix(email, "@localhost") {
		v.add("email", "%q is not a valid email address (expected name@domain, without a display name)", ClipStr(req.Email, 80))
	}
	roles := make([]string, 0, len(req.Roles))
	for i, r := range req.Roles {
		switch {
		case strings.TrimSpace(r) == "" || len(r) > 100:
			v.add(fmt.Sprintf("roles[%d]", i), "must be a non-empty name of at most 100 characters")
		case !req.MayGrantPrivileged && slices.Contains(s.o.PrivilegedRoles, r):
			v.add(fmt.Sprintf("roles[%d]", i), "role %q is privileged: only a client holding the scope %s (or an admin on the admin page) may invite to it", ClipStr(r, 100), ScopeAdmin)
		case len(s.o.RoleCatalog) > 0 && !slices.Contains(s.o.RoleCatalog, r):
			v.add(fmt.Sprintf("roles[%d]", i), "role %q is not in the configured catalog (%s)", ClipStr(r, 100), strings.Join(s.o.RoleCatalog, ", "))
		case !slices.Contains(roles, r):
			roles = append(roles, r)
		}
	}
	if req.Claims != nil {
		if b, _ := json.Marshal(req.Claims); len(b) > MaxClaimsBytes {
			v.add("claims", "is %d bytes of JSON; the limit is %d", len(b), MaxClaimsBytes)
		}
		keys := make([]string, 0, len(req.Claims))
		for k := range req.Claims {
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
	ttl := s.o.DefaultTTL
	if req.ExpiresIn != nil {
		ttl = time.Duration(*req.ExpiresIn) * time.Second
		switch {
		case *req.ExpiresIn <= 0:
			v.add("expires_in", "must be a positive number of seconds")
		case *req.ExpiresIn > int64(s.o.MaxTTL/time.Second):
			v.add("expires_in", "must be at most %d seconds (%s)", int64(s.o.MaxTTL/time.Second), s.o.MaxTTL)
		}
	}
	match := req.EmailMatch
	if match == "" {
		match = s.o.DefaultEmailMatch
	}
	if match != MatchAny && match != MatchExact && match != MatchDomain {
		v.add("email_match", "must be one of any, exact, domain")
	}
	if req.Link != "" && req.Link != LinkInvite && req.Link != LinkAuthorize {
		v.add("link", "must be invite (/invite/<token>, the default) or authorize (/authorize?client_id=…&invitation=<token>)")
	}
	if len(v.Errors) > 0 {
		return nil, false, v
	}
	now := s.o.Now()
	send := req.SendEmail == nil || *req.SendEmail
	inv := &Invitation{
		ID: "inv-" + randomID(), Email: email, Roles: roles, Claims: req.Claims, Metadata: req.Metadata,
		ExternalID: req.ExternalID, ClientID: req.ClientID, EmailMatch: match, Inviter: req.Inviter,
		Link: linkForm(req.Link), Status: StatusPending, CreatedAt: now, ExpiresAt: now.Add(ttl), SendEmail: send,
		Events: []Event{{Type: "created", At: now, Detail: map[string]string{"inviter": req.Inviter}}},
	}
	if !send {
		inv.EmailStatus = "not_requested"
	}
	return inv, send, nil
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

// Create validates and stores an invitation. When a pending invitation with
// the same external_id exists, it returns that one with existed=true and no
// token (its link was shown when it was created).
func (s *Invitations) Create(ctx context.Context, req CreateRequest) (inv *Invitation, token string, existed bool, err error) {
	inv, _, err = s.Validate(req)
	if err != nil {
		return nil, "", false, err
	}
	token, inv.TokenHash = NewToken()
	stored, err := s.o.Store.CreateInvitation(ctx, inv)
	if errors.Is(err, ErrConflict) && stored != nil {
		return stored, "", true, nil
	}
	if err != nil {
		return nil, "", false, fmt.Errorf("storing the invitation: %w", err)
	}
	return stored, token, false, nil
}

// Check looks a token up without consuming it and says why it is unusable:
// ErrNotFound (unknown, malformed, or replaced by a resend),
// ErrInvitationRedeemed, ErrInvitationRevoked, ErrInvitationDeclined or
// ErrInvitationExpired.
func (s *Invitations) Check(ctx context.Context, token string) (*Invitation, error) {
	hash, ok := ParseToken(token)
	if !ok {
		return nil, ErrNotFound
	}
	return s.CheckHash(ctx, hash)
}

// CheckHash is Check for a stored hash.
func (s *Invitations) CheckHash(ctx context.Context, hash string) (*Invitation, error) {
	inv, err := s.o.Store.GetInvitationByTokenHash(ctx, hash)
	if err != nil {
		return nil, err
	}
	switch inv.EffectiveStatus(s.o.Now()) {
	case StatusRedeemed:
		return inv, ErrInvitationRedeemed
	case StatusRevoked:
		return inv, ErrInvitationRevoked
	case StatusDeclined:
		return inv, ErrInvitationDeclined
	case StatusExpired:
		return inv, ErrInvitationExpired
	}
	return inv, nil
}

// Redeemer is the person signing in.
type Redeemer struct {
	UserID        string
	Identity      string // iss|sub
	Connection    string
	Email         string
	EmailVerified bool
	// Approve, when set, is asked last, before the redemption commits (the
	// redemption hook): it may refuse (*DeniedError) or add claims.
	Approve func(ctx context.Context, inv *Invitation) (map[string]any, error)
}

// DeniedError is a refusal by the redemption hook, with the reason to show.
type DeniedError struct{ Reason string }

func (e *DeniedError) Error() string { return "redemption denied: " + e.Reason }

// Redeem applies the invitation's email policy, then redeems it atomically
// (single use under concurrency is the store's guarantee). conflicts are the
// offered claims the user already held with another value: they were kept.
func (s *Invitations) Redeem(ctx context.Context, hash string, who Redeemer) (inv *Invitation, g *Grant, conflicts []ClaimConflict, err error) {
	inv, err = s.CheckHash(ctx, hash)
	if err != nil {
		return inv, nil, nil, err
	}
	if err := EmailMatches(inv.EmailMatch, inv.Email, who.Email, who.EmailVerified); err != nil {
		return inv, nil, nil, err
	}
	var extra map[string]any
	if who.Approve != nil {
		if extra, err = who.Approve(ctx, inv); err != nil {
			return inv, nil, nil, err
		}
	}
	inv, g, err = s.o.Store.RedeemInvitation(ctx, hash, Redemption{UserID: who.UserID, Identity: who.Identity, Connection: who.Connection, At: s.o.Now(), Claims: extra})
	if err != nil {
		return inv, nil, nil, err
	}
	return inv, g, ClaimConflicts(g, RedemptionClaims(inv, extra)), nil
}

// EmailMatches applies an email_match policy. An account without a verified
// email can only redeem "any". Emails compare by EmailKey (ASCII case only).
func EmailMatches(policy, invited, got string, verified bool) error {
	switch policy {
	case MatchAny, "":
		return nil
	case MatchExact:
		if verified && SameEmail(invited, got) {
			return nil
		}
	case MatchDomain:
		if verified && EmailDomain(got) != "" && EmailDomain(invited) == EmailDomain(got) {
			return nil
		}
	}
	return ErrEmailMismatch
}

// Revoke revokes an invitation; ErrInvitationRedeemed once it was used.
func (s *Invitations) Revoke(ctx context.Context, id string) (*Invitation, error) {
	return s.o.Store.RevokeInvitation(ctx, id, s.o.Now())
}

// Decline records the invitee's Decline of the invitation with this token
// hash (userID: the account signed in); it stays declined for good.
func (s *Invitations) Decline(ctx context.Context, hash, userID string) (*Invitation, error) {
	inv, err := s.o.Store.GetInvitationByTokenHash(ctx, hash)
	if err != nil {
		return nil, err
	}
	return s.o.Store.DeclineInvitation(ctx, inv.ID, userID, s.o.Now())
}

// Resend gives a pending (or expired) invitation a new token and a new
// expiry of the default lifetime; the old link dies at once.
func (s *Invitations) Resend(ctx context.Context, id string) (*Invitation, string, error) {
	cur, err := s.o.Store.GetInvitation(ctx, id)
	if err != nil {
		return nil, "", err
	}
	ttl := s.o.DefaultTTL
	if orig := cur.ExpiresAt.Sub(cur.CreatedAt); orig > 0 && orig < ttl {
		ttl = orig // keep a deliberately short lifetime short
	}
	token, hash := NewToken()
	now := s.o.Now()
	inv, err := s.o.Store.ReplaceInvitationToken(ctx, id, hash, now.Add(ttl), now)
	if err != nil {
		return nil, "", err
	}
	return inv, token, nil
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
