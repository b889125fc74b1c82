package bolt

import (
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/usher-oidc/usher/grants"
)

// SearchVisited runs one page of the prefix search f asks for and reports,
// with the page's IDs, how many index rows it read.
func SearchVisited(s *Store, f grants.InvitationFilter, now time.Time) (ids []string, visited int, err error) {
	field, prefix := f.SearchIndex()
	limit := f.Limit
	if limit <= 0 {
		limit = defaultListLimit
	}
	page, _, visited, err := s.searchPage(f, field, prefix, limit, now)
	for _, inv := range page {
		ids = append(ids, inv.ID)
	}
	return ids, visited, err
}

// PutInvitations stores invs through putInvitation (records and every
// index) in one transaction: a test needing thousands of invitations
// would otherwise wait for as many commits.
func PutInvitations(s *Store, invs []*grants.Invitation) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, inv := range invs {
			if err := putInvitation(tx, nil, inv); err != nil {
				return err
			}
		}
		return nil
	})
}
