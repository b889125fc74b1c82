package conformance

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/sessions"
)

// RunSessions runs the sessions.Store suite. newStore must return a fresh,
// empty store whose notion of now is clock.Now, and clean it up with t.Cleanup.
func RunSessions(t *testing.T, newStore func(t *testing.T, clock *Clock) sessions.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, ctx context.Context, s sessions.Store, clock *Clock)
	}{
		{"AuthRequest/RoundTrip", testAuthRequestRoundTrip},
		{"AuthRequest/Expiry", testAuthRequestExpiry},
		{"Code/ConsumeOnce", testCodeConsumeOnce},
		{"Code/Expiry", testCodeExpiry},
		{"Code/ConcurrentConsume", testCodeConcurrentConsume},
		{"Code/SealedSpendOnce", testCodeSpendOnce},
		{"Code/SealedConcurrentSpend", testCodeSpendConcurrent},
		{"RefreshToken/RoundTrip", testRefreshRoundTrip},
		{"RefreshToken/RotateAndReuse", testRefreshRotateAndReuse},
		{"RefreshToken/RotateRefusals", testRefreshRotateRefusals},
		{"RefreshToken/Expiry", testRefreshExpiry},
		{"RefreshToken/ConcurrentRotate", testRefreshConcurrentRotate},
		{"RefreshToken/WithUser/RoundTrip", viaUserRotation(testRefreshRoundTrip)},
		{"RefreshToken/WithUser/RotateAndReuse", viaUserRotation(testRefreshRotateAndReuse)},
		{"RefreshToken/WithUser/RotateRefusals", viaUserRotation(testRefreshRotateRefusals)},
		{"RefreshToken/WithUser/Expiry", viaUserRotation(testRefreshExpiry)},
		{"RefreshToken/WithUser/ConcurrentRotate", viaUserRotation(testRefreshConcurrentRotate)},
		{"Revocation/Family", testRevokeFamily},
		{"Revocation/AccessToken", testRevokeAccessToken},
		{"Revocation/SessionFamilies", testRevokeSessionFamilies},
		{"BrowserSession", testBrowserSession},
		{"Together", testTogether},
		{"Together/LoginState", testTogetherLoginState},
		{"Together/CreateWithLoginState", testTogetherCreateWithLoginState},
		{"LoginState", testLoginStates},
		{"SigningKeys", testSigningKeys},
		{"SigningKeys/ConcurrentFirst", testSigningKeysConcurrentFirst},
		{"Ping", func(t *testing.T, ctx context.Context, s sessions.Store, _ *Clock) { must(t, "ping", s.Ping(ctx)) }},
		{"BadInput", testSessionsBadInput},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clock := NewClock(start())
			tc.fn(t, t.Context(), newStore(t, clock), clock)
		})
	}
}

// rotatorWithUser is the optional rotation that reads a user with its
// grant in the same store trip (Redis; a sealed refresh token's).
type rotatorWithUser interface {
	RotateRefreshTokenWithUser(ctx context.Context, oldHash string, next *sessions.RefreshToken, userID string) (grants.UserGrant, error)
}

// withUserRotation is a store whose RotateRefreshToken goes through its
// RotateRefreshTokenWithUser, so the rotation tests hold that one to the
// same answers.
type withUserRotation struct {
	sessions.Store
	r rotatorWithUser
}

func (w withUserRotation) RotateRefreshToken(ctx context.Context, oldHash string, next *sessions.RefreshToken) error {
	_, err := w.r.RotateRefreshTokenWithUser(ctx, oldHash, next, next.Subject)
	return err
}

// viaUserRotation runs a rotation test through RotateRefreshTokenWithUser;
// skipped for a store without one.
func viaUserRotation(fn func(t *testing.T, ctx context.Context, s sessions.Store, clock *Clock)) func(t *testing.T, ctx context.Context, s sessions.Store, clock *Clock) {
	return func(t *testing.T, ctx context.Context, s sessions.Store, clock *Clock) {
		r, ok := s.(rotatorWithUser)
		if !ok {
			t.Skip("the store has no RotateRefreshTokenWithUser")
		}
		fn(t, ctx, withUserRotation{s, r}, clock)
	}
}

