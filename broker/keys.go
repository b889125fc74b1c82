package broker

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/usher-oidc/usher/sessions"
)

// signingKey is one private key with its go-jose signers, cached because a
// token response signs twice and building a signer per token is waste.
type signingKey struct {
	id        string
	alg       jose.SignatureAlgorithm
	priv      crypto.Signer
	notBefore time.Time
	createdAt time.Time
	atSigner  jose.Signer // typ at+jwt (RFC 9068)
	idSigner  jose.Signer // typ JWT, as op.SignerFromKey makes it
}

func (k *signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return k.alg }
func (k *signingKey) Key() any                                    { return k.priv }
func (k *signingKey) ID() string                                  { return k.id }

// publicKey is the op.Key JWKS publishes.
type publicKey struct{ k *signingKey }

func (p publicKey) ID() string                         { return p.k.id }
func (p publicKey) Algorithm() jose.SignatureAlgorithm { return p.k.alg }
func (p publicKey) Use() string                        { return "sig" }
func (p publicKey) Key() any                           { return p.k.priv.Public() }

// keyring holds the signing keys of one algorithm: the active one signs,
// JWKS lists the active one, the previous one (tokens it signed are still
// valid) and any key that will become active soon (so verifiers see it
// before tokens carry it). keySet holds one keyring per algorithm.
type joseAlg = jose.SignatureAlgorithm

type keyring struct {
	kek    []byte
	mu     sync.RWMutex
	keys   []*signingKey // oldest first
	static bool          // keys from PEM files: never regenerated
	alg    jose.SignatureAlgorithm
	store  sessions.Store
	now    func() time.Time
}

// staticRing holds keys from PEM files, in file order: the first signs.
func staticRing(alg jose.SignatureAlgorithm, fileKeys []*signingKey, now func() time.Time) *keyring {
	kr := &keyring{alg: alg, static: true, now: now}
	for _, k := range fileKeys {
		kr.keys = append([]*signingKey{k}, kr.keys...) // the active key goes last
	}
	return kr
}

// storedRing loads alg's keys from the store, generating and storing the
// first one when there is none.
func storedRing(ctx context.Context, st sessions.Store, alg jose.SignatureAlgorithm, kek []byte, now func() time.Time) (*keyring, error) {
	kr := &keyring{store: st, alg: alg, now: now, kek: kek}
	if err := kr.load(ctx); err != nil {
		return nil, err
	}
	if len(kr.keys) == 0 {
		k, err := generateStoredKey(kr.alg, now(), now())
		if err != nil {
			return nil, err
		}
		if k.PrivateKeyPEM, err = sealKey(kek, k.ID, k.PrivateKeyPEM); err != nil {
			return nil, err
		}
		// onlyIfNone (per algorithm): when several replicas start together
		// exactly one key of each algorithm wins.
		if err := st.AddSigningKey(ctx, k, true); err != nil && !errors.Is(err, sessions.ErrConflict) {
			return nil, fmt.Errorf("storing the first %s signing key: %w", alg, err)
		}
		if err := kr.load(ctx); err != nil {
			return nil, err
		}
	}
	if len(kr.keys) == 0 {
		return nil, fmt.Errorf("no %s signing key could be loaded", alg)
	}
	return kr, nil
}

// load re-reads the keys from the store (replicas call it periodically so a
// rotation done elsewhere reaches them).
func (kr *keyring) load(ctx context.Context) error {
	if kr.static {
		return nil
	}
	stored, err := kr.store.SigningKeys(ctx)
	if err != nil {
		return fmt.Errorf("loading signing keys: %w", err)
	}
	keys := make([]*signingKey, 0, len(stored))
	for _, s := range stored {
		if jose.SignatureAlgorithm(s.Algorithm) != kr.alg {
			continue // another keyring's
		}
		plain, err := openKey(kr.kek, s.ID, s.PrivateKeyPEM)
		if err != nil {
			return fmt.Errorf("signing key %s: %w", s.ID, err)
		}
		k, err := parseSigningKey(plain, s.ID, jose.SignatureAlgorithm(s.Algorithm), s.NotBefore)
		if err != nil {
			return fmt.Errorf("signing key %s: %w", s.ID, err)
		}
		k.createdAt = s.CreatedAt
		keys = append(keys, k)
	}
	kr.mu.Lock()
	kr.keys = keys
	kr.mu.Unlock()
	return nil
}

