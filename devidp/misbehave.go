package devidp

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/zitadel/oidc/v3/pkg/op"
)

// Values that Misbehavior puts into ID tokens.
const (
	wrongIssuer   = "http://wrong-issuer.devidp.invalid/"
	wrongAudience = "devidp-wrong-audience"
	nonceSuffix   = "-devidp-wrong-nonce"
)

// tamperIDTokens alters the ID token of /oauth/token responses under
// Misbehavior's claim options. The library builds the claims itself (and
// always puts the client ID in aud), so the token is altered afterwards and
// signed again through go-jose with the key the library signs with.
// Misbehavior.BadSignature needs none of this: see store.SigningKey.
func (s *Server) tamperIDTokens(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m := s.store.getMisbehavior()
		if !m.WrongNonce && !m.WrongAudience && !m.WrongIssuer && !m.HS256 && !m.IDTokenWithoutEmail {
			next.ServeHTTP(w, r)
			return
		}
		rec := &bufferedResponse{header: make(http.Header)}
		next.ServeHTTP(rec, r)
		body := rec.body.Bytes()
		if rec.status == http.StatusOK {
			tampered, err := s.tamperTokenResponse(r.Context(), body, m)
			if err != nil {
				s.log.Error("devidp: cannot tamper with the ID token", "error", err)
			} else {
				body = tampered
			}
		}
		for k, v := range rec.header {
			w.Header()[k] = v
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(rec.status)
		w.Write(body)
	})
}

func (s *Server) tamperTokenResponse(ctx context.Context, body []byte, m Misbehavior) ([]byte, error) {
	var resp map[string]json.RawMessage
	if err := json.Unmarshal(body, &resp); err != nil {
		return nil, err
	}
	var raw string
	if err := json.Unmarshal(resp["id_token"], &raw); err != nil {
		return nil, fmt.Errorf("no id_token: %w", err)
	}
	jws, err := jose.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256, jose.ES256})
	if err != nil {
		return nil, err
	}
	// Our own token, just signed: reading it unverified is fine.
	var claims map[string]any
	dec := json.NewDecoder(bytes.NewReader(jws.UnsafePayloadWithoutVerification()))
	dec.UseNumber() // keep exp, iat, auth_time as they were
	if err := dec.Decode(&claims); err != nil {
		return nil, err
	}
	if m.WrongNonce {
		nonce, _ := claims["nonce"].(string)
		claims["nonce"] = nonce + nonceSuffix
	}
	if m.WrongAudience {
		claims["aud"] = []string{wrongAudience}
	}
	if m.WrongIssuer {
		claims["iss"] = wrongIssuer
	}
	if m.IDTokenWithoutEmail {
		delete(claims, "email")
		delete(claims, "email_verified")
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return nil, err
	}
	token, err := s.signIDToken(ctx, payload, audienceOf(claims), m)
	if err != nil {
		return nil, err
	}
	if resp["id_token"], err = json.Marshal(token); err != nil {
		return nil, err
	}
	return json.Marshal(resp)
}

// bufferedResponse holds a handler's response so it can be rewritten.
type bufferedResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header { return b.header }

func (b *bufferedResponse) WriteHeader(status int) {
	if b.status == 0 {
		b.status = status
	}
}

func (b *bufferedResponse) Write(p []byte) (int, error) {
	b.WriteHeader(http.StatusOK)
	return b.body.Write(p)
}

// signIDToken signs with the library's key or, under Misbehavior.HS256,
// with HMAC-SHA256 keyed by the client secret: "HS256 … the secret is
// created when you register an application (client secret)"
// (https://auth0.com/docs/get-started/applications/signing-algorithms).
// Such tokens carry no kid and verify against nothing in the JWKS. The HMAC
// is computed here: go-jose refuses secrets shorter than 32 bytes, Auth0 and
// devidp clients do not.
func (s *Server) signIDToken(ctx context.Context, payload []byte, clientID string, m Misbehavior) (string, error) {
	if m.HS256 {
		secret := s.store.clientSecret(clientID)
		if secret == "" {
			return "", errors.New("HS256: unknown client")
		}
		enc := base64.RawURLEncoding
		input := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString(payload)
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write([]byte(input))
		return input + "." + enc.EncodeToString(mac.Sum(nil)), nil
	}
	key, err := s.store.SigningKey(ctx)
	if err != nil {
		return "", err
	}
	signer, err := op.SignerFromKey(key)
	if err != nil {
		return "", err
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		return "", err
	}
	return obj.CompactSerialize()
}

// audienceOf is the ID token's client: aud as a string or its first entry.
func audienceOf(claims map[string]any) string {
	switch a := claims["aud"].(type) {
	case string:
		return a
	case []any:
		if len(a) > 0 {
			s, _ := a[0].(string)
			return s
		}
	}
	return ""
}
