package broker

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/usher-oidc/usher/sessions"
)

// keyReloadInterval is how often a replica re-reads the keys, so a key
// added elsewhere is published within it.
const keyReloadInterval = 30 * time.Second

// expireSweepEvery is how often Run notes invitations that expired.
const expireSweepEvery = time.Minute

// expireInvitations records invitation.expired for the invitations that
// expired since the last sweep (the outbox hands it to audit and webhooks).
func (b *Broker) expireInvitations(ctx context.Context) {
	if _, err := b.invitations.Expire(ctx); err != nil && ctx.Err() == nil {
		b.log.ErrorContext(ctx, "invitation expiry sweep", "err", err)
	}
}

// DefaultKeyActivationDelay is how long a new key is published before it
// signs: longer than every replica's reload interval plus what a relying
// party caches of the JWKS for (commonly 5 minutes).
const DefaultKeyActivationDelay = 10 * time.Minute

const kekPrefix = "usher-kek-v1:"

// sealKey encrypts private key material with the key-encryption key
// (AES-256-GCM, stdlib). The key ID is the associated data, so a sealed
// key cannot be swapped under another ID.
func sealKey(kek []byte, id string, pemBytes []byte) ([]byte, error) {
	if len(kek) == 0 {
		return pemBytes, nil
	}
	gcm, err := newGCM(kek)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, gcm.NonceSize())
	_, _ = rand.Read(nonce)
	sealed := gcm.Seal(nonce, nonce, pemBytes, []byte(id))
	return []byte(kekPrefix + base64.RawStdEncoding.EncodeToString(sealed)), nil
}

func openKey(kek []byte, id string, stored []byte) ([]byte, error) {
	s := string(stored)
	if !strings.HasPrefix(s, kekPrefix) {
		return stored, nil // stored before a key-encryption key was configured
	}
	if len(kek) == 0 {
		return nil, errors.New("signing keys in the store are encrypted: set store.key_encryption_key (USHER_STORE_KEY_ENCRYPTION_KEY)")
	}
	raw, err := base64.RawStdEncoding.DecodeString(s[len(kekPrefix):])
	if err != nil {
		return nil, fmt.Errorf("encrypted signing key is corrupt: %w", err)
	}
	gcm, err := newGCM(kek)
	if err != nil {
		return nil, err
	}
	if len(raw) < gcm.NonceSize() {
		return nil, errors.New("encrypted signing key is corrupt")
	}
	out, err := gcm.Open(nil, raw[:gcm.NonceSize()], raw[gcm.NonceSize():], []byte(id))
	if err != nil {
		return nil, errors.New("signing key cannot be decrypted: wrong store.key_encryption_key?")
	}
	return out, nil
}

