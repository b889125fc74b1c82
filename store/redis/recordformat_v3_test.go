package redis_test

import (
	"encoding/hex"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
	redisstore "github.com/usher-oidc/usher/store/redis"
)

// At v3 an invitation has no per-email set ie: and its token lookup is a
// field of a shared bucket ib:; below v3 both older forms are written. At
// v4 it is not in inv:t either, its client is in inv:clients instead. At
// v5 its token lookup is the short form ih: instead of ib:.
// Either way the invitation is found by token hash and by email.
func TestV3InvitationKeys(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		format                           string
		perEmail, hexForm, allSet, short bool
	}{
		{redisstore.RecordFormatV1, true, true, true, false},
		{redisstore.RecordFormatV2, true, true, true, false},
		{redisstore.RecordFormatV3, false, false, true, false},
		{redisstore.RecordFormatV4, false, false, false, false},
		{redisstore.RecordFormatV5, false, false, false, true},
	} {
		t.Run(c.format, func(t *testing.T) {
			t.Parallel()
			ctx := ctxT(t)
			s := redisstore.New(redis.NewClient(&redis.Options{Addr: standalone.addr()}), redisstore.Options{Prefix: uniquePrefix(), RecordFormat: c.format})
			t.Cleanup(func() { _ = s.Close() })
			now := time.Now().UTC()
			inv := pendingInvitation("inv_keys", now)
			inv.Email = "Keys@Example.com"
			_, err := s.CreateInvitation(ctx, inv)
			must(t, "create", err)
			raw, err := hex.DecodeString(inv.TokenHash)
			must(t, "hash", err)
			for key, want := range map[string]bool{
				"ie:keys@example.com": c.perEmail, "it:" + inv.TokenHash: c.hexForm, "ib:" + redisstore.TokenBucket(raw): !c.hexForm && !c.short,
				"inv:t": c.allSet, "inv:clients": !c.allSet,
			} {
				n, err := s.Client().Exists(ctx, s.Prefix()+key).Result()
				must(t, "exists", err)
				if (n == 1) != want {
					t.Errorf("%q exists: %v, want %v", key, n == 1, want)
				}
			}
			if short, field := redisstore.ShortTokenEntry(s, inv.TokenHash); c.short {
				id, err := s.Client().HGet(ctx, s.Prefix()+short, field).Result()
				if err != nil || redisstore.UnpackID(id) != inv.ID || len(id) >= len(inv.ID) {
					t.Errorf("short token field: %q, %v; want %s packed", id, err, inv.ID)
				}
			} else if !c.hexForm {
				id, err := s.Client().HGet(ctx, s.Prefix()+"ib:"+redisstore.TokenBucket(raw), string(raw)).Result()
				if err != nil || id != inv.ID {
					t.Errorf("token bucket field: %q, %v; want %s", id, err, inv.ID)
				}
			}
			got, err := s.GetInvitationByTokenHash(ctx, inv.TokenHash)
			must(t, "by token hash", err)
			if got.ID != inv.ID {
				t.Errorf("by token hash: %s", got.ID)
			}
			list, _, err := s.ListInvitations(ctx, grants.InvitationFilter{Email: "KEYS@example.com"}, now)
			must(t, "list by email", err)
			if len(list) != 1 || list[0].ID != inv.ID {
				t.Errorf("list by email: %v", list)
			}
		})
	}
}

// Listing by email reads the search index and the per-email sets older
// stores wrote, merged: an invitation in either one shows once, newest
// first, ties by ID descending, page after page, as the creation-time
// listing orders them.
func TestListByEmailMergesSources(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	v2, v3 := replicas(t, redisstore.RecordFormatV2, redisstore.RecordFormatV3)
	now := time.Now().UTC().Truncate(time.Second)
	var want []string
	for i := range 9 {
		inv := pendingInvitation(fmt.Sprintf("inv_mix_%d", i), now.Add(time.Duration(i/2)*time.Second)) // pairs tie
		inv.Email, inv.ClientID = "Mix@Example.com", "mix"
		w := v3
		if i%3 == 0 {
			w = v2
		}
		_, err := w.CreateInvitation(ctx, inv)
		must(t, "create", err)
		if i%3 == 0 && i > 0 { // as a store from before the search index left it: only in ie:
			must(t, "unindex", v2.Client().ZRem(ctx, v2.Prefix()+"inv:se", "mix@example.com\x00"+inv.ID).Err())
		}
		want = append(want, inv.ID)
	}
	other := pendingInvitation("inv_mix_other", now)
	other.Email = "mix@example.com.evil" // shares the prefix, not the email
	_, err := v3.CreateInvitation(ctx, other)
	must(t, "create other", err)
	byClient, _, err := v3.ListInvitations(ctx, grants.InvitationFilter{ClientID: "mix"}, now)
	must(t, "list by client", err)
	order := ids(byClient)
	if len(order) != len(want) {
		t.Fatalf("by client: %v", order)
	}
	for _, s := range []*redisstore.Store{v2, v3} {
		var seen []string
		f := grants.InvitationFilter{Email: "mix@EXAMPLE.com", Limit: 2}
		for page := 0; page < 10; page++ {
			got, next, err := s.ListInvitations(ctx, f, now)
			must(t, "list by email", err)
			seen = append(seen, ids(got)...)
			if next == "" {
				break
			}
			f.Cursor = next
		}
		if !slices.Equal(seen, order) {
			t.Errorf("by email, pages of 2: %v, want %v", seen, order)
		}
	}
}

func ids(invs []grants.Invitation) []string {
	out := make([]string, len(invs))
	for i, inv := range invs {
		out[i] = inv.ID
	}
	return out
}
