package bolt_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/usher-oidc/usher/grants"
	boltstore "github.com/usher-oidc/usher/store/bolt"
	"github.com/usher-oidc/usher/store/conformance"
)

// The email and external-ID indexes the search reads were written by every
// bbolt file since the first: a file written and reopened is searched
// without any upgrade step.
func TestSearchBackfill(t *testing.T) {
	t.Parallel()
	conformance.RunSearchBackfill(t, func(t *testing.T, clock *conformance.Clock, invs []*grants.Invitation) grants.Store {
		path := filepath.Join(t.TempDir(), "usher.db")
		s := open(t, path, clock.Now)
		for _, inv := range invs {
			if _, err := s.CreateInvitation(t.Context(), inv); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		return open(t, path, clock.Now)
	})
}

// searchFixture returns n invitations user-000000@example.com… with every
// thousandth one grace-…@example.com instead: what a search for "grace"
// finds.
func searchFixture(n int, now time.Time) []*grants.Invitation {
	invs := make([]*grants.Invitation, n)
	for i := range invs {
		invs[i] = &grants.Invitation{ID: fmt.Sprintf("inv-%06d", i), TokenHash: fmt.Sprintf("h-%06d", i),
			Email: fmt.Sprintf("user-%06d@example.com", i), ExternalID: fmt.Sprintf("crm-%06d", i),
			Status: grants.StatusPending, CreatedAt: now.Add(time.Duration(i) * time.Millisecond), ExpiresAt: now.Add(time.Hour)}
		if i%1000 == 0 {
			invs[i].Email = fmt.Sprintf("grace-%06d@example.com", i)
		}
	}
	return invs
}

func fillForSearch(t testing.TB, s *boltstore.Store, n int, now time.Time) {
	t.Helper()
	if err := boltstore.PutInvitations(s, searchFixture(n, now)); err != nil {
		t.Fatal(err)
	}
}

// A prefix search reads the index rows of its prefix and no others: the
// count of rows read does not grow with the store.
func TestSearchReadsOnlyItsRange(t *testing.T) {
	t.Parallel()
	s := open(t, filepath.Join(t.TempDir(), "usher.db"), time.Now)
	now := time.Now()
	const n = 10_000
	fillForSearch(t, s, n, now)
	for _, c := range []struct {
		f           grants.InvitationFilter
		wantIDs     int
		wantVisited int
	}{
		{grants.InvitationFilter{EmailPrefix: "grace"}, n / 1000, n / 1000},
		{grants.InvitationFilter{EmailPrefix: "grace", Limit: 3}, 3, 4}, // the fourth row says there is a next page
		{grants.InvitationFilter{EmailPrefix: "user-00012"}, 10, 10},
		{grants.InvitationFilter{ExternalIDPrefix: "crm-00999"}, 10, 10},
		{grants.InvitationFilter{EmailPrefix: "nobody"}, 0, 0},
	} {
		ids, visited, err := boltstore.SearchVisited(s, c.f, now)
		if err != nil {
			t.Fatal(err)
		}
		if len(ids) != c.wantIDs || visited != c.wantVisited {
			t.Errorf("search %+v: %d results from %d index rows, want %d from %d", c.f, len(ids), visited, c.wantIDs, c.wantVisited)
		}
	}
}

// BenchmarkPrefixSearch: the cost of a search for "grace" is the rows of
// its range (rows/op), whatever the number of invitations stored.
func BenchmarkPrefixSearch(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 50_000} {
		b.Run(fmt.Sprintf("invitations=%d", n), func(b *testing.B) {
			s := open(b, filepath.Join(b.TempDir(), "usher.db"), time.Now)
			now := time.Now()
			fillForSearch(b, s, n, now)
			f := grants.InvitationFilter{EmailPrefix: "grace", Limit: 1}
			visited := 0
			for b.Loop() {
				ids, v, err := boltstore.SearchVisited(s, f, now)
				if err != nil || len(ids) != 1 {
					b.Fatal(ids, err)
				}
				visited += v
			}
			b.ReportMetric(float64(visited)/float64(b.N), "rows/op")
		})
	}
}