func newGCM(kek []byte) (cipher.AEAD, error) {
	if len(kek) != 32 {
		return nil, errors.New("key-encryption key must be 32 bytes")
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// RotateSigningKey adds a new signing key of alg that every replica publishes at
// once and signs with only after activateAfter, then removes keys no token
// can still need (retired longer than maxTokenTTL ago). It is what
// `usher keys rotate` runs.
func RotateSigningKey(ctx context.Context, st sessions.Store, alg string, kek []byte, now time.Time, activateAfter, maxTokenTTL time.Duration) (*sessions.SigningKey, error) {
	if err := checkAlgorithm(string(algOrDefault(alg))); err != nil {
		return nil, err
	}
	k, err := generateStoredKey(algOrDefault(alg), now, now.Add(activateAfter))
	if err != nil {
		return nil, err
	}
	if k.PrivateKeyPEM, err = sealKey(kek, k.ID, k.PrivateKeyPEM); err != nil {
		return nil, err
	}
	if err := st.AddSigningKey(ctx, k, false); err != nil {
		return nil, fmt.Errorf("storing the new signing key: %w", err)
	}
	if err := pruneKeys(ctx, st, algOrDefault(alg), now, maxTokenTTL); err != nil {
		return k, err
	}
	return k, nil
}

// pruneKeys deletes a key of alg once its successor has been signing for
// longer than any token lives: nothing it signed can still be valid.
func pruneKeys(ctx context.Context, st sessions.Store, alg joseAlg, now time.Time, maxTokenTTL time.Duration) error {
	all, err := st.SigningKeys(ctx)
	if err != nil {
		return fmt.Errorf("listing signing keys: %w", err)
	}
	keys := slices.DeleteFunc(all, func(k sessions.SigningKey) bool { return joseAlg(k.Algorithm) != alg })
	// keys are oldest first; a key is retired when a later one is active.
	for i := 0; i+1 < len(keys); i++ {
		successorActive := keys[i+1].NotBefore
		if successorActive.IsZero() {
			successorActive = keys[i+1].CreatedAt
		}
		// Keep the active key and its predecessor whatever their age.
		if i+2 >= len(keys) {
			break
		}
		if now.Sub(successorActive) > maxTokenTTL+time.Hour {
			if err := st.DeleteSigningKey(ctx, keys[i].ID); err != nil {
				return fmt.Errorf("removing retired key %s: %w", keys[i].ID, err)
			}
		}
	}
	return nil
}

func algOrDefault(alg string) (a joseAlg) {
	if alg == "" {
		return "ES256"
	}
	return joseAlg(alg)
}

// maybeRotate adds the key of the current rotation period when the newest
// key is older than the period. The key ID is derived from the period, so
// when several replicas decide at once the store keeps exactly one.
func (kr *keyring) maybeRotate(ctx context.Context, period, maxTokenTTL time.Duration, kek []byte) error {
	if kr.static || period <= 0 {
		return nil
	}
	now := kr.now()
	kr.mu.RLock()
	var newest time.Time
	if n := len(kr.keys); n > 0 {
		newest = kr.keys[n-1].createdAt
	}
	kr.mu.RUnlock()
	if now.Sub(newest) < period {
		return nil
	}
	k, err := generateStoredKey(kr.alg, now, now.Add(DefaultKeyActivationDelay))
	if err != nil {
		return err
	}
	k.ID = "p" + strconv.FormatInt(now.Unix()/int64(period.Seconds()), 36) + "-" + string(kr.alg)
	if k.PrivateKeyPEM, err = sealKey(kek, k.ID, k.PrivateKeyPEM); err != nil {
		return err
	}
	if err := kr.store.AddSigningKey(ctx, k, false); err != nil && !errors.Is(err, sessions.ErrConflict) {
		return fmt.Errorf("scheduled key rotation: %w", err)
	}
	return pruneKeys(ctx, kr.store, kr.alg, now, maxTokenTTL)
}

// Run keeps the keys fresh until ctx ends: reloads them (a rotation done on
// another replica or by `usher keys rotate` is picked up) and performs the
// scheduled rotation when signing.rotation_period is set.
func (b *Broker) Run(ctx context.Context) {
	t := time.NewTicker(keyReloadInterval)
	defer t.Stop()
	expire := time.NewTicker(expireSweepEvery)
	defer expire.Stop()
	b.expireInvitations(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-expire.C:
			b.expireInvitations(ctx)
		case <-t.C:
			if err := b.RotateKeysIfDue(ctx); err != nil {
				b.log.ErrorContext(ctx, "key rotation", "err", err)
			}
			if err := b.keys.load(ctx); err != nil {
				b.log.ErrorContext(ctx, "reloading signing keys", "err", err)
			}
		}
	}
}

// RotateKeysIfDue performs the scheduled rotation (signing.rotation_period)
// of every algorithm's keys now if it is due; Run calls it periodically.
func (b *Broker) RotateKeysIfDue(ctx context.Context) error {
	return b.keys.maybeRotate(ctx, b.opts.KeyRotationPeriod, b.maxTokenTTL(), b.opts.KeyEncryptionKey)
}

func (b *Broker) maxTokenTTL() time.Duration {
	t := b.opts.Tokens
	return max(t.Access, t.IDToken, t.ClientCredentials)
}

// ReloadKeys re-reads the signing keys now (Run does it periodically).
func (b *Broker) ReloadKeys(ctx context.Context) error { return b.keys.load(ctx) }
