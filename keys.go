package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/broker"
)

// cmdKeys: `usher keys list|rotate --config FILE`. Rotation works on the
// shared store, so with Redis it rotates every replica at once: the new key is
// published immediately and signs only after --activate-after.
func cmdKeys(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || (args[0] != "rotate" && args[0] != "list") {
		return fmt.Errorf("usage: usher keys list|rotate --config FILE [--activate-after 10m]")
	}
	fs := flag.NewFlagSet("keys "+args[0], flag.ContinueOnError)
	path := fs.String("config", os.Getenv("USHER_CONFIG"), "path to the YAML config file")
	after := fs.Duration("activate-after", broker.DefaultKeyActivationDelay, "publish the new key this long before it signs (longer than relying parties cache the JWKS)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	cfg, err := loadConfig(*path, os.LookupEnv)
	if err != nil {
		return err
	}
	if len(cfg.Signing.KeyFiles) > 0 {
		return fmt.Errorf("signing.key_files is set: keys come from files, rotate them by changing the files")
	}
	st, err := app.OpenStore(cfg, time.Now, nil)
	if err != nil {
		return err
	}
	defer st.Close()
	if args[0] == "rotate" {
		kek, err := cfg.Store.KeyEncryptionKeyBytes()
		if err != nil {
			return fmt.Errorf("store.key_encryption_key: %w", err)
		}
		t := cfg.Tokens
		maxTTL := max(time.Duration(t.AccessTokenTTL), time.Duration(t.IDTokenTTL), time.Duration(t.ClientCredentialsTTL))
		// Every algorithm usher signs with rotates: access tokens' and ID tokens'.
		var idAlgs []string
		for _, c := range cfg.Clients {
			idAlgs = append(idAlgs, c.IDTokenSignedResponseAlg)
		}
		for _, alg := range broker.SigningAlgorithms(cfg.Signing.Algorithm, idAlgs...) {
			k, err := broker.RotateSigningKey(ctx, st, alg, kek, time.Now(), *after, maxTTL)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "added key %s (%s): published now, signs from %s\n", k.ID, k.Algorithm, k.NotBefore.UTC().Format(time.RFC3339))
		}
	}
	keys, err := st.SigningKeys(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%-24s %-6s %-25s %s\n", "KID", "ALG", "CREATED", "SIGNS FROM")
	for _, k := range keys {
		fmt.Fprintf(stdout, "%-24s %-6s %-25s %s\n", k.ID, k.Algorithm, k.CreatedAt.UTC().Format(time.RFC3339), k.NotBefore.UTC().Format(time.RFC3339))
	}
	return nil
}

// cmdHealthcheck lets a container without a shell or curl (distroless)
// probe usher: exit 0 when the URL answers 200.
func cmdHealthcheck(ctx context.Context, args []string) error {
	u := "http://127.0.0.1:8080/readyz"
	if len(args) > 0 {
		u = args[0]
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %d", u, resp.StatusCode)
	}
	return nil
}