func authRequest(id string, now time.Time) *sessions.AuthRequest {
	maxAge := uint(300)
	return &sessions.AuthRequest{
		ID: id, ClientID: "spa", RedirectURI: "https://app.example/cb",
		Scopes: []string{"openid", "profile", "offline_access"}, State: "st", Nonce: "n",
		ResponseType: "code", CodeChallenge: "abc", CodeChallengeMethod: "S256",
		Prompt: []string{"login"}, MaxAge: &maxAge, LoginHint: "ada@example.com",
		Connection: "google-oauth2", ScreenHint: "signup", InvitationHash: "f00d",
		CreatedAt: now, ExpiresAt: now.Add(10 * time.Minute),
	}
}

func testAuthRequestRoundTrip(t *testing.T, ctx context.Context, s sessions.Store, clock *Clock) {
	ar := authRequest("ar-1", clock.Now())
	must(t, "create", s.CreateAuthRequest(ctx, ar))
	got, err := s.GetAuthRequest(ctx, "ar-1")
	must(t, "get", err)
	same(t, "get after create", ar, got)
	wantErr(t, "create twice", s.CreateAuthRequest(ctx, authRequest("ar-1", clock.Now())), sessions.ErrConflict)

	ar.Done, ar.Subject, ar.AuthTime, ar.AMR = true, "user-1", clock.Now(), []string{"pwd"}
	must(t, "update", s.UpdateAuthRequest(ctx, ar))
	got, err = s.GetAuthRequest(ctx, "ar-1")
	must(t, "get after update", err)
	same(t, "get after update", ar, got)

	must(t, "delete", s.DeleteAuthRequest(ctx, "ar-1"))
	_, err = s.GetAuthRequest(ctx, "ar-1")
	wantErr(t, "get after delete", err, sessions.ErrNotFound)
	must(t, "delete again", s.DeleteAuthRequest(ctx, "ar-1"))
	wantErr(t, "update after delete", s.UpdateAuthRequest(ctx, ar), sessions.ErrNotFound)
	_, err = s.GetAuthRequest(ctx, "never")
	wantErr(t, "get unknown", err, sessions.ErrNotFound)
}

func testAuthRequestExpiry(t *testing.T, ctx context.Context, s sessions.Store, clock *Clock) {
	ar := authRequest("ar-exp", clock.Now())
	must(t, "create", s.CreateAuthRequest(ctx, ar))
	clock.Advance(10*time.Minute - time.Millisecond)
	_, err := s.GetAuthRequest(ctx, ar.ID)
	must(t, "get just before expiry", err)
	clock.Advance(time.Millisecond)
	_, err = s.GetAuthRequest(ctx, ar.ID)
	wantErr(t, "get at expiry", err, sessions.ErrNotFound)
	wantErr(t, "update expired", s.UpdateAuthRequest(ctx, ar), sessions.ErrNotFound)
	// An expired request is absent, so its ID can be used again.
	must(t, "create over expired", s.CreateAuthRequest(ctx, authRequest("ar-exp", clock.Now())))
}

func testCodeConsumeOnce(t *testing.T, ctx context.Context, s sessions.Store, clock *Clock) {
	c := &sessions.Code{Hash: "code-1", AuthRequestID: "ar-1", ExpiresAt: clock.Now().Add(time.Minute)}
	must(t, "save", s.SaveCode(ctx, c))
	got, err := s.ConsumeCode(ctx, "code-1")
	must(t, "consume", err)
	if !got.Used || got.AuthRequestID != "ar-1" || got.Hash != "code-1" {
		t.Fatalf("consume returned %+v", got)
	}
	got, err = s.ConsumeCode(ctx, "code-1")
	wantErr(t, "consume twice", err, sessions.ErrCodeReplayed)
	if got == nil || got.AuthRequestID != "ar-1" {
		t.Fatalf("replayed consume must return the record (to revoke what it issued), got %+v", got)
	}
	_, err = s.ConsumeCode(ctx, "unknown")
	wantErr(t, "consume unknown", err, sessions.ErrNotFound)

	// The completed auth request travels with its code, and the code's
	// save stores it completed.
	ar := authRequest("ar-2", clock.Now())
	must(t, "create the auth request", s.CreateAuthRequest(ctx, ar))
	ar.Done, ar.Subject = true, "usr_1"
	codeExpiry := clock.Now().Add(time.Minute)
	must(t, "save with its auth request", s.SaveCode(ctx, &sessions.Code{Hash: "code-2", AuthRequestID: "ar-2", ExpiresAt: codeExpiry, AuthRequest: ar}))
	stored, err := s.GetAuthRequest(ctx, "ar-2")
	must(t, "the completed auth request", err)
	// Stored completed, expiring with its code (which carries it from then on).
	completed := *ar
	completed.ExpiresAt = codeExpiry
	same(t, "the auth request completed by its code", &completed, stored)
	got, err = s.ConsumeCode(ctx, "code-2")
	must(t, "consume with its auth request", err)
	same(t, "the code's auth request", ar, got.AuthRequest)
	clock.Advance(time.Minute)
	_, err = s.GetAuthRequest(ctx, "ar-2")
	wantErr(t, "the completed auth request once its code expired", err, sessions.ErrNotFound)
	gone := authRequest("ar-gone", clock.Now())
	gone.Done = true
	err = s.SaveCode(ctx, &sessions.Code{Hash: "code-3", AuthRequestID: "ar-gone", ExpiresAt: clock.Now().Add(time.Minute), AuthRequest: gone})
	wantErr(t, "a code completing an auth request that is gone", err, sessions.ErrNotFound)

	// A request answered where it was made is never stored alone: its code
	// carries it, and is saved and exchanged as any other.
	once := authRequest("ar-once", clock.Now())
	once.Done, once.Subject = true, "usr_2"
	must(t, "save a code carrying a request never stored", s.SaveCode(ctx, &sessions.Code{Hash: "code-once", AuthRequestID: "ar-once",
		ExpiresAt: clock.Now().Add(time.Minute), AuthRequest: once, AuthRequestNeverStored: true}))
	got, err = s.ConsumeCode(ctx, "code-once")
	must(t, "consume the code carrying a request never stored", err)
	same(t, "the request the code carries", once, got.AuthRequest)
	_, err = s.ConsumeCode(ctx, "code-once")
	wantErr(t, "consume it twice", err, sessions.ErrCodeReplayed)
}

