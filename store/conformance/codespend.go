package conformance

import (
	"context"
	"testing"
	"time"

	"github.com/usher-oidc/usher/sessions"
)

// testCodeSpendOnce: a sealed code is spent once; the second spend is a
// replay and creates nothing; a code of another epoch or past its expiry
// is refused as absent.
func testCodeSpendOnce(t *testing.T, ctx context.Context, s sessions.Store, clock *Clock) {
	epoch, err := s.CodeEpoch(ctx)
	must(t, "epoch", err)
	if again, err := s.CodeEpoch(ctx); err != nil || again != epoch || epoch == "" {
		t.Fatalf("CodeEpoch: %q then %q (%v), want one non-empty epoch", epoch, again, err)
	}
	exp := clock.Now().Add(time.Minute)
	rt := refreshToken("rt-spent", "fam-spent", clock.Now())
	rt.SessionID = "sess-spent"
	must(t, "spend with its refresh token", s.SpendCode(ctx, &sessions.CodeSpend{Hash: "sealed-1", Epoch: epoch, ExpiresAt: exp, Refresh: rt}))
	got, err := s.GetRefreshToken(ctx, "fam-spent", "rt-spent")
	must(t, "the refresh token the spend created", err)
	same(t, "the refresh token the spend created", rt, got)

	again := refreshToken("rt-replay", "fam-spent", clock.Now())
	err = s.SpendCode(ctx, &sessions.CodeSpend{Hash: "sealed-1", Epoch: epoch, ExpiresAt: exp, Refresh: again})
	wantErr(t, "spend twice", err, sessions.ErrCodeReplayed)
	_, err = s.GetRefreshToken(ctx, "fam-spent", "rt-replay")
	wantErr(t, "the refresh token of a replayed spend", err, sessions.ErrNotFound)

	// The spend linked the family to its session: sign-out reaches it.
	must(t, "sign out", s.RevokeSessionFamilies(ctx, "sess-spent", clock.Now().Add(time.Hour)))
	_, err = s.GetRefreshToken(ctx, "fam-spent", "rt-spent")
	wantErr(t, "the spend's token after sign-out", err, sessions.ErrRevoked)

	must(t, "spend without a refresh token", s.SpendCode(ctx, &sessions.CodeSpend{Hash: "sealed-2", Epoch: epoch, ExpiresAt: exp}))
	err = s.SpendCode(ctx, &sessions.CodeSpend{Hash: "sealed-2", Epoch: epoch, ExpiresAt: exp})
	wantErr(t, "spend it twice", err, sessions.ErrCodeReplayed)

	err = s.SpendCode(ctx, &sessions.CodeSpend{Hash: "sealed-3", Epoch: "another-" + epoch, ExpiresAt: exp,
		Refresh: refreshToken("rt-stale", "fam-stale", clock.Now())})
	wantErr(t, "a code of another epoch", err, sessions.ErrNotFound)
	_, err = s.GetRefreshToken(ctx, "fam-stale", "rt-stale")
	wantErr(t, "the refresh token of a code of another epoch", err, sessions.ErrNotFound)

	clock.Advance(time.Minute + time.Second)
	err = s.SpendCode(ctx, &sessions.CodeSpend{Hash: "sealed-4", Epoch: epoch, ExpiresAt: exp})
	wantErr(t, "an expired code", err, sessions.ErrNotFound)
}

// testCodeSpendConcurrent: of concurrent spends of one code exactly one
// succeeds, and only its refresh token exists.
func testCodeSpendConcurrent(t *testing.T, ctx context.Context, s sessions.Store, clock *Clock) {
	epoch, err := s.CodeEpoch(ctx)
	must(t, "epoch", err)
	tokens := make([]*sessions.RefreshToken, 50)
	for i := range tokens {
		tokens[i] = refreshToken("rt-race-"+string(rune('A'+i)), "fam-race", clock.Now())
	}
	errs := concurrently(len(tokens), func(i int) error {
		return s.SpendCode(ctx, &sessions.CodeSpend{Hash: "sealed-race", Epoch: epoch, ExpiresAt: clock.Now().Add(time.Minute), Refresh: tokens[i]})
	})
	if n := countNil(t, "concurrent spend", errs, sessions.ErrCodeReplayed); n != 1 {
		t.Fatalf("%d of %d concurrent SpendCode calls succeeded, want exactly 1", n, len(tokens))
	}
	for i, err := range errs {
		_, gerr := s.GetRefreshToken(ctx, "fam-race", tokens[i].Hash)
		if (err == nil) != (gerr == nil) {
			t.Errorf("spend %d: %v, yet its refresh token: %v", i, err, gerr)
		}
	}
}
