package grants

import "strings"

// Prefix search over invitations.
//
// EmailPrefix matches case-insensitively, like Email ("grace" finds
// Grace.Hopper@example.com). ExternalIDPrefix matches exactly as given, like
// ExternalID: external IDs are the caller's own keys, where "CRM-1" and
// "crm-1" may well be two records.
//
// Both backends serve a prefix from a lexicographic index (email or external
// ID, then invitation ID), so a search costs what it finds, never a walk over
// every invitation. Such a listing therefore comes in index order — by email
// (or external ID), then ID — not newest first, and its cursor is a position
// in that index. The exact Email and ExternalID filters, when set, drive the
// listing instead (their indexes are narrower) and keep newest first.

// SearchField names the prefix index that drives a listing.
type SearchField string

const (
	SearchEmail      SearchField = "email"
	SearchExternalID SearchField = "external_id"
)

// SearchIndex says which prefix index drives a listing under f and the key
// prefix to read there (the email prefix in EmailKey form); "" when none does.
func (f *InvitationFilter) SearchIndex() (SearchField, string) {
	switch {
	case f.Email != "" || f.ExternalID != "":
		return "", ""
	case EmailKey(f.EmailPrefix) != "":
		return SearchEmail, EmailKey(f.EmailPrefix)
	case f.ExternalIDPrefix != "":
		return SearchExternalID, f.ExternalIDPrefix
	}
	return "", ""
}

// SearchKey is inv's key in the prefix index of field ("" when inv has no
// value there): the value the index orders by.
func SearchKey(inv *Invitation, field SearchField) string {
	if field == SearchEmail {
		return EmailKey(inv.Email)
	}
	return inv.ExternalID
}

// matchesSearch applies the prefix and creation-time filters.
func (f *InvitationFilter) matchesSearch(inv *Invitation) bool {
	switch {
	case f.EmailPrefix != "" && !strings.HasPrefix(EmailKey(inv.Email), EmailKey(f.EmailPrefix)),
		f.ExternalIDPrefix != "" && !strings.HasPrefix(inv.ExternalID, f.ExternalIDPrefix),
		!f.CreatedSince.IsZero() && inv.CreatedAt.Before(f.CreatedSince),
		!f.CreatedUntil.IsZero() && !inv.CreatedAt.Before(f.CreatedUntil):
		return false
	}
	return true
}
