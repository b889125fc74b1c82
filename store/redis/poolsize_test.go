package redis_test

import (
	"testing"

	"github.com/redis/go-redis/v9"

	redisstore "github.com/usher-oidc/usher/store/redis"
)

// Open sizes the connection pool: store.redis.pool_size when set, else a
// pool_size the URL names, else DefaultPoolSize (not go-redis's own 10 per
// CPU, under which concurrent requests queued for a connection). The size
// is a ceiling: connections open only as requests need them.
func TestOpenPoolSize(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		cfg  redisstore.Config
		want int
	}{
		{"default, url", redisstore.Config{URL: "redis://" + standalone.addr() + "/0"}, redisstore.DefaultPoolSize()},
		{"default, addrs", redisstore.Config{Addrs: []string{standalone.addr()}}, redisstore.DefaultPoolSize()},
		{"configured, url", redisstore.Config{URL: "redis://" + standalone.addr() + "/0", PoolSize: 7}, 7},
		{"configured, addrs", redisstore.Config{Addrs: []string{standalone.addr()}, PoolSize: 7}, 7},
		{"the url's own", redisstore.Config{URL: "redis://" + standalone.addr() + "/0?pool_size=9"}, 9},
		{"configured over the url's", redisstore.Config{URL: "redis://" + standalone.addr() + "/0?pool_size=9", PoolSize: 7}, 7},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := redisstore.Open(c.cfg, redisstore.Options{Prefix: uniquePrefix()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			client, ok := s.Client().(*redis.Client)
			if !ok {
				t.Fatalf("client %T, want a standalone *redis.Client", s.Client())
			}
			if got := client.Options().PoolSize; got != c.want {
				t.Errorf("pool size %d, want %d", got, c.want)
			}
			// A pool's size is its ceiling: Open's ping opened one connection.
			if n := client.PoolStats().TotalConns; n > 1 {
				t.Errorf("%d connections open after Open, want the ping's one", n)
			}
		})
	}
	if redisstore.DefaultPoolSize() <= 10 {
		t.Errorf("DefaultPoolSize() = %d, not above go-redis's own default", redisstore.DefaultPoolSize())
	}
}
