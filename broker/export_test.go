package broker

import (
	"encoding/json"

	"github.com/zitadel/oidc/v3/pkg/crypto"
)

// SignAccessTokenPayloadForTest signs payload, byte for byte, as an usher
// access token (typ at+jwt, the active key): tests need payloads usher would
// never produce itself, such as two keys that fold to the same name.
func SignAccessTokenPayloadForTest(b *Broker, payload string) (string, error) {
	key, err := b.keys.accessKey()
	if err != nil {
		return "", err
	}
	return crypto.Sign(json.RawMessage(payload), key.atSigner)
}