func testCodeExpiry(t *testing.T, ctx context.Context, s sessions.Store, clock *Clock) {
	must(t, "save", s.SaveCode(ctx, &sessions.Code{Hash: "code-exp", AuthRequestID: "ar", ExpiresAt: clock.Now().Add(time.Minute)}))
	clock.Advance(time.Minute + time.Second)
	_, err := s.ConsumeCode(ctx, "code-exp")
	wantErr(t, "consume expired", err, sessions.ErrNotFound)
}

func testCodeConcurrentConsume(t *testing.T, ctx context.Context, s sessions.Store, clock *Clock) {
	must(t, "save", s.SaveCode(ctx, &sessions.Code{Hash: "code-race", AuthRequestID: "ar", ExpiresAt: clock.Now().Add(time.Minute)}))
	errs := concurrently(50, func(int) error {
		_, err := s.ConsumeCode(ctx, "code-race")
		return err
	})
	if n := countNil(t, "concurrent consume", errs, sessions.ErrCodeReplayed); n != 1 {
		t.Fatalf("%d of 50 concurrent ConsumeCode calls succeeded, want exactly 1", n)
	}
}

func refreshToken(hash, family string, now time.Time) *sessions.RefreshToken {
	return &sessions.RefreshToken{
		Hash: hash, FamilyID: family, ClientID: "spa", Subject: "user-1",
		Scopes: []string{"openid", "offline_access"}, Audience: []string{"spa", "api"},
		AMR: []string{"pwd"}, AuthTime: now.Add(-time.Minute), CreatedAt: now,
		ExpiresAt: now.Add(24 * time.Hour), FamilyExpiresAt: now.Add(30 * 24 * time.Hour),
	}
}

func testRefreshRoundTrip(t *testing.T, ctx context.Context, s sessions.Store, clock *Clock) {
	rt := refreshToken("rt-1", "fam-1", clock.Now())
	must(t, "create", s.CreateRefreshToken(ctx, rt))
	got, err := s.GetRefreshToken(ctx, "fam-1", "rt-1")
	must(t, "get", err)
	same(t, "get after create", rt, got)
	if got.RotatedAt != nil {
		t.Fatalf("fresh token has RotatedAt %v", got.RotatedAt)
	}
	wantErr(t, "create twice", s.CreateRefreshToken(ctx, refreshToken("rt-1", "fam-1", clock.Now())), sessions.ErrConflict)
	_, err = s.GetRefreshToken(ctx, "fam-1", "unknown")
	wantErr(t, "get unknown", err, sessions.ErrNotFound)
	// A hash is found only in its own family: the token value names the
	// family, so a hash given with another family is nobody's token.
	_, err = s.GetRefreshToken(ctx, "fam-2", "rt-1")
	wantErr(t, "get in another family", err, sessions.ErrNotFound)
	wantErr(t, "rotate from another family", s.RotateRefreshToken(ctx, "rt-1", refreshToken("rt-2", "fam-2", clock.Now())), sessions.ErrNotFound)
	if got, err := s.GetRefreshToken(ctx, "fam-1", "rt-1"); err != nil || got.RotatedAt != nil {
		t.Fatalf("after a rotation asked from another family: %+v, %v; want the token unrotated", got, err)
	}
	_, err = s.GetRefreshToken(ctx, "fam-2", "rt-2")
	wantErr(t, "successor of a rotation from another family", err, sessions.ErrNotFound)
}

