package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/usher-oidc/usher/sessions"
)

// DefaultIDTokenAlgorithm is a client's ID token algorithm when it names none:
// OpenID Connect Registration's default for id_token_signed_response_alg, the
// one Discovery requires, and the only one auth0-spa-js accepts.
const DefaultIDTokenAlgorithm = "RS256"

// ErrUnsupportedAlgorithm: usher signs with ES256, RS256 and EdDSA only.
var ErrUnsupportedAlgorithm = errors.New("signing algorithm is not supported (use ES256, RS256 or EdDSA)")

// keySet holds one keyring per algorithm usher signs with: access tokens use
// the configured algorithm's (ES256 is ~25x cheaper than RS256), each
// client's ID tokens its id_token_signed_response_alg's.
type keySet struct {
	access jose.SignatureAlgorithm
	order  []jose.SignatureAlgorithm // RS256 first
	rings  map[jose.SignatureAlgorithm]*keyring
}

func checkAlgorithm(alg string) error {
	switch jose.SignatureAlgorithm(alg) {
	case jose.ES256, jose.RS256, jose.EdDSA:
		return nil
	}
	return fmt.Errorf("%q: %w", alg, ErrUnsupportedAlgorithm)
}

// SigningAlgorithms lists every algorithm usher holds keys for: RS256, the
// access-token algorithm and the clients' ID token algorithms. `usher keys
// rotate` rotates each.
func SigningAlgorithms(accessAlg string, idAlgs ...string) []string {
	out := []string{DefaultIDTokenAlgorithm}
	for _, a := range append([]string{string(algOrDefault(accessAlg))}, idAlgs...) {
		if a != "" && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// newKeySet builds a keyring per algorithm. PEM files provide the keys of
// the algorithms they hold (the first file of an algorithm signs); the other
// algorithms' keys are generated once and kept in the store.
func newKeySet(ctx context.Context, st sessions.Store, accessAlg string, idAlgs []string, pems [][]byte, kek []byte, now func() time.Time) (*keySet, error) {
	ks := &keySet{access: algOrDefault(accessAlg), rings: map[jose.SignatureAlgorithm]*keyring{}}
	fileKeys := map[jose.SignatureAlgorithm][]*signingKey{}
	var first jose.SignatureAlgorithm
	for i, p := range pems {
		k, err := parseSigningKey(p, "", "", time.Time{})
		if err != nil {
			return nil, fmt.Errorf("signing key file %d: %w", i+1, err)
		}
		if i == 0 {
			first = k.alg
		}
		fileKeys[k.alg] = append(fileKeys[k.alg], k)
	}
	// Files without a key of the configured algorithm decide it, as before
	// there was one key per algorithm.
	if len(pems) > 0 && len(fileKeys[ks.access]) == 0 {
		ks.access = first
	}
	algs := SigningAlgorithms(string(ks.access), idAlgs...)
	for alg := range fileKeys {
		if !slices.Contains(algs, string(alg)) {
			algs = append(algs, string(alg))
		}
	}
	for _, a := range algs {
		if err := checkAlgorithm(a); err != nil {
			return nil, err
		}
		alg := jose.SignatureAlgorithm(a)
		if fk := fileKeys[alg]; len(fk) > 0 {
			ks.rings[alg] = staticRing(alg, fk, now)
		} else {
			kr, err := storedRing(ctx, st, alg, kek, now)
			if err != nil {
				return nil, err
			}
			ks.rings[alg] = kr
		}
		ks.order = append(ks.order, alg)
	}
	return ks, nil
}

// accessKey signs access tokens.
func (ks *keySet) accessKey() (*signingKey, error) { return ks.rings[ks.access].active() }

// idTokenKey signs the ID tokens of a client asking for alg ("" = RS256).
func (ks *keySet) idTokenKey(alg string) (*signingKey, error) {
	if alg == "" {
		alg = DefaultIDTokenAlgorithm
	}
	kr, ok := ks.rings[jose.SignatureAlgorithm(alg)]
	if !ok {
		return nil, fmt.Errorf("no %s key: %w", alg, ErrUnsupportedAlgorithm)
	}
	return kr.active()
}

// algorithms are every algorithm usher's tokens may carry, RS256 first:
// discovery lists them for ID tokens and usher's own verifiers accept them.
func (ks *keySet) algorithms() []string {
	out := make([]string, len(ks.order))
	for i, a := range ks.order {
		out[i] = string(a)
	}
	return out
}

// published is every algorithm's JWKS share (pending, active, previous).
func (ks *keySet) published() []op.Key {
	var out []op.Key
	for _, a := range ks.order {
		out = append(out, ks.rings[a].published()...)
	}
	return out
}

// ready: every algorithm has a key that can sign.
func (ks *keySet) ready() error {
	for _, a := range ks.order {
		if _, err := ks.rings[a].active(); err != nil {
			return fmt.Errorf("%s: %w", a, err)
		}
	}
	return nil
}

func (ks *keySet) load(ctx context.Context) error {
	var errs []error
	for _, a := range ks.order {
		errs = append(errs, ks.rings[a].load(ctx))
	}
	return errors.Join(errs...)
}

// maybeRotate rotates each algorithm's keys on its own schedule.
func (ks *keySet) maybeRotate(ctx context.Context, period, maxTokenTTL time.Duration, kek []byte) error {
	var errs []error
	for _, a := range ks.order {
		errs = append(errs, ks.rings[a].maybeRotate(ctx, period, maxTokenTTL, kek))
	}
	return errors.Join(errs...)
}
