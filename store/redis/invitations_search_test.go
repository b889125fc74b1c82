package redis_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/store/conformance"
	redisstore "github.com/usher-oidc/usher/store/redis"
)

// legacySearch stores invs, then deletes the prefix indexes and their
// marker, as a store from before them looks; open returns the upgraded
// store on that state.
func legacySearch(t *testing.T, s *redisstore.Store, invs []*grants.Invitation, open func() *redisstore.Store) grants.Store {
	for _, inv := range invs {
		if _, err := s.CreateInvitation(t.Context(), inv); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{"inv:se", "inv:sx", "inv:s:ready"} { // one slot each: one DEL each
		if err := s.Client().Del(t.Context(), s.Prefix()+k).Err(); err != nil {
			t.Fatal(err)
		}
	}
	return open()
}

// Invitations stored before the prefix indexes existed are found once
// upgraded: Open starts the backfill, the first search waits for it.
func TestSearchBackfill(t *testing.T) {
	t.Parallel()
	t.Run("Standalone", func(t *testing.T) {
		t.Parallel()
		conformance.RunSearchBackfill(t, func(t *testing.T, clock *conformance.Clock, invs []*grants.Invitation) grants.Store {
			old := newStandalone(t, clock.Now)
			return legacySearch(t, old, invs, func() *redisstore.Store {
				s, err := redisstore.Open(redisstore.Config{URL: "redis://" + standalone.addr()}, redisstore.Options{Now: clock.Now, Prefix: old.Prefix()})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = s.Close() })
				return s
			})
		})
	})
	t.Run("Cluster", func(t *testing.T) {
		t.Parallel()
		addrs := startCluster(t)
		conformance.RunSearchBackfill(t, func(t *testing.T, clock *conformance.Clock, invs []*grants.Invitation) grants.Store {
			prefix := uniquePrefix()
			open := func() *redisstore.Store {
				s := redisstore.New(redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs}), redisstore.Options{Now: clock.Now, Prefix: prefix})
				t.Cleanup(func() { _ = s.Close() })
				return s
			}
			return legacySearch(t, open(), invs, open)
		})
	})
}

// fillForSearch stores n invitations user-000000@example.com… with every
// thousandth one grace-…@example.com instead: what a search for "grace"
// finds.
func fillForSearch(t testing.TB, s grants.Store, n int, now time.Time) {
	t.Helper()
	const workers = 16
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				inv := &grants.Invitation{ID: fmt.Sprintf("inv-%06d", i), TokenHash: fmt.Sprintf("h-%06d", i),
					Email: fmt.Sprintf("user-%06d@example.com", i), ExternalID: fmt.Sprintf("crm-%06d", i),
					Status: grants.StatusPending, CreatedAt: now.Add(time.Duration(i) * time.Millisecond), ExpiresAt: now.Add(time.Hour)}
				if i%1000 == 0 {
					inv.Email = fmt.Sprintf("grace-%06d@example.com", i)
				}
				if _, err := s.CreateInvitation(t.Context(), inv); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// A prefix search reads the members of its prefix and no others: the count
// does not grow with the store.
func TestSearchReadsOnlyItsRange(t *testing.T) {
	t.Parallel()
	s := newStandalone(t, time.Now)
	now := time.Now()
	const n = 10_000
	fillForSearch(t, s, n, now)
	for _, c := range []struct {
		f           grants.InvitationFilter
		wantIDs     int
		wantVisited int
	}{
		{grants.InvitationFilter{EmailPrefix: "grace"}, n / 1000, n / 1000},
		{grants.InvitationFilter{EmailPrefix: "grace", Limit: 3}, 3, 8}, // one batch: 2×(limit+1) members
		{grants.InvitationFilter{EmailPrefix: "user-00012"}, 10, 10},
		{grants.InvitationFilter{ExternalIDPrefix: "crm-00999"}, 10, 10},
		{grants.InvitationFilter{EmailPrefix: "nobody"}, 0, 0},
	} {
		ids, visited, err := redisstore.SearchVisited(t.Context(), s, c.f, now)
		if err != nil {
			t.Fatal(err)
		}
		if len(ids) != c.wantIDs || visited != c.wantVisited {
			t.Errorf("search %+v: %d results from %d index members, want %d from %d", c.f, len(ids), visited, c.wantIDs, c.wantVisited)
		}
	}
}

// BenchmarkPrefixSearch: the cost of a search for "grace" is the members
// of its range (rows/op), whatever the number of invitations stored.
func BenchmarkPrefixSearch(b *testing.B) {
	for _, n := range []int{1_000, 10_000} {
		b.Run(fmt.Sprintf("invitations=%d", n), func(b *testing.B) {
			s := newStandalone(b, time.Now)
			now := time.Now()
			fillForSearch(b, s, n, now)
			f := grants.InvitationFilter{EmailPrefix: "grace", Limit: 1}
			visited := 0
			for b.Loop() {
				ids, v, err := redisstore.SearchVisited(b.Context(), s, f, now)
				if err != nil || len(ids) != 1 {
					b.Fatal(ids, err)
				}
				visited += v
			}
			b.ReportMetric(float64(visited)/float64(b.N), "rows/op")
		})
	}
}

// An entry that no longer matches its record (a crash between the index
// write and the record's, or a dropped record) never shows; the drop helper
// takes an invitation out of the search.
func TestSearchSkipsStaleEntries(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := newStandalone(t, time.Now)
	now := time.Now()
	inv := &grants.Invitation{ID: "inv-1", TokenHash: "h-1", Email: "grace@example.com", ExternalID: "crm-1",
		Status: grants.StatusPending, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	if _, err := s.CreateInvitation(ctx, inv); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"zed@example.com\x00inv-1", "zed@example.com\x00inv-gone"} {
		if err := s.Client().ZAdd(ctx, s.Prefix()+"inv:se", redis.Z{Member: m}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	search := func(f grants.InvitationFilter) []string {
		t.Helper()
		ids, _, err := redisstore.SearchVisited(ctx, s, f, now)
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	if got := search(grants.InvitationFilter{EmailPrefix: "zed"}); len(got) != 0 {
		t.Errorf("stale entries showed: %v", got)
	}
	if got := search(grants.InvitationFilter{EmailPrefix: "grace"}); len(got) != 1 {
		t.Errorf("grace: %v", got)
	}
	redisstore.DropInvitationSearch(ctx, s, inv)
	for _, f := range []grants.InvitationFilter{{EmailPrefix: "grace"}, {ExternalIDPrefix: "crm"}} {
		if got := search(f); len(got) != 0 {
			t.Errorf("%+v after the drop: %v", f, got)
		}
	}
}