func testRefreshRotateAndReuse(t *testing.T, ctx context.Context, s sessions.Store, clock *Clock) {
	must(t, "create a", s.CreateRefreshToken(ctx, refreshToken("rt-a", "fam", clock.Now())))
	clock.Advance(time.Minute)
	must(t, "rotate a→b", s.RotateRefreshToken(ctx, "rt-a", refreshToken("rt-b", "fam", clock.Now())))
	a, err := s.GetRefreshToken(ctx, "fam", "rt-a")
	must(t, "get rotated a", err)
	if a.RotatedAt == nil || !a.RotatedAt.Equal(clock.Now()) {
		t.Fatalf("rotated token: RotatedAt = %v, want %v", a.RotatedAt, clock.Now())
	}
	b, err := s.GetRefreshToken(ctx, "fam", "rt-b")
	must(t, "get b", err)
	if b.RotatedAt != nil || b.FamilyID != "fam" {
		t.Fatalf("successor: %+v", b)
	}
	if ok, err := s.TokenRevoked(ctx, "fam", ""); err != nil || ok {
		t.Fatalf("TokenRevoked after a clean rotation = %v, %v", ok, err)
	}
	must(t, "rotate b→c", s.RotateRefreshToken(ctx, "rt-b", refreshToken("rt-c", "fam", clock.Now())))

	// Presenting a again is reuse: the family dies.
	err = s.RotateRefreshToken(ctx, "rt-a", refreshToken("rt-d", "fam", clock.Now()))
	wantErr(t, "reuse a", err, sessions.ErrRefreshReused)
	for _, h := range []string{"rt-a", "rt-b", "rt-c"} {
		_, err := s.GetRefreshToken(ctx, "fam", h)
		wantErr(t, "get "+h+" after reuse", err, sessions.ErrRevoked)
	}
	_, err = s.GetRefreshToken(ctx, "fam", "rt-d")
	wantErr(t, "successor offered with the reused token", err, sessions.ErrNotFound)
	revoked, err := s.TokenRevoked(ctx, "fam", "")
	must(t, "token revoked", err)
	if !revoked {
		t.Fatal("family not revoked after reuse")
	}
	if revoked, _ := s.TokenRevoked(ctx, "fam", "any-jti"); !revoked {
		t.Fatal("access token of a revoked family not revoked")
	}
	wantErr(t, "rotate c after revocation", s.RotateRefreshToken(ctx, "rt-c", refreshToken("rt-e", "fam", clock.Now())), sessions.ErrRevoked)
	// Other families are untouched.
	must(t, "create other family", s.CreateRefreshToken(ctx, refreshToken("rt-x", "fam-other", clock.Now())))
	_, err = s.GetRefreshToken(ctx, "fam-other", "rt-x")
	must(t, "get other family", err)
}

func testRefreshRotateRefusals(t *testing.T, ctx context.Context, s sessions.Store, clock *Clock) {
	wantErr(t, "rotate unknown", s.RotateRefreshToken(ctx, "nope", refreshToken("rt-n", "fam", clock.Now())), sessions.ErrNotFound)
	must(t, "create", s.CreateRefreshToken(ctx, refreshToken("rt-1", "fam-r", clock.Now())))
	must(t, "revoke family", s.RevokeFamily(ctx, "fam-r", clock.Now().Add(time.Hour)))
	wantErr(t, "rotate in revoked family", s.RotateRefreshToken(ctx, "rt-1", refreshToken("rt-2", "fam-r", clock.Now())), sessions.ErrRevoked)
	_, err := s.GetRefreshToken(ctx, "fam-r", "rt-2")
	wantErr(t, "successor of a refused rotation", err, sessions.ErrNotFound)
}

