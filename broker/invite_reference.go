package broker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"time"

	"github.com/usher-oidc/usher/sessions"
)

// Invitation references: for a client with forward_invitation, the redirect
// to its initiate_login_uri carries `invitation=invref_…` instead of the
// token. A reference is worth one /authorize within a few minutes; what
// leaks through the app's history, Referer or access logs is spent or
// expired, and never reveals the token.
//
// It is kept as a one-time record of the sessions store's authorization
// codes (hashed, expiring, consumed atomically once), whose semantics are
// exactly these; the "invitation:" prefix keeps it from ever being taken
// for a code's auth request.
const (
	referencePrefix = "invref_"
	referenceTTL    = 10 * time.Minute
	referenceTarget = "invitation:"
)

// invitationReference mints a reference to the invitation with this token hash.
func (b *Broker) invitationReference(ctx context.Context, tokenHash string) (string, error) {
	ref := referencePrefix + randomToken(32)
	err := b.sessions.SaveCode(ctx, &sessions.Code{Hash: referenceHash(ref), AuthRequestID: referenceTarget + tokenHash,
		ExpiresAt: b.now().Add(referenceTTL)})
	return ref, err
}

// redeemReference spends a reference and returns the invitation token hash
// ("" for an unknown, spent or expired one).
func (b *Broker) redeemReference(ctx context.Context, ref string) string {
	if len(ref) != len(referencePrefix)+43 || !strings.HasPrefix(ref, referencePrefix) {
		return ""
	}
	c, err := b.sessions.ConsumeCode(ctx, referenceHash(ref))
	if err != nil {
		if !errors.Is(err, sessions.ErrNotFound) && !errors.Is(err, sessions.ErrCodeReplayed) {
			b.log.WarnContext(ctx, "reading an invitation reference", "err", err)
		}
		return ""
	}
	hash, ok := strings.CutPrefix(c.AuthRequestID, referenceTarget)
	if !ok {
		return ""
	}
	return hash
}

func referenceHash(ref string) string {
	sum := sha256.Sum256([]byte(ref))
	return hex.EncodeToString(sum[:])
}
