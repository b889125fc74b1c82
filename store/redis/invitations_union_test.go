package redis_test

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/store"
	redisstore "github.com/usher-oidc/usher/store/redis"
)

// At v4 a create writes no inv:t entry: an invitation with a client goes to
// ic:<client> with the client recorded in inv:clients, one without to
// inv:nc; below v4 every invitation is in inv:t and neither of the others
// is written. Either way a create takes one round trip (every index entry,
// then the record, in one pipeline). A client set later moves it from inv:nc to its
// client's set.
func TestV4InvitationListingKeys(t *testing.T) {
	t.Parallel()
	for _, format := range []string{redisstore.RecordFormatV3, redisstore.RecordFormatV4} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			ctx := ctxT(t)
			s, _, hook := countedStoreFormat(t, uniquePrefix(), format)
			now := time.Now().UTC()
			warm, withClient, noClient := pendingInvitation("inv_a", now), pendingInvitation("inv_c", now), pendingInvitation("inv_nc", now)
			noClient.ClientID = ""
			for i, inv := range []*grants.Invitation{warm, withClient, noClient} {
				before := hook.n.Load()
				_, err := s.CreateInvitation(ctx, inv)
				must(t, "create", err)
				if n := hook.n.Load() - before; i > 0 && n != 1 { // the first loads the scripts
					t.Errorf("create %s: %d round trips, want 1", inv.ID, n)
				}
			}
			v4 := format == redisstore.RecordFormatV4
			checkMembers(t, s, "inv:t", map[string]bool{"inv_c": !v4, "inv_nc": !v4})
			checkMembers(t, s, "inv:nc", map[string]bool{"inv_c": false, "inv_nc": v4})
			checkMembers(t, s, "ic:spa", map[string]bool{"inv_c": true, "inv_nc": false})
			clients, err := s.Client().SMembers(ctx, s.Prefix()+"inv:clients").Result()
			must(t, "clients", err)
			if want := map[bool][]string{true: {"spa"}, false: {}}[v4]; !slices.Equal(clients, want) {
				t.Errorf("inv:clients: %v, want %v", clients, want)
			}
			_, err = s.UpdateInvitation(ctx, "inv_nc", func(inv *grants.Invitation) error { inv.ClientID = "web"; return nil })
			must(t, "set a client", err)
			checkMembers(t, s, "inv:nc", map[string]bool{"inv_nc": false})
			checkMembers(t, s, "ic:web", map[string]bool{"inv_nc": true})
			if in, err := s.Client().SIsMember(ctx, s.Prefix()+"inv:clients", "web").Result(); err != nil || in != v4 {
				t.Errorf("web in inv:clients: %v %v, want %v", in, err, v4)
			}
			checkAll(t, s, now, []string{"inv_nc", "inv_c", "inv_a"})
		})
	}
}

// checkMembers: whether each ID is in the sorted set key (without prefix).
func checkMembers(t *testing.T, s *redisstore.Store, key string, want map[string]bool) {
	t.Helper()
	for id, in := range want {
		_, err := s.Client().ZScore(ctxT(t), s.Prefix()+key, id).Result()
		if (err == nil) != in {
			t.Errorf("%s in %s: %v (%v), want %v", id, key, err == nil, err, in)
		}
	}
}