func testRefreshExpiry(t *testing.T, ctx context.Context, s sessions.Store, clock *Clock) {
	now := clock.Now()
	idle := refreshToken("rt-idle", "fam-1", now)
	idle.ExpiresAt, idle.FamilyExpiresAt = now.Add(time.Hour), now.Add(24*time.Hour)
	absolute := refreshToken("rt-abs", "fam-2", now)
	absolute.ExpiresAt, absolute.FamilyExpiresAt = now.Add(48*time.Hour), now.Add(time.Hour)
	must(t, "create idle", s.CreateRefreshToken(ctx, idle))
	must(t, "create absolute", s.CreateRefreshToken(ctx, absolute))
	clock.Advance(time.Hour)
	for _, rt := range []*sessions.RefreshToken{idle, absolute} {
		_, err := s.GetRefreshToken(ctx, rt.FamilyID, rt.Hash)
		wantErr(t, "get expired "+rt.Hash, err, sessions.ErrNotFound)
		next := refreshToken(rt.Hash+"-next", rt.FamilyID, clock.Now())
		wantErr(t, "rotate expired "+rt.Hash, s.RotateRefreshToken(ctx, rt.Hash, next), sessions.ErrNotFound)
	}
}

func testRefreshConcurrentRotate(t *testing.T, ctx context.Context, s sessions.Store, clock *Clock) {
	must(t, "create", s.CreateRefreshToken(ctx, refreshToken("rt-race", "fam-race", clock.Now())))
	errs := concurrently(50, func(i int) error {
		return s.RotateRefreshToken(ctx, "rt-race", refreshToken(fmt.Sprintf("rt-next-%d", i), "fam-race", clock.Now()))
	})
	if n := countNil(t, "concurrent rotate", errs, sessions.ErrRefreshReused, sessions.ErrRevoked); n != 1 {
		t.Fatalf("%d of 50 concurrent rotations succeeded, want exactly 1", n)
	}
	// The losers were reuse, so the family must be dead, winner included.
	if ok, err := s.TokenRevoked(ctx, "fam-race", ""); err != nil || !ok {
		t.Fatalf("TokenRevoked after concurrent reuse = %v, %v; want true", ok, err)
	}
}

func testRevokeFamily(t *testing.T, ctx context.Context, s sessions.Store, clock *Clock) {
	must(t, "create", s.CreateRefreshToken(ctx, refreshToken("rt-f", "fam-f", clock.Now())))
	must(t, "revoke", s.RevokeFamily(ctx, "fam-f", clock.Now().Add(time.Hour)))
	_, err := s.GetRefreshToken(ctx, "fam-f", "rt-f")
	wantErr(t, "get revoked", err, sessions.ErrRevoked)
	for _, c := range []struct {
		family, jti string
		want        bool
	}{
		{"fam-f", "", true},
		{"fam-f", "jti-1", true},
		{"fam-other", "", false},
		{"", "jti-1", false},
	} {
		got, err := s.TokenRevoked(ctx, c.family, c.jti)
		must(t, "token revoked", err)
		if got != c.want {
			t.Errorf("TokenRevoked(%q, %q) = %v, want %v", c.family, c.jti, got, c.want)
		}
	}
	// Revoking again with an earlier until must not shorten the revocation.
	must(t, "revoke again", s.RevokeFamily(ctx, "fam-f", clock.Now().Add(time.Minute)))
	clock.Advance(30 * time.Minute)
	if ok, _ := s.TokenRevoked(ctx, "fam-f", ""); !ok {
		t.Fatal("second, shorter revocation shortened the first")
	}
	clock.Advance(31 * time.Minute)
	if ok, err := s.TokenRevoked(ctx, "fam-f", ""); err != nil || ok {
		t.Fatalf("TokenRevoked after until = %v, %v; want false", ok, err)
	}
}

