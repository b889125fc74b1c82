package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/broker"
	"github.com/usher-oidc/usher/config"
)

// jwk is the part of a published key the tests look at.
type jwk struct{ Kid, Alg string }

func jwksKeys(t *testing.T, d *app.Dev) []jwk {
	t.Helper()
	resp, err := http.Get(strings.TrimSuffix(d.IssuerURL, "/") + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var set struct {
		Keys []jwk `json:"keys"`
	}
	json.NewDecoder(resp.Body).Decode(&set)
	return set.Keys
}

// jwksKids lists the published kids of alg, in JWKS order (pending first).
func jwksKids(t *testing.T, d *app.Dev, alg string) []string {
	t.Helper()
	var out []string
	for _, k := range jwksKeys(t, d) {
		if k.Alg == alg {
			out = append(out, k.Kid)
		}
	}
	return out
}

// signInTokens signs the dev user in to the demo client and returns the tokens.
func signInTokens(t *testing.T, d *app.Dev) tokenResponse {
	t.Helper()
	code, verifier := newAgent(t, d.SPAURL).signIn(d, app.DevUserEmail, app.DevUserPassword, false)
	tr := exchangeCode(t, d, code, verifier)
	if tr.IDToken == "" {
		t.Fatalf("token response: %+v", tr)
	}
	return tr
}

// A rotated key is published before it signs; once it signs, the previous
// key stays published so tokens it signed still verify. usher holds one key
// per algorithm (ES256 access tokens, RS256 ID tokens), each generated once,
// encrypted at rest with the key-encryption key, and a wrong one refuses to start.
func TestKeyRotationAndEncryptionAtRest(t *testing.T) {
	t.Parallel()
	clock := &testClock{}
	kek := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	dbPath := filepath.Join(t.TempDir(), "usher.db")
	d := startDev(t, app.DevOptions{Now: clock.Now, StorePath: dbPath, Configure: func(c *config.Config) {
		c.Store.KeyEncryptionKey = kek
	}})
	ctx := context.Background()
	first, firstRS := jwksKids(t, d, "ES256"), jwksKids(t, d, "RS256")
	if len(first) != 1 || len(firstRS) != 1 || len(jwksKeys(t, d)) != 2 {
		t.Fatalf("JWKS before rotation: %v, want one ES256 and one RS256 key", jwksKeys(t, d))
	}
	stored, err := d.App.Store.SigningKeys(ctx)
	if err != nil || len(stored) != 2 {
		t.Fatalf("stored keys: %v %v", stored, err)
	}
	for _, k := range stored {
		if pem := string(k.PrivateKeyPEM); !strings.HasPrefix(pem, "usher-kek-v1:") || strings.Contains(pem, "PRIVATE KEY") {
			t.Fatalf("%s signing key stored in clear: %.40q", k.Algorithm, pem)
		}
	}

	kekBytes, _ := base64.StdEncoding.DecodeString(kek)
	rotated := map[string]string{} // alg → new kid
	for _, alg := range []string{"ES256", "RS256"} {
		k, err := broker.RotateSigningKey(ctx, d.App.Store, alg, kekBytes, clock.Now(), time.Hour, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		rotated[alg] = k.ID
	}
	if err := d.App.Broker.ReloadKeys(ctx); err != nil {
		t.Fatal(err)
	}
	for alg, kid := range rotated {
		if kids := jwksKids(t, d, alg); len(kids) != 2 || kids[0] != kid {
			t.Fatalf("%s JWKS after rotation = %v, want the new key %s published and the active one kept", alg, kids, kid)
		}
	}
	tok := funnelToken(t, d, "invitations:read")
	if kid := jwtHeader(t, tok)["kid"]; kid != first[0] {
		t.Fatalf("new key signs before its activation: kid %v", kid)
	}
	clock.Advance(2 * time.Hour)
	tok = funnelToken(t, d, "invitations:read")
	if kid := jwtHeader(t, tok)["kid"]; kid != rotated["ES256"] {
		t.Fatalf("after activation, kid = %v, want %s", kid, rotated["ES256"])
	}
	if kid := jwtHeader(t, signInTokens(t, d).IDToken)["kid"]; kid != rotated["RS256"] {
		t.Fatalf("after activation, ID token kid = %v, want %s", kid, rotated["RS256"])
	}
	if kids := jwksKids(t, d, "ES256"); len(kids) != 2 || kids[1] != first[0] {
		t.Fatalf("JWKS after activation = %v, want new + previous", kids)
	}
	// Tokens signed by the new key are accepted by usher itself.
	if r := apiCall(t, d, http.MethodGet, "/api/invitations", tok, nil); r.status != http.StatusOK {
		t.Fatalf("API with a token of the rotated key: %d %s", r.status, r.raw)
	}

	// A wrong key-encryption key cannot read the keys: usher refuses to start.
	d.Close()
	wrong := base64.StdEncoding.EncodeToString([]byte("fedcba9876543210fedcba9876543210"))
	_, err = app.StartDev(ctx, app.DevOptions{StorePath: dbPath, Configure: func(c *config.Config) { c.Store.KeyEncryptionKey = wrong }})
	if err == nil || !strings.Contains(err.Error(), "key_encryption_key") {
		t.Fatalf("start with a wrong key-encryption key: %v", err)
	}
}

// signing.rotation_period rotates both kinds of key: each algorithm gets a
// pending key published at once that signs after the activation delay.
func TestScheduledRotationBothAlgorithms(t *testing.T) {
	t.Parallel()
	clock := &testClock{}
	d := startDev(t, app.DevOptions{Now: clock.Now, Configure: func(c *config.Config) {
		c.Signing.RotationPeriod = config.Duration(24 * time.Hour)
	}})
	ctx := context.Background()
	before := map[string][]string{"ES256": jwksKids(t, d, "ES256"), "RS256": jwksKids(t, d, "RS256")}
	clock.Advance(25 * time.Hour)
	if err := d.App.Broker.RotateKeysIfDue(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.App.Broker.ReloadKeys(ctx); err != nil {
		t.Fatal(err)
	}
	pending := map[string]string{}
	for alg, old := range before {
		kids := jwksKids(t, d, alg)
		if len(old) != 1 || len(kids) != 2 || kids[1] != old[0] {
			t.Fatalf("%s JWKS %v after the scheduled rotation (before %v), want pending + active", alg, kids, old)
		}
		pending[alg] = kids[0]
	}
	clock.Advance(broker.DefaultKeyActivationDelay + time.Minute)
	tr := signInTokens(t, d)
	if kid := jwtHeader(t, tr.IDToken)["kid"]; kid != pending["RS256"] {
		t.Errorf("ID token kid %v, want the rotated RS256 key %s", kid, pending["RS256"])
	}
	if kid := jwtHeader(t, tr.AccessToken)["kid"]; kid != pending["ES256"] {
		t.Errorf("access token kid %v, want the rotated ES256 key %s", kid, pending["ES256"])
	}
}

// Keys from PEM files (signing.key_files): per algorithm the first file
// signs; an algorithm no file covers gets a generated key in the store.
func TestSigningKeysFromPEMFiles(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		files      []string // algorithms of the files, in order
		alg        string   // signing.algorithm
		wantAT     string
		wantStored int // generated keys in the store
	}{
		{"one RSA and one EC key", []string{"RS256", "ES256"}, "ES256", "ES256", 0},
		{"EC key only: RS256 generated", []string{"ES256"}, "ES256", "ES256", 1},
		{"RSA key only: the files decide", []string{"RS256"}, "ES256", "RS256", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			var files []string
			for i, alg := range tc.files {
				k, err := broker.GenerateSigningKey(alg, time.Now(), time.Now())
				if err != nil {
					t.Fatal(err)
				}
				p := filepath.Join(dir, fmt.Sprintf("key%d.pem", i))
				if err := os.WriteFile(p, k.PrivateKeyPEM, 0o600); err != nil {
					t.Fatal(err)
				}
				files = append(files, p)
			}
			d := startDev(t, app.DevOptions{Configure: func(c *config.Config) {
				c.Signing.Algorithm = tc.alg
				c.Signing.KeyFiles = files
			}})
			tok := funnelToken(t, d, "invitations:read")
			tr := signInTokens(t, d)
			for _, c := range []struct{ what, token, alg string }{{"access token", tok, tc.wantAT}, {"ID token", tr.IDToken, "RS256"}} {
				h := jwtHeader(t, c.token)
				if h["alg"] != c.alg {
					t.Errorf("%s signed with %v, want %s", c.what, h["alg"], c.alg)
				}
				if kids := jwksKids(t, d, c.alg); !slices.Contains(kids, h["kid"].(string)) {
					t.Errorf("JWKS %v lacks the %s kid %v", kids, c.what, h["kid"])
				}
			}
			if r := apiCall(t, d, http.MethodGet, "/api/invitations", tok, nil); r.status != http.StatusOK {
				t.Fatalf("a token signed by a file key: %d %s", r.status, r.raw)
			}
			if stored, _ := d.App.Store.SigningKeys(context.Background()); len(stored) != tc.wantStored {
				t.Errorf("%d keys generated in the store, want %d", len(stored), tc.wantStored)
			}
		})
	}
}
