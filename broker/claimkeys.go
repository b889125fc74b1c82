package broker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
)

// ErrFoldingClaimKeys: a token's payload holds two top-level keys that
// encoding/json would take for one claim ("sub" and "ſub", "scope" and
// "SCOPE"); which one a reader believes depends on the reader.
var ErrFoldingClaimKeys = errors.New("token payload has two claims that fold to the same name")

// maxPayloadKeys bounds the quadratic comparison below; usher's own tokens
// carry a few dozen claims at most.
const maxPayloadKeys = 512

// foldingClaimKeys reports ErrFoldingClaimKeys when two top-level keys of a
// JSON object payload are equal under Unicode simple folding, which is how
// encoding/json (zitadel/oidc, go-oidc, usher) matches keys to fields.
func foldingClaimKeys(payload []byte) error {
	dec := json.NewDecoder(bytes.NewReader(payload))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return errors.New("token payload is not a JSON object")
	}
	var keys []string
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return fmt.Errorf("reading the token payload: %w", err)
		}
		key, _ := t.(string)
		for _, k := range keys {
			if strings.EqualFold(k, key) {
				return fmt.Errorf("%w: %q and %q", ErrFoldingClaimKeys, k, key)
			}
		}
		if keys = append(keys, key); len(keys) > maxPayloadKeys {
			return errors.New("token payload has too many claims")
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return fmt.Errorf("reading the token payload: %w", err)
		}
	}
	return nil
}

// tokenClaimKeysCheck applies foldingClaimKeys to a compact JWS. Call it only
// on a token whose signature was verified (it reads the payload without).
// Anything that is not a JWS has no JSON payload to check: nil.
func tokenClaimKeysCheck(token string) error {
	jws, err := jose.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256, jose.RS256, jose.EdDSA})
	if err != nil {
		return nil
	}
	return foldingClaimKeys(jws.UnsafePayloadWithoutVerification())
}