// testRevokeSessionFamilies: sign-out revokes every family created through
// the session, rotated links included, and nothing else.
func testRevokeSessionFamilies(t *testing.T, ctx context.Context, s sessions.Store, clock *Clock) {
	now := clock.Now()
	mk := func(hash, family, session string) *sessions.RefreshToken {
		rt := refreshToken(hash, family, now)
		rt.SessionID = session
		return rt
	}
	for _, rt := range []*sessions.RefreshToken{
		mk("rt-a1", "fam-a1", "sess-a"), mk("rt-a2", "fam-a2", "sess-a"),
		mk("rt-b", "fam-b", "sess-b"), mk("rt-none", "fam-none", ""),
	} {
		must(t, "create "+rt.Hash, s.CreateRefreshToken(ctx, rt))
	}
	got, err := s.GetRefreshToken(ctx, "fam-a1", "rt-a1")
	must(t, "get", err)
	if got.SessionID != "sess-a" {
		t.Fatalf("SessionID = %q, want sess-a", got.SessionID)
	}
	must(t, "rotate", s.RotateRefreshToken(ctx, "rt-a1", mk("rt-a1-next", "fam-a1", "sess-a")))
	must(t, "revoke unknown session", s.RevokeSessionFamilies(ctx, "sess-unknown", now.Add(time.Hour)))
	must(t, "revoke session", s.RevokeSessionFamilies(ctx, "sess-a", now.Add(time.Hour)))
	for _, c := range []struct {
		family, hash string
		revoked      bool
	}{{"fam-a1", "rt-a1-next", true}, {"fam-a2", "rt-a2", true}, {"fam-b", "rt-b", false}, {"fam-none", "rt-none", false}} {
		_, err := s.GetRefreshToken(ctx, c.family, c.hash)
		if c.revoked {
			wantErr(t, "get "+c.hash+" after sign-out", err, sessions.ErrRevoked)
		} else {
			must(t, "get "+c.hash+" of another session", err)
		}
	}
	if ok, err := s.TokenRevoked(ctx, "fam-a2", "jti"); err != nil || !ok {
		t.Errorf("access tokens of a signed-out family: revoked %v, %v", ok, err)
	}
	// A family created through the session after sign-out is a new sign-in.
	must(t, "create after sign-out", s.CreateRefreshToken(ctx, mk("rt-a3", "fam-a3", "sess-a")))
	_, err = s.GetRefreshToken(ctx, "fam-a3", "rt-a3")
	must(t, "get family created after sign-out", err)
}

func testRevokeAccessToken(t *testing.T, ctx context.Context, s sessions.Store, clock *Clock) {
	must(t, "revoke", s.RevokeAccessToken(ctx, "jti-1", clock.Now().Add(time.Hour)))
	for _, c := range []struct {
		family, jti string
		want        bool
	}{
		{"", "jti-1", true},
		{"fam-1", "jti-1", true},
		{"", "jti-2", false},
		{"fam-1", "", false},
	} {
		got, err := s.TokenRevoked(ctx, c.family, c.jti)
		must(t, "token revoked", err)
		if got != c.want {
			t.Errorf("TokenRevoked(%q, %q) = %v, want %v", c.family, c.jti, got, c.want)
		}
	}
	clock.Advance(time.Hour)
	if ok, err := s.TokenRevoked(ctx, "", "jti-1"); err != nil || ok {
		t.Fatalf("TokenRevoked after until = %v, %v; want false", ok, err)
	}
}

func testBrowserSession(t *testing.T, ctx context.Context, s sessions.Store, clock *Clock) {
	bs := &sessions.BrowserSession{ID: "bs-1", Values: map[string]string{"state": "xyz"}, CreatedAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour)}
	must(t, "save", s.SaveBrowserSession(ctx, bs))
	got, err := s.GetBrowserSession(ctx, "bs-1")
	must(t, "get", err)
	same(t, "get after save", bs, got)
	bs.Values = map[string]string{"state": "abc", "invitation": "h"}
	must(t, "save again", s.SaveBrowserSession(ctx, bs))
	got, err = s.GetBrowserSession(ctx, "bs-1")
	must(t, "get after second save", err)
	same(t, "get after second save", bs, got)
	must(t, "delete", s.DeleteBrowserSession(ctx, "bs-1"))
	_, err = s.GetBrowserSession(ctx, "bs-1")
	wantErr(t, "get after delete", err, sessions.ErrNotFound)
	must(t, "delete again", s.DeleteBrowserSession(ctx, "bs-1"))

	// A sign-in's new ID: the new record in, the old one out, in one write.
	must(t, "save before sign-in", s.SaveBrowserSession(ctx, bs))
	signedIn := &sessions.BrowserSession{ID: "bs-3", Values: map[string]string{"account": "u1"}, CreatedAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour)}
	must(t, "replace", s.ReplaceBrowserSession(ctx, signedIn, "bs-1"))
	_, err = s.GetBrowserSession(ctx, "bs-1")
	wantErr(t, "the replaced session", err, sessions.ErrNotFound)
	got, err = s.GetBrowserSession(ctx, "bs-3")
	must(t, "get the replacement", err)
	same(t, "the replacement", signedIn, got)
	signedIn.ID = "bs-4"
	must(t, "replace a session that is gone", s.ReplaceBrowserSession(ctx, signedIn, "bs-1"))
	got, err = s.GetBrowserSession(ctx, "bs-4")
	must(t, "get the second replacement", err)
	same(t, "the second replacement", signedIn, got)

	must(t, "save short", s.SaveBrowserSession(ctx, &sessions.BrowserSession{ID: "bs-2", CreatedAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Minute)}))
	clock.Advance(time.Minute)
	_, err = s.GetBrowserSession(ctx, "bs-2")
	wantErr(t, "get expired", err, sessions.ErrNotFound)
}

