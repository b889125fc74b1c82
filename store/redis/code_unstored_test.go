package redis_test

import (
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/sessions"
	redisstore "github.com/usher-oidc/usher/store/redis"
)

// A code carrying an auth request never stored writes no record of the
// request from v3 on (every reader takes the request from the code);
// below v3 a reader may predate that, so the request is created with the
// code. Either way the exchange gets the carried request.
func TestCodeForRequestNeverStored(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		format     string
		wantRecord bool
	}{
		{redisstore.RecordFormatV1, true},
		{redisstore.RecordFormatV2, true},
		{redisstore.RecordFormatV3, false},
		{redisstore.RecordFormatV5, false},
	} {
		t.Run(c.format, func(t *testing.T) {
			t.Parallel()
			ctx := ctxT(t)
			s := redisstore.New(redis.NewClient(&redis.Options{Addr: standalone.addr()}), redisstore.Options{Prefix: uniquePrefix(), RecordFormat: c.format})
			t.Cleanup(func() { _ = s.Close() })
			now := time.Now()
			ar := &sessions.AuthRequest{ID: "ar-once", ClientID: "spa", Subject: "usr_1", Done: true, CreatedAt: now, ExpiresAt: now.Add(10 * time.Minute)}
			must(t, "save", s.SaveCode(ctx, &sessions.Code{Hash: "code-once", AuthRequestID: ar.ID, ExpiresAt: now.Add(time.Minute),
				AuthRequest: ar, AuthRequestNeverStored: true}))
			stored, err := s.GetAuthRequest(ctx, ar.ID)
			switch {
			case c.wantRecord && (err != nil || !stored.Done || stored.Subject != ar.Subject):
				t.Errorf("the request's record: %+v, %v; want it created, completed, with the code", stored, err)
			case !c.wantRecord && !errors.Is(err, sessions.ErrNotFound):
				t.Errorf("the request's record: %+v, %v; want none", stored, err)
			}
			got, err := s.ConsumeCode(ctx, "code-once")
			if err != nil || got.AuthRequest == nil || got.AuthRequest.ID != ar.ID || got.AuthRequest.Subject != ar.Subject {
				t.Fatalf("exchange: %+v, %v; want the carried request", got, err)
			}
		})
	}
}
