package client

import (
	"fmt"
	"strings"
	"time"

	"github.com/usher-oidc/usher/grants"
)

// Scopes of the admin API.
const (
	ScopeRead  = "invitations:read"
	ScopeWrite = "invitations:write"
	// ScopeStoreBackup allows GET /api/store/backup. usher grants it to no
	// client unless the operator lists it in that client's scopes.
	ScopeStoreBackup = "store:backup"
)

// CreateRequest is the body of POST /api/invitations. The server decodes it
// strictly (an unknown member is refused) and hands it to grants.Service
// as a grants.CreateRequest (Grants).
type CreateRequest struct {
	Email      string         `json:"email"`
	Roles      []string       `json:"roles,omitempty"`
	Claims     map[string]any `json:"claims,omitempty"`
	Metadata   map[string]any `json:"metadata,omitempty"`
	ExternalID string         `json:"external_id,omitempty"`
	ClientID   string         `json:"client_id,omitempty"`
	// ExpiresIn in seconds; nil = the configured default.
	ExpiresIn  *int64 `json:"expires_in,omitempty"`
	SendEmail  *bool  `json:"send_email,omitempty"`
	EmailMatch string `json:"email_match,omitempty"`
	Inviter    string `json:"inviter,omitempty"`
	// Link: "invite" (default) or "authorize", the link's form.
	Link string `json:"link,omitempty"`
	// Locale: the BCP 47 language of the invitation mail (default English).
	Locale string `json:"locale,omitempty"`
}

// Grants is r as grants.Service takes it; whether the caller may grant
// privileged roles is the server's to decide (from who calls), so it is
// never part of the request.
func (r CreateRequest) Grants() grants.CreateRequest {
	return grants.CreateRequest{
		Email: r.Email, Roles: r.Roles, Claims: r.Claims, Metadata: r.Metadata, ExternalID: r.ExternalID,
		ClientID: r.ClientID, ExpiresIn: r.ExpiresIn, SendEmail: r.SendEmail, EmailMatch: r.EmailMatch,
		Inviter: r.Inviter, Link: r.Link, Locale: r.Locale,
	}
}

// Invitation is an invitation as the API shows it. URL is set only when a
// token was just minted (create, resend): usher never stores it in clear.
type Invitation struct {
	ID                 string         `json:"id"`
	Status             grants.Status  `json:"status"`
	Email              string         `json:"email"`
	Roles              []string       `json:"roles"`
	Claims             map[string]any `json:"claims"`
	Metadata           map[string]any `json:"metadata"`
	ExternalID         string         `json:"external_id,omitempty"`
	ClientID           string         `json:"client_id,omitempty"`
	EmailMatch         string         `json:"email_match"`
	Inviter            string         `json:"inviter,omitempty"`
	CreatedAt          time.Time      `json:"created_at"`
	ExpiresAt          time.Time      `json:"expires_at"`
	EmailStatus        string         `json:"email_status"`
	EmailError         string         `json:"email_error,omitempty"`
	RedeemedAt         *time.Time     `json:"redeemed_at,omitempty"`
	RedeemedBy         string         `json:"redeemed_by,omitempty"`
	RedeemedConnection string         `json:"redeemed_connection,omitempty"`
	RevokedAt          *time.Time     `json:"revoked_at,omitempty"`
	DeclinedAt         *time.Time     `json:"declined_at,omitempty"`
	DeclinedBy         string         `json:"declined_by,omitempty"`
	Events             []grants.Event `json:"events"`
	MirrorStatus       string         `json:"mirror_status,omitempty"`
	URL                string         `json:"url,omitempty"`
	// Link is the form of url: invite or authorize.
	Link string `json:"link"`
	// Locale is the language of the invitation mail, when one was asked for.
	Locale string `json:"locale,omitempty"`
	// UnsafeClaims: stored claim names never served (grants.ValidateClaimName).
	UnsafeClaims []string `json:"unsafe_claims,omitempty"`
}

// InvitationList is a page of GET /api/invitations; NextCursor, when set,
// asks for the next one.
type InvitationList struct {
	Invitations []Invitation `json:"invitations"`
	NextCursor  string       `json:"next_cursor,omitempty"`
}

// ProblemTypeBase prefixes every problem type URI usher answers.
const ProblemTypeBase = "https://usher.dev/problems/"

// Problem is an RFC 9457 problem details object: every error the admin API
// answers. As an error it is what a client got back.
type Problem struct {
	Type   string              `json:"type"`
	Title  string              `json:"title"`
	Status int                 `json:"status"`
	Detail string              `json:"detail,omitempty"`
	Errors []grants.FieldError `json:"errors,omitempty"`
}

// Slug is the last part of the problem type ("idempotency-mismatch").
func (p *Problem) Slug() string {
	return p.Type[strings.LastIndexByte(p.Type, '/')+1:]
}

// Error is the title, the detail, then one line per field error.
func (p *Problem) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (HTTP %d)", p.Title, p.Status)
	if p.Detail != "" {
		b.WriteString(": " + p.Detail)
	}
	for _, e := range p.Errors {
		fmt.Fprintf(&b, "\n  %s: %s", e.Field, e.Message)
	}
	return b.String()
}

// OneLine is the problem for a per-row report: the field errors when there
// are any (they say what to fix), else the title and detail.
func (p *Problem) OneLine() string {
	if len(p.Errors) == 0 {
		return JoinNonEmpty(": ", p.Title, p.Detail)
	}
	parts := make([]string, 0, len(p.Errors))
	for _, e := range p.Errors {
		parts = append(parts, e.Field+": "+e.Message)
	}
	return strings.Join(parts, "; ")
}

// JoinNonEmpty joins the parts that are not empty.
func JoinNonEmpty(sep string, parts ...string) string {
	var out []string
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, sep)
}