func signingKey(id string, created time.Time) *sessions.SigningKey {
	return &sessions.SigningKey{
		ID: id, Algorithm: "ES256", CreatedAt: created, NotBefore: created.Add(time.Minute),
		PrivateKeyPEM: []byte("-----BEGIN PRIVATE KEY-----\n" + id + "\n-----END PRIVATE KEY-----\n"),
	}
}

func testSigningKeys(t *testing.T, ctx context.Context, s sessions.Store, clock *Clock) {
	keys, err := s.SigningKeys(ctx)
	must(t, "list empty", err)
	if len(keys) != 0 {
		t.Fatalf("fresh store has %d keys", len(keys))
	}
	now := clock.Now()
	k1, k2, k3 := signingKey("k1", now), signingKey("k2", now.Add(-time.Hour)), signingKey("k3", now.Add(time.Hour))
	must(t, "add k1 onlyIfNone", s.AddSigningKey(ctx, k1, true))
	wantErr(t, "add k2 onlyIfNone", s.AddSigningKey(ctx, k2, true), sessions.ErrConflict)
	// onlyIfNone looks at keys of the same algorithm only: the first RS256
	// key is added beside the ES256 one, the second is refused.
	r1, r2 := signingKey("r1", now), signingKey("r2", now)
	r1.Algorithm, r2.Algorithm = "RS256", "RS256"
	must(t, "add r1 onlyIfNone beside ES256", s.AddSigningKey(ctx, r1, true))
	wantErr(t, "add r2 onlyIfNone", s.AddSigningKey(ctx, r2, true), sessions.ErrConflict)
	must(t, "delete r1", s.DeleteSigningKey(ctx, "r1"))
	must(t, "add k3", s.AddSigningKey(ctx, k3, false))
	must(t, "add k2", s.AddSigningKey(ctx, k2, false))
	wantErr(t, "add k1 again", s.AddSigningKey(ctx, signingKey("k1", now), false), sessions.ErrConflict)
	keys, err = s.SigningKeys(ctx)
	must(t, "list", err)
	same(t, "keys oldest first", []sessions.SigningKey{*k2, *k1, *k3}, keys)
	must(t, "delete k2", s.DeleteSigningKey(ctx, "k2"))
	must(t, "delete k2 again", s.DeleteSigningKey(ctx, "k2"))
	keys, err = s.SigningKeys(ctx)
	must(t, "list after delete", err)
	same(t, "keys after delete", []sessions.SigningKey{*k1, *k3}, keys)
}

// Replicas starting together each try to add the first key of every
// algorithm: exactly one per algorithm wins.
func testSigningKeysConcurrentFirst(t *testing.T, ctx context.Context, s sessions.Store, clock *Clock) {
	algs := []string{"ES256", "RS256"}
	errs := concurrently(20, func(i int) error {
		k := signingKey(fmt.Sprintf("k-%d", i), clock.Now())
		k.Algorithm = algs[i%2]
		return s.AddSigningKey(ctx, k, true)
	})
	if n := countNil(t, "concurrent first key", errs, sessions.ErrConflict); n != 2 {
		t.Fatalf("%d of 20 onlyIfNone adds succeeded, want exactly 1 per algorithm (2)", n)
	}
	keys, err := s.SigningKeys(ctx)
	must(t, "list", err)
	if len(keys) != 2 || keys[0].Algorithm == keys[1].Algorithm {
		t.Fatalf("%d keys stored (%+v), want one ES256 and one RS256", len(keys), keys)
	}
}

