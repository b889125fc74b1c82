package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	boltstore "github.com/usher-oidc/usher/store/bolt"
	"github.com/usher-oidc/usher/store/migrate"
	redisstore "github.com/usher-oidc/usher/store/redis"
)

const storeUsage = `usage: usher store migrate --from SPEC --to SPEC [--merge] [--redis-prefix P]

SPEC is bolt:PATH (a bbolt file) or a redis:// or rediss:// URL. Stop every
usher using either store first. Every durable record is copied, and the
refresh tokens, browser sessions, revocations and idempotency keys that are
still live; a record already in the target is left alone, so a rerun after an
interruption copies the rest. A target holding records the source does not
have is refused unless --merge. The run ends with a verification table.
`

// cmdStore: `usher store migrate`.
func cmdStore(ctx context.Context, args []string, stdout io.Writer) error {
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
