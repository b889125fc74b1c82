package broker

import (
	"crypto/sha256"
	"sync"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
)

// verifiedTokens remembers access tokens whose signature, issuer and claim
// keys were checked, for a minute at most: an admin API client sends the
// same token on every call, and an ECDSA verification costs more than the
// rest of a request. What can change while a token lives is checked on
// every call still: its expiry against usher's clock, and its revocation.
type verifiedTokens struct {
	mu      sync.Mutex
	entries map[[32]byte]verifiedToken
}

type verifiedToken struct {
	claims *oidc.AccessTokenClaims
	until  time.Time
}

const (
	verifiedTokenTTL = time.Minute
	maxVerifiedToken = 10_000
)

func (v *verifiedTokens) get(token string, now time.Time) *oidc.AccessTokenClaims {
	key := sha256.Sum256([]byte(token))
	v.mu.Lock()
	defer v.mu.Unlock()
	e, ok := v.entries[key]
	if !ok || !now.Before(e.until) {
		return nil
	}
	return e.claims
}

func (v *verifiedTokens) put(token string, claims *oidc.AccessTokenClaims, now time.Time) {
	until := now.Add(verifiedTokenTTL)
	if exp := claims.Expiration.AsTime(); exp.Before(until) {
		until = exp
	}
	key := sha256.Sum256([]byte(token))
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.entries == nil || len(v.entries) >= maxVerifiedToken {
		v.entries = make(map[[32]byte]verifiedToken) // simplest bound: start over
	}
	v.entries[key] = verifiedToken{claims: claims, until: until}
}
