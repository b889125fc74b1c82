package redis_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
	redisstore "github.com/usher-oidc/usher/store/redis"
)

// TestTokenLookupRollout: replicas writing v4 and v5 on one prefix, the
// writing switched v4 → v5 → v4, tokens replaced on either side. Each
// replica finds every invitation by its token hash (and none by a replaced
// one), lists it exactly once and in order unfiltered, by client, by email
// and by prefix search on email and external_id, and refuses a second
// invitation with a token hash the other replica wrote. v5 writes the
// short form ih: only (an ID it cannot pack: the exact form), v4 ib:.
func TestTokenLookupRollout(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	v4, v5 := replicas(t, redisstore.RecordFormatV4, redisstore.RecordFormatV5)
	now := time.Now().UTC().Truncate(time.Second)
	var all []*grants.Invitation
	create := func(s *redisstore.Store, id, client string) {
		i := len(all)
		inv := pendingInvitation(id, now.Add(time.Duration(i/3)*time.Second)) // ties in threes
		inv.ClientID, inv.ExternalID = client, fmt.Sprintf("crm-%02d", i)
		inv.Email = fmt.Sprintf("p%02d@example.com", i)
		_, err := s.CreateInvitation(ctx, inv)
		must(t, "create "+id, err)
		all = append(all, inv)
	}
	for i := range 4 {
		create(v4, fmt.Sprintf("inv-0%d4Ab_cdEFGH-ijk", i), "a")
	}
	for i := range 4 {
		create(v5, fmt.Sprintf("inv-1%d5Ab_cdEFGH-ijk", i), []string{"a", "b"}[i%2])
	}
	create(v5, "inv-2a.not.base64", "b") // kept as text: the exact form
	create(v5, "inv-2bc", "")            // 3 characters: not packed either
	for i := range 3 {
		create(v4, fmt.Sprintf("inv-3%d4Ab_cdEFGH-ijk", i), "")
	}
	for i, inv := range all {
		short, field := redisstore.ShortTokenEntry(v5, inv.TokenHash)
		_, err := v5.Client().HGet(ctx, v5.Prefix()+short, field).Result()
		_, packable := redisstore.PackID(inv.ID)
		if inShort, want := err == nil, i >= 4 && i < 10 && packable; inShort != want {
			t.Errorf("%s in ih: %v, want %v", inv.ID, inShort, want)
		}
	}
	// Tokens replaced on the other side.
	retoken := func(s *redisstore.Store, inv *grants.Invitation) string {
		old := inv.TokenHash
		inv.TokenHash = strings.Repeat(inv.ID[4:6], 32)
		_, err := s.ReplaceInvitationToken(ctx, inv.ID, inv.TokenHash, now.Add(48*time.Hour), now)
		must(t, "replace token of "+inv.ID, err)
		return old
	}
	replaced := []string{retoken(v5, all[0]), retoken(v4, all[5]), retoken(v5, all[6])}
	// Emails changed on the other side: each leaves its old members, in
	// either form.
	for _, c := range []struct {
		s     *redisstore.Store
		i     int
		email string
	}{{v5, 1, "P01b@example.com"}, {v4, 7, "p07b@example.com"}, {v5, 8, "p08b@example.com"}} {
		_, err := c.s.UpdateInvitation(ctx, all[c.i].ID, func(inv *grants.Invitation) error { inv.Email = c.email; return nil })
		must(t, "update email", err)
		all[c.i].Email = c.email
	}
	byEmail := slices.Clone(all) // the search index orders them by lower(email)
	slices.SortFunc(byEmail, func(a, b *grants.Invitation) int {
		return strings.Compare(strings.ToLower(a.Email), strings.ToLower(b.Email))
	})

	for _, s := range []*redisstore.Store{v4, v5} {
		for _, inv := range all {
			got, err := s.GetInvitationByTokenHash(ctx, inv.TokenHash)
			if err != nil || got.ID != inv.ID {
				t.Errorf("%s by token hash: %v, %v", inv.ID, got, err)
			}
		}
		for _, h := range replaced {
			if got, err := s.GetInvitationByTokenHash(ctx, h); !errors.Is(err, grants.ErrNotFound) {
				t.Errorf("a replaced token hash found %v, %v", got, err)
			}
		}
		checkAll(t, s, now, ids(deref(all)))
		for _, client := range []string{"a", "b"} {
			var want []string
			for _, inv := range all {
				if inv.ClientID == client {
					want = append(want, inv.ID)
				}
			}
			checkPages(t, s, now, grants.InvitationFilter{ClientID: client}, newestFirst(want))
		}
		for _, inv := range all {
			checkPages(t, s, now, grants.InvitationFilter{Email: strings.ToUpper(inv.Email)}, []string{inv.ID})
		}
		checkPages(t, s, now, grants.InvitationFilter{EmailPrefix: "P"}, ids(deref(byEmail)))
		checkPages(t, s, now, grants.InvitationFilter{ExternalIDPrefix: "crm-"}, ids(deref(all))) // crm-00…: creation order
	}
	// The search backfill, run again at v5 over members of both forms and
	// some missing, adds the missing ones only.
	must(t, "forget the backfill", v5.Client().Del(ctx, v5.Prefix()+"inv:s:ready").Err())
	for _, inv := range []*grants.Invitation{all[2], all[5]} { // one of v4, one of v5
		for _, k := range []string{"inv:se", "inv:sx"} {
			must(t, "unindex", v5.Client().ZRemRangeByLex(ctx, v5.Prefix()+k, "["+strings.ToLower(inv.Email[:3]), "("+strings.ToLower(inv.Email[:3])+"\xff").Err())
		}
	}
	must(t, "unindex external_id", v5.Client().Del(ctx, v5.Prefix()+"inv:sx").Err())
	fresh := redisstore.New(redis.NewClient(&redis.Options{Addr: standalone.addr()}), redisstore.Options{Prefix: v5.Prefix(), RecordFormat: redisstore.RecordFormatV5})
	t.Cleanup(func() { _ = fresh.Close() })
	if n, err := fresh.BackfillInvitationSearch(ctx); err != nil || n != len(all) {
		t.Errorf("backfill read %d, %v; want %d", n, err, len(all))
	}
	for _, s := range []*redisstore.Store{v4, fresh} {
		checkPages(t, s, now, grants.InvitationFilter{EmailPrefix: "p"}, ids(deref(byEmail)))
		checkPages(t, s, now, grants.InvitationFilter{ExternalIDPrefix: "crm-"}, ids(deref(all)))
	}
	if n, err := v5.Client().ZCard(ctx, v5.Prefix()+"inv:se").Result(); err != nil || n != int64(len(all)) {
		t.Errorf("inv:se holds %d members, %v; want %d", n, err, len(all))
	}
	for _, pair := range [][2]*redisstore.Store{{v4, v5}, {v5, v4}} {
		for _, inv := range all {
			dup := pendingInvitation("inv-dup", now)
			dup.TokenHash = inv.TokenHash
			if _, err := pair[0].CreateInvitation(ctx, dup); !errors.Is(err, grants.ErrConflict) {
				t.Errorf("a second invitation with %s's token hash: %v, want ErrConflict", inv.ID, err)
			}
		}
	}
}

