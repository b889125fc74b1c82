package webhooks

// Signatures, as the Standard Webhooks specification has them (see
// webhooks.go): the secrets' format and the webhook-signature header.

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// decodeWebhookSecret returns the key bytes of a "whsec_<base64>" secret.
func decodeWebhookSecret(s string) ([]byte, error) {
	b64, ok := strings.CutPrefix(s, "whsec_")
	if !ok {
		return nil, errors.New(`must start with "whsec_"`)
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		if key, err = base64.RawStdEncoding.DecodeString(b64); err != nil {
			return nil, errors.New(`must be "whsec_" followed by base64`)
		}
	}
	if len(key) < 24 || len(key) > 64 {
		return nil, fmt.Errorf("must encode 24 to 64 bytes, not %d", len(key))
	}
	return key, nil
}

// SignWebhook returns the webhook-signature header value for a message: one
// "v1,<base64>" per secret, space-separated.
func SignWebhook(secrets []string, id string, ts time.Time, body []byte) (string, error) {
	keys := make([][]byte, 0, len(secrets))
	for i, s := range secrets {
		k, err := decodeWebhookSecret(s)
		if err != nil {
			return "", fmt.Errorf("webhooks: secrets[%d]: %w", i, err)
		}
		keys = append(keys, k)
	}
	return signWebhook(keys, id, ts.Unix(), body), nil
}

func signWebhook(keys [][]byte, id string, ts int64, body []byte) string {
	sigs := make([]string, len(keys))
	for i, k := range keys {
		m := hmac.New(sha256.New, k)
		m.Write([]byte(id))
		m.Write([]byte{'.'})
		m.Write([]byte(strconv.FormatInt(ts, 10)))
		m.Write([]byte{'.'})
		m.Write(body)
		sigs[i] = "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
	}
	return strings.Join(sigs, " ")
}
