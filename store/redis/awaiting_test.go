package redis_test

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
	redisstore "github.com/usher-oidc/usher/store/redis"
)

// A record of a person awaiting verification written before the per-user
// index existed (no iaw:<user> entry) is still found, through the email it
// was sent to, as the lookup found it before.
func TestAwaitingVerificationWithoutItsIndexEntry(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	prefix := uniquePrefix()
	rdb := redis.NewClient(&redis.Options{Addr: standalone.addr()})
	st := redisstore.New(rdb, redisstore.Options{Prefix: prefix})
	t.Cleanup(func() { _ = st.Close() })
	now := time.Now().UTC()
	if _, err := st.CreateInvitation(ctx, pendingInvitation("inv-old-await", now)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.UpdateInvitation(ctx, "inv-old-await", func(inv *grants.Invitation) error {
		inv.AwaitingVerification = &grants.AwaitingVerification{UserID: "usr_old", Identity: "iss|old", Email: inv.Email, Since: now}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n, err := rdb.Del(ctx, prefix+"iaw:usr_old").Result(); err != nil || n != 1 {
		t.Fatalf("deleting the index entry: %d, %v", n, err)
	}
	got, err := st.AwaitingVerification(ctx, "usr_old", "INV-OLD-AWAIT@example.com", now)
	if err != nil || len(got) != 1 || got[0].ID != "inv-old-await" {
		t.Fatalf("found %+v, %v; want the invitation through its email", got, err)
	}
	if got, err := st.AwaitingVerification(ctx, "usr_old", "", now); err != nil || len(got) != 0 {
		t.Fatalf("without the email: %+v, %v; want none", got, err)
	}
}
