package redis_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/internal/testkit"
	"github.com/usher-oidc/usher/sessions"
	redisstore "github.com/usher-oidc/usher/store/redis"
)

func must(t testing.TB, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func pendingInvitation(id string, now time.Time) *grants.Invitation {
	return &grants.Invitation{
		ID: id, TokenHash: fmt.Sprintf("%064x", id), Email: id + "@example.com",
		Roles: []string{"member"}, Claims: map[string]any{"org": "acme", "plan": "pro"},
		Metadata: map[string]any{"source": "funnel"}, ClientID: "spa", EmailMatch: "exact",
		Inviter: "funnel-backend", Status: grants.StatusPending, CreatedAt: now, ExpiresAt: now.Add(7 * 24 * time.Hour),
		SendEmail: true, EmailStatus: "queued",
		Events: []grants.Event{{Type: "created", At: now, Detail: map[string]string{"by": "funnel-backend"}}},
	}
}

func refresh(hash, family string, now time.Time) *sessions.RefreshToken {
	return &sessions.RefreshToken{
		Hash: hash, FamilyID: family, ClientID: "spa", Subject: "usr_0123456789abcdef",
		Scopes: []string{"openid", "profile", "email", "offline_access"}, Audience: []string{"spa"},
		AMR: []string{"pwd"}, AuthTime: now, CreatedAt: now,
		ExpiresAt: now.Add(24 * time.Hour), FamilyExpiresAt: now.Add(30 * 24 * time.Hour),
	}
}

// TestPersistence: Redis restarted from its append-only file still has every
// pending invitation, grant, user and refresh token.
func TestPersistence(t *testing.T) {
	t.Parallel()
	srv := startServerT(t, 0, "--appendonly", "yes", "--appendfsync", "always")
	open := func() *redisstore.Store {
		s := redisstore.New(redis.NewClient(&redis.Options{Addr: srv.addr()}), redisstore.Options{})
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	s := open()
	ctx := ctxT(t)
	now := time.Now().UTC().Truncate(time.Millisecond)
	_, err := s.CreateInvitation(ctx, pendingInvitation("inv-p", now))
	must(t, "create invitation", err)
	u, _, err := s.ResolveIdentity(ctx, grants.Identity{Issuer: "https://idp.example/", Subject: "auth0|1"},
		grants.Profile{Email: "ada@example.com", Name: "Ada"}, "user-1", now)
	must(t, "resolve identity", err)
	_, err = s.AddRoles(ctx, u.ID, []string{"member", "beta"}, now)
	must(t, "add roles", err)
	must(t, "create refresh token", s.CreateRefreshToken(ctx, refresh("rt-1", "fam-1", now)))

	must(t, "stop", srv.stop())
	if err := s.Ping(ctx); err == nil {
		t.Fatal("Ping succeeded with Redis stopped")
	}
	must(t, "restart", srv.start())

	s = open()
	inv, err := s.GetInvitationByTokenHash(ctx, pendingInvitation("inv-p", now).TokenHash)
	must(t, "invitation after restart", err)
	if inv.ID != "inv-p" || inv.EffectiveStatus(now) != grants.StatusPending {
		t.Fatalf("invitation after restart: %+v", inv)
	}
	list, _, err := s.ListInvitations(ctx, grants.InvitationFilter{Status: grants.StatusPending}, now)
	must(t, "list after restart", err)
	if len(list) != 1 {
		t.Fatalf("listing after restart: %d invitations", len(list))
	}
	got, err := s.GetUser(ctx, "user-1")
	must(t, "user after restart", err)
	if got.Email != "ada@example.com" {
		t.Fatalf("user after restart: %+v", got)
	}
	if us, err := s.UsersByEmail(ctx, "ada@example.com"); err != nil || len(us) != 1 {
		t.Fatalf("users by email after restart: %v, %v", us, err)
	}
	g, err := s.GetGrant(ctx, "user-1")
	must(t, "grant after restart", err)
	if !slices.Equal(g.Roles, []string{"member", "beta"}) {
		t.Fatalf("grant after restart: %+v", g)
	}
	rt, err := s.GetRefreshToken(ctx, "fam-1", "rt-1")
	must(t, "refresh token after restart", err)
	if rt.FamilyID != "fam-1" {
		t.Fatalf("refresh token after restart: %+v", rt)
	}
	must(t, "rotate after restart", s.RotateRefreshToken(ctx, "rt-1", refresh("rt-2", "fam-1", now)))
}

// TestOutage: with Redis down every method fails fast with an error (no
// panic, no hang) and Ping fails; once Redis is back on the same address the
// same store works again.
func TestOutage(t *testing.T) {
	t.Parallel()
	srv := startServerT(t, 0)
	c := redis.NewClient(&redis.Options{
		Addr: srv.addr(), DialTimeout: 100 * time.Millisecond, ReadTimeout: 200 * time.Millisecond,
		WriteTimeout: 200 * time.Millisecond, MaxRetries: 1, MinRetryBackoff: 10 * time.Millisecond, MaxRetryBackoff: 20 * time.Millisecond,
		DialerRetries: 1, DialerRetryTimeout: 10 * time.Millisecond,
	})
	s := redisstore.New(c, redisstore.Options{Prefix: uniquePrefix()})
	t.Cleanup(func() { _ = s.Close() })
	now := time.Now()
	ctx := ctxT(t)
	must(t, "create before outage", s.CreateRefreshToken(ctx, refresh("rt-a", "fam-a", now)))

	must(t, "stop", srv.stop())
	calls := map[string]func(ctx context.Context) error{
		"Ping":            s.Ping,
		"GetRefreshToken": func(ctx context.Context) error { _, err := s.GetRefreshToken(ctx, "fam-a", "rt-a"); return err },
		"RotateRefresh": func(ctx context.Context) error {
			return s.RotateRefreshToken(ctx, "rt-a", refresh("rt-b", "fam-a", now))
		},
		"ConsumeCode": func(ctx context.Context) error { _, err := s.ConsumeCode(ctx, "c"); return err },
		"SaveCode": func(ctx context.Context) error {
			return s.SaveCode(ctx, &sessions.Code{Hash: "c", ExpiresAt: now.Add(time.Minute)})
		},
		"GetBrowserSess": func(ctx context.Context) error { _, err := s.GetBrowserSession(ctx, "b"); return err },
		"SigningKeys":    func(ctx context.Context) error { _, err := s.SigningKeys(ctx); return err },
		"TokenRevoked":   func(ctx context.Context) error { _, err := s.TokenRevoked(ctx, "fam-a", "j"); return err },
		"CreateInvitation": func(ctx context.Context) error {
			_, err := s.CreateInvitation(ctx, pendingInvitation("inv-o", now))
			return err
		},
		"RedeemInvitation": func(ctx context.Context) error {
			_, _, err := s.RedeemInvitation(ctx, "h", grants.Redemption{UserID: "u", At: now})
			return err
		},
		"ResolveIdentity": func(ctx context.Context) error {
			_, _, err := s.ResolveIdentity(ctx, grants.Identity{Issuer: "i", Subject: "s"}, grants.Profile{}, "u", now)
			return err
		},
		"GetGrant": func(ctx context.Context) error { _, err := s.GetGrant(ctx, "u"); return err },
		"ListInvitations": func(ctx context.Context) error {
			_, _, err := s.ListInvitations(ctx, grants.InvitationFilter{}, now)
			return err
		},
		"ClaimJobs": func(ctx context.Context) error { _, err := s.ClaimJobs(ctx, "mail", now, 1, time.Minute); return err },
		"Reserve": func(ctx context.Context) error {
			_, err := s.ReserveIdempotencyKey(ctx, &grants.IdempotencyRecord{Key: "k", RequestHash: "h", ExpiresAt: now.Add(time.Hour)})
			return err
		},
	}
	for name, call := range calls {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := func() (err error) {
			defer func() {
				if p := recover(); p != nil {
					err = fmt.Errorf("panic: %v", p)
					t.Errorf("%s panicked: %v", name, p)
				}
			}()
			return call(ctx)
		}()
		cancel()
		if err == nil {
			t.Errorf("%s succeeded with Redis down", name)
		} else if errors.Is(err, sessions.ErrNotFound) || errors.Is(err, grants.ErrNotFound) {
			t.Errorf("%s: an outage reads as not found: %v", name, err)
		}
	}

	must(t, "restart", srv.start())
	ctx = ctxT(t)
	var pingErr error
	if !testkit.Within(5*time.Second, func() bool { pingErr = s.Ping(ctx); return pingErr == nil }) {
		t.Fatalf("store did not recover after Redis came back: %v (server %s)", pingErr, srv.addr())
	}
	// Scripts were flushed with the restart (no AOF here): EVALSHA falls back to EVAL.
	must(t, "create after outage", s.CreateRefreshToken(ctx, refresh("rt-c", "fam-c", now)))
	must(t, "rotate after outage", s.RotateRefreshToken(ctx, "rt-c", refresh("rt-d", "fam-c", now)))
	_, err := s.CreateInvitation(ctx, pendingInvitation("inv-after", now))
	must(t, "create invitation after outage", err)
}

// TestRedemptionHealsAfterCrash simulates a crash between the invitation's
// pending → redeemed step and the grant merge: the next GetGrant applies it.
func TestRedemptionHealsAfterCrash(t *testing.T) {
	t.Parallel()
	s := newStandalone(t, nil)
	ctx := ctxT(t)
	now := time.Now().UTC()
	inv := pendingInvitation("inv-h", now)
	_, err := s.CreateInvitation(ctx, inv)
	must(t, "create", err)
	_, g, err := s.RedeemInvitation(ctx, inv.TokenHash, grants.Redemption{UserID: "u-h", At: now, Claims: map[string]any{"hooked": true}})
	must(t, "redeem", err)
	want := *g

	// Undo the merge and put back the pending entry, as a crash right after
	// the invitation's transition would have left them.
	prefix := s.Prefix()
	rdb := s.Client()
	keys := []string{prefix + "{g:u-h}", prefix + "{g:u-h}:r", prefix + "{g:u-h}:i"}
	must(t, "forget merge", rdb.Del(ctx, keys...).Err())
	must(t, "pending entry", rdb.HSet(ctx, prefix+"{g:u-h}:p", "inv-h", strconv.FormatInt(now.UnixMilli(), 10)+`|{"hooked":true}`).Err())

	got, err := s.GetGrant(ctx, "u-h")
	must(t, "get grant", err)
	if !slices.Equal(got.Roles, want.Roles) || !slices.Equal(got.Invitations, []string{"inv-h"}) || got.Claims["hooked"] != true || got.Claims["org"] != "acme" {
		t.Fatalf("healed grant %+v, want %+v", got, want)
	}
	if n, _ := rdb.HLen(ctx, prefix+"{g:u-h}:p").Result(); n != 0 {
		t.Fatalf("%d pending merges left", n)
	}
	// Applying it again changes nothing.
	must(t, "pending entry again", rdb.HSet(ctx, prefix+"{g:u-h}:p", "inv-h", strconv.FormatInt(now.UnixMilli(), 10)).Err())
	again, err := s.GetGrant(ctx, "u-h")
	must(t, "get grant again", err)
	if !slices.Equal(again.Roles, got.Roles) || !slices.Equal(again.Invitations, got.Invitations) {
		t.Fatalf("second heal changed the grant: %+v", again)
	}
	// A pending entry of a redemption that lost is dropped.
	must(t, "stray entry", rdb.HSet(ctx, prefix+"{g:u-x}:p", "inv-h", strconv.FormatInt(now.UnixMilli(), 10)).Err())
	gx, err := s.GetGrant(ctx, "u-x")
	must(t, "stray grant", err)
	if len(gx.Roles) != 0 || len(gx.Invitations) != 0 {
		t.Fatalf("a lost redemption left a grant: %+v", gx)
	}
}

// BenchmarkRotateRefreshToken measures the token endpoint's store write: each
// goroutine walks its own refresh-token chain, one rotation per op.
func BenchmarkRotateRefreshToken(b *testing.B) {
	s := newStandalone(b, nil)
	ctx := context.Background()
	var chains atomic.Int64
	b.SetParallelism(16)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		chain := chains.Add(1)
		family := fmt.Sprintf("fam-%d", chain)
		now := time.Now()
		mk := func(i int) *sessions.RefreshToken {
			rt := refresh(fmt.Sprintf("%s-%d", family, i), family, now)
			rt.ExpiresAt, rt.FamilyExpiresAt = now.Add(time.Hour), now.Add(24*time.Hour)
			return rt
		}
		if err := s.CreateRefreshToken(ctx, mk(0)); err != nil {
			b.Error(err)
			return
		}
		for i := 0; pb.Next(); i++ {
			if err := s.RotateRefreshToken(ctx, mk(i).Hash, mk(i+1)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
}

// BenchmarkMemoryPerRecord reports Redis memory per record (MEMORY USAGE
// summed over every key the records create, shared index keys included,
// divided by the record count) on a server of its own, plus the used_memory
// growth. A measurement, so a benchmark: `make bench` runs it, `make test`
// does not.
func BenchmarkMemoryPerRecord(b *testing.B) {
	const n = 2000
	measureIn := memoryMeter(b, n)
	ctx := ctxT(b)
	now := time.Now().UTC()
	// The same records written in each record format, side by side.
	for _, f := range redisstore.RecordFormats {
		measureIn(f, "invitation "+f, func(s *redisstore.Store, i int) error {
			_, err := s.CreateInvitation(ctx, pendingInvitation(fmt.Sprintf("inv_%022d", i), now))
			return err
		})
		measureIn(f, "invitation+extid "+f, func(s *redisstore.Store, i int) error {
			inv := pendingInvitation(fmt.Sprintf("inv_%022d", i), now)
			inv.ExternalID = fmt.Sprintf("crm-%08d", i)
			_, err := s.CreateInvitation(ctx, inv)
			return err
		})
		measureIn(f, "browser session "+f, func(s *redisstore.Store, i int) error {
			return s.SaveBrowserSession(ctx, &sessions.BrowserSession{
				// A signed-in session's ID names its user (broker/browser.go: newSessionID).
				ID: fmt.Sprintf("%043d.usr_%022d", i, i), CreatedAt: now, ExpiresAt: now.Add(24 * time.Hour),
				Values: map[string]string{"uid": fmt.Sprintf("usr_%022d", i), "state": strings.Repeat("s", 43), "nonce": strings.Repeat("n", 43)},
			})
		})
		measureIn(f, "refresh token "+f, func(s *redisstore.Store, i int) error {
			return s.CreateRefreshToken(ctx, refresh(fmt.Sprintf("%064x", i), fmt.Sprintf("fam_%022d", i), now))
		})
		measureIn(f, "user+grant "+f, func(s *redisstore.Store, i int) error {
			u, _, err := s.ResolveIdentity(ctx, grants.Identity{Issuer: "https://tenant.eu.auth0.com/", Subject: fmt.Sprintf("auth0|%024d", i)},
				grants.Profile{Email: fmt.Sprintf("user%d@example.com", i), EmailVerified: true, Name: "Some Body"}, fmt.Sprintf("usr_%022d", i), now)
			if err == nil {
				_, err = s.AddRoles(ctx, u.ID, []string{"member"}, now)
			}
			return err
		})
	}
	// IDs as grants makes them ("inv-" and 16 base64url characters, 12
	// random bytes), and an email as long as the rows above: v4 and v5.
	for _, f := range []string{redisstore.RecordFormatV4, redisstore.RecordFormatV5} {
		measureIn(f, "invitation grants-id "+f, func(s *redisstore.Store, i int) error {
			inv := pendingInvitation(grantsID(i), now)
			inv.Email = fmt.Sprintf("inv_%022d@example.com", i)
			_, err := s.CreateInvitation(ctx, inv)
			return err
		})
	}
}

// BenchmarkMemoryPerInvitationAtScale is BenchmarkMemoryPerRecord's
// pending invitation at 100,000 invitations, at v4 and v5: big enough for
// the shared token-lookup hashes to hold hundreds of fields each (v5's ih:
// stays in the listpack encoding until hash-max-listpack-entries, 512 by
// default: ~131,000 invitations over its 256 hashes).
func BenchmarkMemoryPerInvitationAtScale(b *testing.B) {
	const n = 100_000
	measureIn := memoryMeter(b, n)
	now := time.Now().UTC()
	for _, f := range []string{redisstore.RecordFormatV4, redisstore.RecordFormatV5} {
		// 100,000 creates took 20–50 s here, so each format has a budget
		// of its own, with room for a slow day.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		measureIn(f, "invitation "+f, func(s *redisstore.Store, i int) error {
			_, err := s.CreateInvitation(ctx, pendingInvitation(fmt.Sprintf("inv_%022d", i), now))
			return err
		})
	}
}

// grantsID is the i-th ID of grants' form: "inv-" and 16 base64url
// characters.
func grantsID(i int) string {
	sum := sha256.Sum256([]byte(strconv.Itoa(i)))
	return "inv-" + base64.RawURLEncoding.EncodeToString(sum[:12])
}

// memoryMeter returns measureIn: it writes n records with fill on a server
// of the benchmark's own, under a prefix of the row's name, and logs and
// reports the memory per record, by key kind too.
func memoryMeter(b *testing.B, n int) func(format, name string, fill func(s *redisstore.Store, i int) error) {
	t := b
	srv := startServerT(t, 0)
	rdb := redis.NewClient(&redis.Options{Addr: srv.addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	return func(format, name string, fill func(s *redisstore.Store, i int) error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		prefix := "m" + name + ":"
		s := redisstore.New(redis.NewClient(&redis.Options{Addr: srv.addr()}), redisstore.Options{Prefix: prefix, RecordFormat: format})
		defer s.Close()
		before := usedMemory(t, rdb)
		for i := range n {
			must(t, name, fill(s, i))
		}
		after := usedMemory(t, rdb)
		var total int64
		var keys int
		byKind := map[string]int64{}
		iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			m, err := rdb.MemoryUsage(ctx, iter.Val(), 0).Result()
			must(t, "memory usage", err)
			total += m
			keys++
			byKind[keyKind(strings.TrimPrefix(iter.Val(), prefix))] += m
		}
		must(t, "scan", iter.Err())
		per := float64(total) / float64(n)
		t.Logf("%-18s %6.0f B/record by MEMORY USAGE (%d keys for %d records), %6.0f B/record by used_memory; 1M records ≈ %.0f MB",
			name, per, keys, n, float64(after-before)/float64(n), per*1e6/1e6)
		kinds := slices.Sorted(maps.Keys(byKind))
		parts := make([]string, len(kinds))
		for i, k := range kinds {
			parts[i] = fmt.Sprintf("%s %.0f", k, float64(byKind[k])/float64(n))
		}
		t.Logf("%-18s B/record by key: %s", "", strings.Join(parts, ", "))
		b.ReportMetric(per, strings.ReplaceAll(name, " ", "_")+"_B/record")
	}
}

// keyKind names a key's kind for the memory breakdown: "{i:", "it:", or
// the whole key for the shared ones ("inv:t", "inv:se").
func keyKind(k string) string {
	i := strings.IndexByte(k, ':')
	if i < 0 || k[:i] == "inv" {
		return k
	}
	return k[:i+1]
}

func usedMemory(t testing.TB, rdb *redis.Client) int64 {
	info, err := rdb.Info(context.Background(), "memory").Result()
	must(t, "info", err)
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	t.Fatal("no used_memory in INFO")
	return 0
}
