package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usher-oidc/usher/internal/testkit"

	"github.com/usher-oidc/usher/grants"
	boltstore "github.com/usher-oidc/usher/store/bolt"
	redisstore "github.com/usher-oidc/usher/store/redis"
)

// BenchmarkInvitationCreate: POST /api/invitations through the real HTTP
// stack (token check, validation, the store write with its event), link only
// (no mail); creates/s counts until the outbox has handed every event to the
// audit log, answers/s until the last answer.
func BenchmarkInvitationCreate(b *testing.B) {
	for _, store := range []string{"bolt", "redis"} {
		b.Run(store, func(b *testing.B) { benchmarkInvitationCreate(b, store) })
	}
}

func benchmarkInvitationCreate(b *testing.B, store string) {
	d := devOn(b, store)
	api := funnelToken(b, d, "invitations:write")
	url := strings.TrimSuffix(d.IssuerURL, "/") + "/api/invitations"
	var n atomic.Int64
	trips := countRedisRoundTrips(d)
	writes := countBoltWrites(d)
	// As many clients in flight as the refresh benchmark: a create waits on
	// its store round trips, and at 8 per core on Redis usher and Redis
	// used 1.09 and 0.48 of the two cores (CPU per create times creates/s,
	// scripts/cpubudget), so the figure was the clients' latency more than
	// the capacity the target asks for (32: 5,183 / 5,153 against 4,880 /
	// 3,818 creates/s in two runs each).
	const perProc = 32
	b.SetParallelism(perProc)
	// One pool for every worker, big enough to keep each one's connection:
	// http.DefaultTransport keeps 2 idle per host, so most requests would
	// dial anew, and the load generator would spend the shared cores on TCP.
	transport := &http.Transport{MaxIdleConnsPerHost: perProc * runtime.GOMAXPROCS(0)}
	b.ResetTimer()
	trips.reset()
	writes.reset()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		client := &http.Client{Transport: transport}
		for pb.Next() {
			i := n.Add(1)
			body := fmt.Sprintf(`{"email":"bench%d@example.com","roles":["customer"],"claims":{"crm_id":"C-%d"},"send_email":false}`, i, i)
			req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+api)
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err != nil || resp.StatusCode != http.StatusCreated {
				b.Errorf("create: %v %v", err, resp)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body) // read to the end, or the connection is not reused
			resp.Body.Close()
		}
	})
	answered := time.Since(start)
	// The audit records and webhooks of those creates are written by the
	// outbox runner after the answers: count the time until it is done too,
	// so the figure compares with a handler that did them inline.
	for d.App.Outbox.Drain(context.Background()) > 0 {
	}
	trips.report(b, b.N, "create") // outbox handling included
	writes.report(b, b.N, "create")
	b.ReportMetric(float64(b.N)/answered.Seconds(), "answers/s")
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "creates/s")
}

// BenchmarkInvitationRedeem: the redemption step of a sign-in (token check,
// email policy, atomic pending→redeemed with the grant merge) on bolt.
func BenchmarkInvitationRedeem(b *testing.B) {
	for _, store := range []string{"bolt", "redis"} {
		b.Run(store, func(b *testing.B) { benchmarkInvitationRedeem(b, store) })
	}
}

func benchmarkInvitationRedeem(b *testing.B, store string) {
	var st grants.Store
	if store == "bolt" {
		bs, err := boltstore.Open(filepath.Join(b.TempDir(), "bench.db"), boltstore.Options{SweepInterval: -1})
		if err != nil {
			b.Fatal(err)
		}
		defer bs.Close()
		st = bs
	} else {
		rs, err := redisstore.Open(redisstore.Config{URL: "redis://" + testkit.StartRedis(b) + "/0"}, redisstore.Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer rs.Close()
		st = rs
	}
	svc := grants.NewService(grants.ServiceOptions{Store: st})
	ctx := context.Background()
	hashes := make([]string, b.N)
	for i := range b.N {
		inv, tok, _, err := svc.Create(ctx, grants.CreateRequest{Email: fmt.Sprintf("r%d@example.com", i), Roles: []string{"customer"}, Claims: map[string]any{"crm_id": i}}, "client:bench")
		if err != nil {
			b.Fatal(err)
		}
		_ = inv
		hashes[i], _ = grants.ParseToken(tok)
	}
	var next atomic.Int64
	b.SetParallelism(8)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1) - 1
			if _, _, _, err := svc.Redeem(ctx, hashes[i], grants.Redeemer{UserID: fmt.Sprintf("usr_%d", i), Identity: "iss|sub"}); err != nil {
				b.Errorf("redeem: %v", err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "redemptions/s")
}
