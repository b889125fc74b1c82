package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/usher-oidc/usher/client"
	boltstore "github.com/usher-oidc/usher/store/bolt"
)

// `usher store backup` is a client of the admin API, like `usher invite`:
// bbolt's file lock keeps a second process away from the running usher's
// database, so the running usher takes the snapshot and streams it.

// runStoreBackup: `usher store backup --out FILE [--force]`.
func runStoreBackup(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	ac, out, force, err := parseStoreBackupArgs(args, stderr, getenv)
	if err != nil {
		return err
	}
	return writeBackup(ctx, ac, out, force, stdout)
}

// parseStoreBackupArgs parses the command line of `usher store backup` and
// builds its API client; a usage error has been printed to stderr and
// wraps flag.ErrHelp.
func parseStoreBackupArgs(args []string, stderr io.Writer, getenv func(string) string) (ac apiClient, out string, force bool, err error) {
	fs := flag.NewFlagSet("store backup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, storeUsage) }
	var issuer, clientID, clientSecret string
	fs.StringVar(&issuer, "issuer", "", "usher's issuer URL (env USHER_ISSUER)")
	fs.StringVar(&clientID, "client-id", "", "client ID (env USHER_CLIENT_ID)")
	fs.StringVar(&clientSecret, "client-secret", "", "client secret (env USHER_CLIENT_SECRET)")
	fs.StringVar(&out, "out", "", "the file to write the backup to (required)")
	fs.BoolVar(&force, "force", false, "replace FILE when it exists")
	usagef := func(format string, args ...any) (apiClient, string, bool, error) {
		fmt.Fprintf(stderr, "usher store backup: %s\nRun 'usher store help' for usage.\n", fmt.Sprintf(format, args...))
		return apiClient{}, "", false, flag.ErrHelp
	}
	if err := fs.Parse(args); err != nil {
		return apiClient{}, "", false, fmt.Errorf("%w (%v)", flag.ErrHelp, err) // flag printed the error and the usage
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	if out == "" {
		return usagef("--out FILE is required")
	}
	ac, err = newAPIClient(issuer, clientID, clientSecret, getenv, client.ScopeStoreBackup)
	var ue usageError
	if errors.As(err, &ue) {
		return usagef("%s", string(ue))
	}
	if err != nil {
		return apiClient{}, "", false, err
	}
	// The download takes as long as the file needs: no overall timeout, but
	// usher must start answering within a minute (ctx ends it on Ctrl-C).
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = time.Minute
	ac.HTTP = &http.Client{Transport: tr}
	return ac, out, force, nil
}

// writeBackup streams the backup into a temporary file beside out, checks
// that it is a usable bbolt backup, then renames it to out, so that out is
// never left half written; it says what it wrote on stdout.
func writeBackup(ctx context.Context, ac apiClient, out string, force bool, stdout io.Writer) error {
	if err := checkTarget(out, force); err != nil {
		return err
	}
	dir := filepath.Dir(out)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(out)+".*.partial")
	if err != nil {
		return fmt.Errorf("cannot write beside %s: %w", out, err)
	}
	done := false
	defer func() {
		if !done {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	n, err := ac.Backup(ctx, tmp)
	if err != nil {
		return explainBackup(ac, err, out)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	invitations, err := boltstore.CheckBackup(tmp.Name())
	if err != nil {
		return fmt.Errorf("usher sent %d bytes that are not a usable backup (%v); %s was not written", n, err, out)
	}
	if err := checkTarget(out, force); err != nil { // it may have appeared during the download
		return err
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return fmt.Errorf("moving the backup into place: %w", err)
	}
	done = true
	syncDir(dir)
	printBackupWritten(stdout, out, n, invitations)
	return nil
}

// printBackupWritten tells what the backup file holds and what it does not.
func printBackupWritten(stdout io.Writer, out string, n int64, invitations int) {
	noun := "invitations"
	if invitations == 1 {
		noun = "invitation"
	}
	fmt.Fprintf(stdout, "backup written: %s (%s, %d bytes; %d %s)\n", out, humanBytes(n), n, invitations, noun)
	fmt.Fprintln(stdout, "Not included: the flow file of sign-ins in flight (<store.path>.flow). To restore, stop usher and put this file at store.path.")
}

// checkTarget refuses an existing --out unless force, and a directory always.
func checkTarget(out string, force bool) error {
	fi, err := os.Stat(out)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return err
	case fi.IsDir():
		return fmt.Errorf("--out %s is a directory; name the backup file, e.g. %s", out, filepath.Join(out, "usher-backup.db"))
	case !force:
		return fmt.Errorf("%s already exists; pass --force to replace it (or choose another --out)", out)
	}
	return nil
}

// syncDir makes a rename in dir durable (best effort: not every system
// can sync a directory).
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

// explainBackup words a backup failure for the command line.
func explainBackup(ac apiClient, err error, out string) error {
	var te *client.TokenError
	var p *client.Problem
	switch {
	case errors.As(err, &te) && te.Kind == client.TokenNotAllowed:
		return fmt.Errorf("client %q may not take backups of usher's store (%s): in usher's config, list the scope %s in that client's scopes "+
			"(a confidential client with only the client_credentials grant); usher gives it to no client otherwise. %s was not written",
			ac.ClientID, client.JoinNonEmpty(": ", te.Code, te.Description), client.ScopeStoreBackup, out)
	case errors.As(err, &p) && p.Status == http.StatusForbidden:
		return fmt.Errorf("usher refused the backup: the access token of client %q lacks the scope %s (%s). %s was not written",
			ac.ClientID, client.ScopeStoreBackup, p.Error(), out)
	case errors.As(err, &p):
		return fmt.Errorf("%w. %s was not written", err, out)
	}
	if err = ac.explain(err); err != nil {
		return fmt.Errorf("%w; %s was not written", err, out)
	}
	return nil
}

// humanBytes is n in B, KiB, MiB or GiB.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, suffix := float64(n)/unit, "KiB"
	for _, s := range []string{"MiB", "GiB", "TiB"} {
		if v < unit {
			break
		}
		v, suffix = v/unit, s
	}
	return fmt.Sprintf("%.1f %s", v, suffix)
}