// A rollout v3 → v4 → v3 with invitations of several clients and of none:
// replicas writing either format list every invitation exactly once, newest
// first (ties by ID, descending), unfiltered and by client, in pages of any
// size; export and the search backfill see them all; a client changed on
// either side keeps the invitation listed.
func TestInvitationListingRollout(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	v3, v4 := replicas(t, redisstore.RecordFormatV3, redisstore.RecordFormatV4)
	now := time.Now().UTC().Truncate(time.Second)
	var all []*grants.Invitation
	create := func(s *redisstore.Store, n int, client string) {
		for range n {
			i := len(all)
			inv := pendingInvitation(fmt.Sprintf("inv_%02d", i), now.Add(time.Duration(i/3)*time.Second)) // ties in threes
			inv.ClientID = client
			_, err := s.CreateInvitation(ctx, inv)
			must(t, "create", err)
			all = append(all, inv)
		}
	}
	create(v3, 3, "a")
	create(v3, 2, "b")
	create(v3, 2, "")
	create(v4, 2, "a")
	create(v4, 2, "c")
	create(v4, 3, "")
	create(v4, 1, "b")
	// A client changed on the other side: v4 sets one on a v3 record without
	// one, v3 clears the one of a v4 record and sets one on a v4 record
	// without one.
	setClient := func(s *redisstore.Store, id, client string) {
		_, err := s.UpdateInvitation(ctx, id, func(inv *grants.Invitation) error { inv.ClientID = client; return nil })
		must(t, "set client of "+id, err)
		for _, inv := range all {
			if inv.ID == id {
				inv.ClientID = client
			}
		}
	}
	setClient(v4, "inv_05", "d")
	setClient(v3, "inv_09", "")
	setClient(v3, "inv_12", "e")
	create(v3, 2, "c") // going back to v3
	create(v3, 1, "")
	for _, s := range []*redisstore.Store{v3, v4} {
		checkAll(t, s, now, ids(deref(all)))
		for _, client := range []string{"a", "b", "c", "d", "e"} {
			var want []*grants.Invitation
			for _, inv := range all {
				if inv.ClientID == client {
					want = append(want, inv)
				}
			}
			checkPages(t, s, now, grants.InvitationFilter{ClientID: client}, newestFirst(ids(deref(want))))
		}
		var exported []string
		must(t, "export", s.Export(ctx, store.Invitations, func(rec json.RawMessage) error {
			var inv grants.Invitation
			err := json.Unmarshal(rec, &inv)
			exported = append(exported, inv.ID)
			return err
		}))
		slices.Sort(exported)
		if want := slices.Sorted(slices.Values(ids(deref(all)))); !slices.Equal(exported, want) {
			t.Errorf("exported %v, want %v", exported, want)
		}
	}
	for _, k := range []string{"inv:se", "inv:sx", "inv:s:ready"} {
		must(t, "drop search", v4.Client().Del(ctx, v4.Prefix()+k).Err())
	}
	fresh := redisstore.New(redis.NewClient(&redis.Options{Addr: standalone.addr()}), redisstore.Options{Prefix: v4.Prefix(), RecordFormat: redisstore.RecordFormatV4})
	t.Cleanup(func() { _ = fresh.Close() })
	n, err := fresh.BackfillInvitationSearch(ctx)
	if err != nil || n != len(all) {
		t.Errorf("backfill read %d, %v; want %d", n, err, len(all))
	}
	checkPages(t, fresh, now, grants.InvitationFilter{EmailPrefix: "inv_"}, slices.Sorted(slices.Values(ids(deref(all)))))
}

// checkAll: s lists want (newest first) unfiltered, whole and in pages.
func checkAll(t *testing.T, s *redisstore.Store, now time.Time, want []string) {
	t.Helper()
	checkPages(t, s, now, grants.InvitationFilter{}, newestFirst(want))
}

// newestFirst sorts the tests' IDs newest first: they sort as they were
// created, ties by ID descending.
func newestFirst(ids []string) []string {
	return slices.SortedFunc(slices.Values(ids), func(a, b string) int { return cmp.Compare(b, a) })
}

// checkPages lists f page by page at several limits; each must give want.
func checkPages(t *testing.T, s *redisstore.Store, now time.Time, f grants.InvitationFilter, want []string) {
	t.Helper()
	for _, limit := range []int{1, 2, 3, 7, 0} {
		f := f
		f.Limit = limit
		var got []string
		for range len(want) + 1 {
			list, next, err := s.ListInvitations(ctxT(t), f, now)
			must(t, "list", err)
			got = append(got, ids(list)...)
			if f.Cursor = next; next == "" {
				break
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("%+v, limit %d: %v, want %v", f, limit, got, want)
		}
	}
}

func deref(invs []*grants.Invitation) []grants.Invitation {
	out := make([]grants.Invitation, len(invs))
	for i, inv := range invs {
		out[i] = *inv
	}
	return out
}