func testSessionsBadInput(t *testing.T, ctx context.Context, s sessions.Store, clock *Clock) {
	now := clock.Now()
	valid := refreshToken("rt-valid", "fam", now)
	must(t, "create valid", s.CreateRefreshToken(ctx, valid))
	badInput(t, map[string]func() error{
		"CreateAuthRequest(nil)":   func() error { return s.CreateAuthRequest(ctx, nil) },
		"CreateAuthRequest(no id)": func() error { return s.CreateAuthRequest(ctx, authRequest("", now)) },
		"GetAuthRequest(\"\")":     func() error { _, err := s.GetAuthRequest(ctx, ""); return err },
		"UpdateAuthRequest(nil)":   func() error { return s.UpdateAuthRequest(ctx, nil) },
		"UpdateAuthRequest(no id)": func() error { return s.UpdateAuthRequest(ctx, authRequest("", now)) },
		"DeleteAuthRequest(\"\")":  func() error { return s.DeleteAuthRequest(ctx, "") },
		"SaveCode(nil)":            func() error { return s.SaveCode(ctx, nil) },
		"SaveCode(no hash)":        func() error { return s.SaveCode(ctx, &sessions.Code{ExpiresAt: now.Add(time.Minute)}) },
		"SaveCode(a request never stored, not carried)": func() error {
			return s.SaveCode(ctx, &sessions.Code{Hash: "code-none", AuthRequestID: "ar-none", ExpiresAt: now.Add(time.Minute), AuthRequestNeverStored: true})
		},
		"ConsumeCode(\"\")":            func() error { _, err := s.ConsumeCode(ctx, ""); return err },
		"CreateRefreshToken(nil)":      func() error { return s.CreateRefreshToken(ctx, nil) },
		"CreateRefreshToken(no hash)":  func() error { return s.CreateRefreshToken(ctx, refreshToken("", "fam", now)) },
		"CreateRefreshToken(no fam)":   func() error { return s.CreateRefreshToken(ctx, refreshToken("rt-nofam", "", now)) },
		"GetRefreshToken(fam, \"\")":   func() error { _, err := s.GetRefreshToken(ctx, "fam", ""); return err },
		"GetRefreshToken(\"\", hash)":  func() error { _, err := s.GetRefreshToken(ctx, "", "rt-valid"); return err },
		"RotateRefreshToken(\"\", ok)": func() error { return s.RotateRefreshToken(ctx, "", refreshToken("rt-n1", "fam", now)) },
		"RotateRefreshToken(ok, nil)":  func() error { return s.RotateRefreshToken(ctx, "rt-valid", nil) },
		"RotateRefreshToken(ok, no hash)": func() error {
			return s.RotateRefreshToken(ctx, "rt-valid", refreshToken("", "fam", now))
		},
		"RevokeFamily(\"\")":      func() error { return s.RevokeFamily(ctx, "", now.Add(time.Hour)) },
		"RevokeAccessToken(\"\")": func() error { return s.RevokeAccessToken(ctx, "", now.Add(time.Hour)) },
		"RevokeSessionFamilies(\"\")": func() error {
			return s.RevokeSessionFamilies(ctx, "", now.Add(time.Hour))
		},
		"TokenRevoked(\"\", \"\")": func() error { _, err := s.TokenRevoked(ctx, "", ""); return err },
		"GetBrowserSession(\"\")":  func() error { _, err := s.GetBrowserSession(ctx, ""); return err },
		"SaveBrowserSession(nil)":  func() error { return s.SaveBrowserSession(ctx, nil) },
		"SaveBrowserSession(no id)": func() error {
			return s.SaveBrowserSession(ctx, &sessions.BrowserSession{ExpiresAt: now.Add(time.Hour)})
		},
		"DeleteBrowserSession(\"\")": func() error { return s.DeleteBrowserSession(ctx, "") },
		"ReplaceBrowserSession(nil)": func() error { return s.ReplaceBrowserSession(ctx, nil, "bs-x") },
		"ReplaceBrowserSession(no old id)": func() error {
			return s.ReplaceBrowserSession(ctx, &sessions.BrowserSession{ID: "bs-y", ExpiresAt: now.Add(time.Hour)}, "")
		},
		"AddSigningKey(nil)":     func() error { return s.AddSigningKey(ctx, nil, false) },
		"AddSigningKey(no id)":   func() error { return s.AddSigningKey(ctx, signingKey("", now), false) },
		"DeleteSigningKey(\"\")": func() error { return s.DeleteSigningKey(ctx, "") },
	})
	// The refused code was not saved, and the valid token survived the bad calls.
	_, err := s.ConsumeCode(ctx, "code-none")
	wantErr(t, "the code refused as bad input", err, sessions.ErrNotFound)
	got, err := s.GetRefreshToken(ctx, "fam", "rt-valid")
	must(t, "get valid after bad input", err)
	if got.RotatedAt != nil {
		t.Fatal("a refused rotation marked the token rotated")
	}
}