// active is the newest key whose NotBefore has passed.
func (kr *keyring) active() (*signingKey, error) {
	kr.mu.RLock()
	defer kr.mu.RUnlock()
	now := kr.now()
	for i := len(kr.keys) - 1; i >= 0; i-- {
		if !kr.keys[i].notBefore.After(now) {
			return kr.keys[i], nil
		}
	}
	if len(kr.keys) > 0 {
		return kr.keys[0], nil
	}
	return nil, errors.New("no signing key")
}

// published: pending keys, the active key and the one before it.
func (kr *keyring) published() []op.Key {
	kr.mu.RLock()
	defer kr.mu.RUnlock()
	now := kr.now()
	var out []op.Key
	activeSeen, previous := false, 0
	for i := len(kr.keys) - 1; i >= 0; i-- {
		k := kr.keys[i]
		switch {
		case k.notBefore.After(now):
			out = append(out, publicKey{k})
		case !activeSeen:
			activeSeen = true
			out = append(out, publicKey{k})
		case previous == 0:
			previous++
			out = append(out, publicKey{k})
		}
	}
	return out
}

func (kr *keyring) lookup(kid string) *signingKey {
	kr.mu.RLock()
	defer kr.mu.RUnlock()
	for _, k := range kr.keys {
		if k.id == kid {
			return k
		}
	}
	return nil
}

// GenerateSigningKey makes a new key record for the store; usher keys rotate
// uses it with a NotBefore in the future.
func GenerateSigningKey(alg string, createdAt, notBefore time.Time) (*sessions.SigningKey, error) {
	return generateStoredKey(jose.SignatureAlgorithm(alg), createdAt, notBefore)
}

func generateStoredKey(alg jose.SignatureAlgorithm, createdAt, notBefore time.Time) (*sessions.SigningKey, error) {
	var priv crypto.Signer
	var err error
	switch alg {
	case jose.ES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jose.RS256:
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case jose.EdDSA:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	default:
		return nil, fmt.Errorf("signing algorithm %q is not supported", alg)
	}
	if err != nil {
		return nil, fmt.Errorf("generating %s key: %w", alg, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("encoding key: %w", err)
	}
	return &sessions.SigningKey{
		ID:            randomHex(8),
		Algorithm:     string(alg),
		PrivateKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		CreatedAt:     createdAt,
		NotBefore:     notBefore,
	}, nil
}

// parseSigningKey reads a PKCS#8, PKCS#1 or SEC1 PEM private key. An empty id
// derives the kid from the public key so file-configured keys keep a stable kid.
func parseSigningKey(pemBytes []byte, id string, alg jose.SignatureAlgorithm, notBefore time.Time) (*signingKey, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	var key any
	var err error
	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("parsing private key: %w", err)
	}
	priv, ok := key.(crypto.Signer)
	if !ok {
		return nil, errors.New("not a signing key")
	}
	switch p := priv.(type) {
	case *ecdsa.PrivateKey:
		if p.Curve != elliptic.P256() {
			return nil, errors.New("EC keys must use P-256 (ES256)")
		}
		alg = jose.ES256
	case *rsa.PrivateKey:
		if p.N.BitLen() < 2048 {
			return nil, errors.New("RSA keys must have at least 2048 bits")
		}
		alg = jose.RS256
	case ed25519.PrivateKey:
		alg = jose.EdDSA
	default:
		return nil, fmt.Errorf("unsupported key type %T", priv)
	}
	if id == "" {
		jwk := jose.JSONWebKey{Key: priv.Public()}
		tp, err := jwk.Thumbprint(crypto.SHA256)
		if err != nil {
			return nil, fmt.Errorf("key thumbprint: %w", err)
		}
		id = hex.EncodeToString(tp[:8])
	}
	k := &signingKey{id: id, alg: alg, priv: priv, notBefore: notBefore}
	k.atSigner, err = jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: &jose.JSONWebKey{Key: priv, KeyID: id}},
		(&jose.SignerOptions{}).WithType("at+jwt"))
	if err != nil {
		return nil, fmt.Errorf("access-token signer: %w", err)
	}
	if k.idSigner, err = op.SignerFromKey(k); err != nil {
		return nil, fmt.Errorf("ID-token signer: %w", err)
	}
	return k, nil
}
