package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	boltstore "github.com/usher-oidc/usher/store/bolt"
	"github.com/usher-oidc/usher/store/migrate"
	redisstore "github.com/usher-oidc/usher/store/redis"
)

const storeUsage = `usage: usher store migrate --from SPEC --to SPEC [--merge] [--redis-prefix P]
       usher store backup --out FILE [--force] [--issuer URL] [--client-id ID] [--client-secret S]

migrate: SPEC is bolt:PATH (a bbolt file) or a redis:// or rediss:// URL. Stop
every usher using either store first. Every durable record is copied, and the
refresh tokens, browser sessions, revocations and idempotency keys that are
still live; a record already in the target is left alone, so a rerun after an
interruption copies the rest. A target holding records the source does not
have is refused unless --merge. The run ends with a verification table.

backup: asks the running usher (store.driver bolt) for a consistent snapshot
of its bbolt file through the admin API (GET /api/store/backup) while it keeps
serving. The bytes go to a temporary file beside FILE, which is synced and
checked to open as a usher database before it is renamed to FILE: FILE is
never a partial backup. An existing FILE is kept unless --force. The client
needs the client_credentials grant and the scope store:backup, which usher
gives to no client unless its scopes list it. Not included: the flow file
(<store.path>.flow), which holds only sign-ins in flight. To restore, stop
usher and put FILE at store.path. On Redis, use Redis's own persistence
(RDB, AOF, a replica) or 'usher store migrate --from redis://… --to bolt:FILE'.
  --issuer URL            usher's issuer (env USHER_ISSUER, default http://127.0.0.1:8080)
  --client-id ID          a client holding store:backup (env USHER_CLIENT_ID)
  --client-secret SECRET  its secret (env USHER_CLIENT_SECRET; prefer the environment)
`

// cmdStore: `usher store migrate` and `usher store backup`.
func cmdStore(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "backup" {
		return runStoreBackup(ctx, args[1:], stdout, stderr, os.Getenv)
	}
	if len(args) > 0 && (args[0] == "help" || args[0] == "-h" || args[0] == "--help") {
		fmt.Fprint(stdout, storeUsage)
		return nil
	}
	if len(args) == 0 || args[0] != "migrate" {
		return fmt.Errorf("%s", storeUsage)
	}
	fs := flag.NewFlagSet("store migrate", flag.ContinueOnError)
	from := fs.String("from", "", "the store to copy from: bolt:PATH or redis://…")
	to := fs.String("to", "", "the store to copy to: bolt:PATH or redis://…")
	merge := fs.Bool("merge", false, "copy into a target that holds other records too (they are kept)")
	prefix := fs.String("redis-prefix", "", `the Redis key prefix (default "usher:")`)
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *from == "" || *to == "" || fs.NArg() > 0 {
		return fmt.Errorf("%s", storeUsage)
	}
	if *from == *to {
		return fmt.Errorf("--from and --to are the same store")
	}
	src, closeSrc, err := openSpec(*from, *prefix)
	if err != nil {
		return fmt.Errorf("--from: %w", err)
	}
	defer closeSrc()
	dst, closeDst, err := openSpec(*to, *prefix)
	if err != nil {
		return fmt.Errorf("--to: %w", err)
	}
	defer closeDst()
	fmt.Fprintf(stdout, "migrating %s → %s\n", redactSpec(*from), redactSpec(*to))
	rep, err := migrate.Run(ctx, src, dst, migrate.Options{Merge: *merge})
	if rep != nil {
		rep.Print(stdout)
	}
	if errors.Is(err, migrate.ErrVerify) {
		return fmt.Errorf("%w: the target does not hold every source record as it is (see CHECK)", err)
	}
	return err
}

// openSpec opens bolt:PATH or a redis(s):// URL.
func openSpec(spec, prefix string) (migrate.Backend, func(), error) {
	switch {
	case strings.HasPrefix(spec, "bolt:"):
		path := strings.TrimPrefix(spec, "bolt:")
		if path == "" {
			return nil, nil, fmt.Errorf("bolt: needs a path")
		}
		st, err := boltstore.Open(path, boltstore.Options{SweepInterval: -1})
		if err != nil {
			return nil, nil, err
		}
		return st, func() { _ = st.Close() }, nil
	case strings.HasPrefix(spec, "redis://"), strings.HasPrefix(spec, "rediss://"):
		st, err := redisstore.Open(redisstore.Config{URL: spec}, redisstore.Options{Prefix: prefix})
		if err != nil {
			return nil, nil, err
		}
		return st, func() { _ = st.Close() }, nil
	}
	return nil, nil, fmt.Errorf("%q is neither bolt:PATH nor a redis:// URL", spec)
}

// redactSpec hides a password in a Redis URL.
func redactSpec(spec string) string {
	if i := strings.Index(spec, "://"); i >= 0 {
		if at := strings.LastIndex(spec, "@"); at > i {
			return spec[:i+3] + "…@" + spec[at+1:]
		}
	}
	return spec
}
