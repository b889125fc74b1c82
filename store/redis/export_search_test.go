package redis

import (
	"context"
	"time"

	"github.com/usher-oidc/usher/grants"
)

// SearchVisited runs one page of the prefix search f asks for and reports,
// with the page's IDs, how many index members it read.
func SearchVisited(ctx context.Context, s *Store, f grants.InvitationFilter, now time.Time) (ids []string, visited int, err error) {
	field, prefix := f.SearchIndex()
	limit := f.Limit
	if limit <= 0 {
		limit = defaultListLimit
	}
	page, _, visited, err := s.searchPage(ctx, f, field, prefix, limit, now)
	for _, inv := range page {
		ids = append(ids, inv.ID)
	}
	return ids, visited, err
}

// DropInvitationSearch removes inv's search entries, for tests.
func DropInvitationSearch(ctx context.Context, s *Store, inv *grants.Invitation) {
	s.dropSearchEntries(ctx, s.searchEntries(inv))
}
