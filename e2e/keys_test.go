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

func jwksKids(t *testing.T, d *app.Dev) []string {
	t.Helper()
	resp, err := http.Get(strings.TrimSuffix(d.IssuerURL, "/") + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var set struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	json.NewDecoder(resp.Body).Decode(&set)
	var out []string
	for _, k := range set.Keys {
		out = append(out, k.Kid)
	}
	return out
}

// A rotated key is published before it signs; once it signs, the previous
// key stays published so tokens it signed still verify. Generated keys are
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
	first := jwksKids(t, d)
	if len(first) != 1 {
		t.Fatalf("JWKS before rotation: %v", first)
	}
	stored, err := d.App.Store.SigningKeys(ctx)
	if err != nil || len(stored) != 1 {
		t.Fatalf("stored keys: %v %v", stored, err)
	}
	if pem := string(stored[0].PrivateKeyPEM); !strings.HasPrefix(pem, "usher-kek-v1:") || strings.Contains(pem, "PRIVATE KEY") {
		t.Fatalf("signing key stored in clear: %.40q", pem)
	}

	kekBytes, _ := base64.StdEncoding.DecodeString(kek)
	k, err := broker.RotateSigningKey(ctx, d.App.Store, "ES256", kekBytes, clock.Now(), time.Hour, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.App.Broker.ReloadKeys(ctx); err != nil {
		t.Fatal(err)
	}
	if kids := jwksKids(t, d); len(kids) != 2 || kids[0] != k.ID {
		t.Fatalf("JWKS after rotation = %v, want the new key %s published and the active one kept", kids, k.ID)
	}
	tok := funnelToken(t, d, "invitations:read")
	if kid := jwtHeader(t, tok)["kid"]; kid != first[0] {
		t.Fatalf("new key signs before its activation: kid %v", kid)
	}
	clock.Advance(2 * time.Hour)
	tok = funnelToken(t, d, "invitations:read")
	if kid := jwtHeader(t, tok)["kid"]; kid != k.ID {
		t.Fatalf("after activation, kid = %v, want %s", kid, k.ID)
	}
	if kids := jwksKids(t, d); len(kids) != 2 || kids[1] != first[0] {
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

// Keys from PEM files (signing.key_files): the first signs, all are published.
func TestSigningKeysFromPEMFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var files []string
	for i, alg := range []string{"RS256", "ES256"} {
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
		c.Signing.Algorithm = "ES256" // the files decide: the first is RSA
		c.Signing.KeyFiles = files
	}})
	tok := funnelToken(t, d, "invitations:read")
	h := jwtHeader(t, tok)
	if h["alg"] != "RS256" {
		t.Fatalf("token signed with %v, want the first file's RS256 key", h["alg"])
	}
	if kids := jwksKids(t, d); !slices.Contains(kids, h["kid"].(string)) {
		t.Fatalf("JWKS %v lacks the signing kid %v", kids, h["kid"])
	}
	if r := apiCall(t, d, http.MethodGet, "/api/invitations", tok, nil); r.status != http.StatusOK {
		t.Fatalf("a token signed by a file key: %d %s", r.status, r.raw)
	}
}
