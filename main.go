// Command usher is an OpenID Connect broker that adds invitations to Auth0.
//
//	usher serve --config usher.yaml   run in production
//	usher dev                         usher + a stand-in Auth0 + a demo SPA on loopback
//	usher config check --config F     validate a config file and print it, secrets redacted
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"gopkg.in/yaml.v3"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
)

func main() {
	tuneGC(os.Getenv)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// defaultGCPercent is the garbage collector's target when GOGC is not set.
// usher's live heap is a few MiB (5.7 MiB in use with 100,000 invitations
// and 10,000 sessions), so with Go's default (100) it collected about once
// per 100 client_credentials requests (gctrace: 190 collections in a
// 20,000-request run, 39 at 400), and marking took about 14 % of the CPU in
// that benchmark's profile; 400 trades about 12 MiB of RSS (the same
// records on Redis: 36 → 48 MiB) for that CPU. GOGC (e.g. GOGC=100)
// overrides it.
const defaultGCPercent = 400

// tuneGC sets defaultGCPercent unless GOGC is set, and reports whether it did.
func tuneGC(getenv func(string) string) bool {
	if getenv("GOGC") != "" {
		return false
	}
	debug.SetGCPercent(defaultGCPercent)
	return true
}

const usage = `usher — an OpenID Connect broker with invitations, in front of Auth0

Usage:
  usher serve --config usher.yaml     run usher
  usher dev [--addr 127.0.0.1:8080]   run usher, a stand-in Auth0 and a demo SPA on loopback
  usher config check --config FILE    validate a configuration file
  usher keys list|rotate --config F   list or rotate the signing keys in the store
  usher store migrate --from bolt:PATH --to redis://HOST:PORT [--merge]
                                      copy the state between backends (and back), then verify
  usher store backup --out FILE       a consistent snapshot of the running usher's bbolt store
                                      (admin API, scope store:backup; usher store help)
  usher healthcheck [URL]             exit 0 when URL (default http://127.0.0.1:8080/readyz) answers 200
  usher invite create|list|revoke|resend|import ...
                                      manage invitations through the admin API (usher invite help)
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = cmdServe(ctx, args[1:], stderr)
	case "dev":
		err = cmdDev(ctx, args[1:], stdout, stderr)
	case "config":
		if len(args) < 2 || args[1] != "check" {
			fmt.Fprint(stderr, usage)
			return 2
		}
		err = cmdConfigCheck(args[2:], stdout)
	case "keys":
		err = cmdKeys(ctx, args[1:], stdout)
	case "healthcheck":
		err = cmdHealthcheck(ctx, args[1:])
	case "store":
		err = cmdStore(ctx, args[1:], stdout, stderr)
	case "invite":
		err = cmdInvite(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 2
		}
		fmt.Fprintf(stderr, "usher: %v\n", err)
		return 1
	}
	return 0
}

func newLogger(w io.Writer, format, level string) *slog.Logger {
	return app.NewLogger(w, format, level)
}

func cmdServe(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	path := fs.String("config", os.Getenv("USHER_CONFIG"), "path to the YAML config file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(*path, os.LookupEnv)
	if err != nil {
		return err
	}
	log := newLogger(stderr, cfg.Log.Format, cfg.Log.Level)
	slog.SetDefault(log)
	a, err := app.New(ctx, cfg, app.Options{Logger: log})
	if err != nil {
		return err
	}
	defer a.Close()
	log.Info("usher listening", "addr", cfg.Listen, "metrics_addr", cfg.Metrics.Listen, "issuer", cfg.Issuer)
	return a.ServeAll(ctx, log)
}

func cmdDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8080", "usher's address")
	issuer := fs.String("issuer", "", "usher's issuer URL (default http://<addr>)")
	idpAddr := fs.String("devidp-addr", "127.0.0.1:8081", "the stand-in Auth0's address")
	spaAddr := fs.String("spa-addr", "127.0.0.1:8082", "the demo SPA's address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := newLogger(stderr, "text", "info")
	slog.SetDefault(log)
	d, err := app.StartDev(ctx, app.DevOptions{Addr: *addr, Issuer: *issuer, DevIDPAddr: *idpAddr, SPAAddr: *spaAddr, Logger: log})
	if err != nil {
		return err
	}
	defer d.Close()
	fmt.Fprintf(stdout, `usher dev is running (development only: nothing here is safe for production)

  demo SPA        %s
  usher issuer    %s   (discovery: %s/.well-known/openid-configuration)
  stand-in Auth0  %s
  mail outbox     %s
  verify mails    %su/verification-mails   (devidp's: a sign-up's email is verified once its link is followed)
  metrics         %s
  admin page      %s/admin   (sign in as %s / %s)

Fixtures:
  user            %s / %s  (or sign up with any email)
  SPA client      %s (public, PKCE)
  funnel client   %s / %s (client_credentials; scopes invitations:write invitations:read)

To run 'usher invite' (and the README's examples) against this usher, in another shell:
%s
Press Ctrl-C to stop.
`, d.SPAURL, d.IssuerURL, trimSlash(d.IssuerURL), d.IDPURL, d.OutboxURL, d.IDPURL, d.MetricsURL, trimSlash(d.IssuerURL),
		app.DevAdminEmail, app.DevAdminPassword, app.DevUserEmail, app.DevUserPassword, app.DevSPAClientID, app.DevFunnelClientID, app.DevFunnelSecret,
		devExports(d.IssuerURL))
	<-ctx.Done()
	return nil
}

// devExports are the shell lines that point `usher invite` at a dev usher:
// with other ports than the defaults, the CLI's default issuer is wrong.
func devExports(issuer string) string {
	return fmt.Sprintf("  export USHER_ISSUER=%s\n  export USHER_CLIENT_ID=%s\n  export USHER_CLIENT_SECRET=%s\n",
		trimSlash(issuer), app.DevFunnelClientID, app.DevFunnelSecret)
}

func trimSlash(s string) string {
	if len(s) > 0 && s[len(s)-1] == '/' {
		return s[:len(s)-1]
	}
	return s
}

// exampleConfig is where every key is documented, with its default.
const exampleConfig = "deploy/usher.example.yaml"

// loadConfig loads the config for serve, config check and keys. With no file
// the defaults and USHER_* variables alone rarely make a valid config: the
// error then says that no file was given and where to start from.
func loadConfig(path string, env func(string) (string, bool)) (*config.Config, error) {
	cfg, err := config.Load(path, env)
	switch {
	case err == nil:
		return cfg, nil
	case path == "":
		return nil, fmt.Errorf("no configuration file was given (--config FILE or USHER_CONFIG), and the defaults with the USHER_* environment are not a valid configuration; start from %s (every key documented):\n%w", exampleConfig, err)
	}
	return nil, fmt.Errorf("invalid configuration:\n%w", err)
}

func cmdConfigCheck(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("config check", flag.ContinueOnError)
	path := fs.String("config", os.Getenv("USHER_CONFIG"), "path to the YAML config file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *path == "" && fs.NArg() > 0 {
		*path = fs.Arg(0)
	}
	cfg, err := loadConfig(*path, os.LookupEnv)
	if err != nil {
		return err
	}
	out, err := yaml.Marshal(cfg.Redacted())
	if err != nil {
		return err
	}
	if *path == "" {
		fmt.Fprintf(stdout, "no configuration file was given (--config FILE): checked the defaults and the USHER_* environment\n")
	}
	fmt.Fprintf(stdout, "configuration is valid\n---\n%s", out)
	return nil
}