// TestTokenLookupCollisions: token hashes whose ih: field is one (every
// hash's, here) are each found, by a v5 replica and a v4 one: the first
// takes the field, the others the exact form; a hash held stays refused
// whichever form holds it; a token replaced by one with the same field
// keeps the field (the old hash's release leaves it) and a collision only
// costs the reader the load of the other invitation.
func TestTokenLookupCollisions(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	v4, v5 := replicas(t, redisstore.RecordFormatV4, redisstore.RecordFormatV5)
	for _, s := range []*redisstore.Store{v4, v5} {
		redisstore.SetTokenSum(s, func(string) uint64 { return 42 })
	}
	now := time.Now().UTC()
	var invs []*grants.Invitation
	for i := range 3 {
		inv := pendingInvitation(fmt.Sprintf("inv-coll%d", i), now)
		inv.TokenHash = strings.Repeat(fmt.Sprintf("%02x", i+1), 32)
		_, err := v5.CreateInvitation(ctx, inv)
		must(t, "create", err)
		invs = append(invs, inv)
	}
	short, field := redisstore.ShortTokenEntry(v5, invs[0].TokenHash)
	holder, err := v5.Client().HGet(ctx, v5.Prefix()+short, field).Result()
	if err != nil || redisstore.UnpackID(holder) != invs[0].ID {
		t.Fatalf("ih: field holds %q, %v; want the first invitation", redisstore.UnpackID(holder), err)
	}
	found := func(when string) {
		t.Helper()
		for _, s := range []*redisstore.Store{v4, v5} {
			for _, inv := range invs {
				got, err := s.GetInvitationByTokenHash(ctx, inv.TokenHash)
				if err != nil || got.ID != inv.ID {
					t.Errorf("%s: %s by token hash: %v, %v", when, inv.ID, got, err)
				}
				dup := pendingInvitation("inv-colldup", now)
				dup.TokenHash = inv.TokenHash
				if _, err := s.CreateInvitation(ctx, dup); !errors.Is(err, grants.ErrConflict) {
					t.Errorf("%s: a second invitation with %s's token hash: %v, want ErrConflict", when, inv.ID, err)
				}
			}
		}
	}
	found("created")
	// The field's holder gets a new token of the same field; so does one
	// in the exact form.
	for _, i := range []int{0, 1} {
		old := invs[i].TokenHash
		invs[i].TokenHash = strings.Repeat(fmt.Sprintf("%02x", 0xa0+i), 32)
		_, err := v5.ReplaceInvitationToken(ctx, invs[i].ID, invs[i].TokenHash, now.Add(time.Hour), now)
		must(t, "replace token", err)
		if got, err := v5.GetInvitationByTokenHash(ctx, old); !errors.Is(err, grants.ErrNotFound) {
			t.Errorf("the replaced hash of %s found %v, %v", invs[i].ID, got, err)
		}
	}
	found("after new tokens")
	_, err = v5.RevokeInvitation(ctx, invs[0].ID, now)
	must(t, "revoke", err)
	found("after a revocation")
}
