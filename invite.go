package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/usher-oidc/usher/client"
)

// `usher invite` is a thin client of the admin API: it gets a
// client_credentials token from usher's token endpoint and calls
// /api/invitations. It never touches the store.

const inviteUsage = `Usage:
  usher invite create --email ADDR [--role R]... [--claims JSON] [--metadata JSON]
                      [--external-id X] [--client-id-for CLIENT] [--expires-in 72h]
                      [--no-email] [--email-match any|exact|domain] [--inviter NAME]
                      [--link invite|authorize] [--idempotency-key K] [--json]
  usher invite list   [--status pending|redeemed|revoked|expired] [--email ADDR]
                      [--email-prefix P] [--external-id X] [--external-id-prefix P]
                      [--since DATE] [--until DATE] [--unsafe-claims] [--limit N] [--all] [--json]
  usher invite revoke ID [--json]
  usher invite resend ID [--json]
  usher invite import people.csv [--no-email] [--role R]... [--client-id-for CLIENT]
                      [--expires-in D] [--email-match M] [--inviter NAME] [--link L]

Connection (every subcommand):
  --issuer URL            usher's issuer (env USHER_ISSUER, default http://127.0.0.1:8080)
  --client-id ID          a client allowed client_credentials (env USHER_CLIENT_ID)
  --client-secret SECRET  its secret (env USHER_CLIENT_SECRET; prefer the environment)

Notes:
  The invitation link (url) is shown only by create and resend: usher stores a
  hash of its token, never the token. resend issues a new link and kills the old one;
  it mails the new link only when the invitation was mailed (not --no-email).
  --claims and --metadata take a JSON object, or @FILE to read one from a file.
  --expires-in takes a Go duration (90m, 72h) or whole days (7d).
  --link authorize makes the link {issuer}/authorize?client_id=APP&invitation=inv_…
  instead of {issuer}/invite/inv_…; resend keeps the form.
  import reads a CSV whose header names the columns email (required), roles
  (separated by spaces or ';'), claims (a JSON object), external_id, metadata.
  Each row carries an Idempotency-Key derived from that row's own cells, so
  running a fixed file again within 24 hours creates only the rows that
  failed before (or changed).
`

const (
	defaultIssuer = "http://127.0.0.1:8080"
	scopeRead     = client.ScopeRead
	scopeWrite    = client.ScopeWrite
)

func cmdInvite(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runInvite(ctx, args, stdout, stderr, os.Getenv)
}

// inviteCmd is one invocation of `usher invite SUB`.
type inviteCmd struct {
	sub            string
	stdout, stderr io.Writer
	getenv         func(string) string
	fs             *flag.FlagSet
	issuer         string
	clientID       string
	clientSecret   string
	jsonOut        bool
}

func runInvite(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, inviteUsage)
		return flag.ErrHelp
	}
	c := &inviteCmd{sub: args[0], stdout: stdout, stderr: stderr, getenv: getenv}
	switch c.sub {
	case "create":
		return c.create(ctx, args[1:])
	case "list":
		return c.list(ctx, args[1:])
	case "revoke":
		return c.revoke(ctx, args[1:])
	case "resend":
		return c.resend(ctx, args[1:])
	case "import":
		return c.importCSV(ctx, args[1:])
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, inviteUsage)
		return nil
	}
	fmt.Fprintf(stderr, "usher invite: unknown subcommand %q\n\n%s", c.sub, inviteUsage)
	return flag.ErrHelp
}

// flags starts the subcommand's flag set with the connection flags. The
// secret's flag has no default, so that no usage text can ever show it.
func (c *inviteCmd) flags() *flag.FlagSet {
	fs := flag.NewFlagSet("invite "+c.sub, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	fs.Usage = func() { fmt.Fprint(c.stderr, inviteUsage) }
	fs.StringVar(&c.issuer, "issuer", "", "usher's issuer URL (env USHER_ISSUER)")
	fs.StringVar(&c.clientID, "client-id", "", "client ID (env USHER_CLIENT_ID)")
	fs.StringVar(&c.clientSecret, "client-secret", "", "client secret (env USHER_CLIENT_SECRET)")
	c.fs = fs
	return fs
}

// parse parses flags anywhere among the arguments (`revoke ID --json` as
// well as `revoke --json ID`) and returns the positional arguments.
func (c *inviteCmd) parse(args []string) ([]string, error) {
	var pos []string
	for {
		if err := c.fs.Parse(args); err != nil {
			return nil, fmt.Errorf("%w (%v)", flag.ErrHelp, err) // flag printed the error and the usage
		}
		rest := c.fs.Args()
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// usagef reports a usage error: exit code 2.
func (c *inviteCmd) usagef(format string, args ...any) error {
	fmt.Fprintf(c.stderr, "usher invite %s: %s\nRun 'usher invite help' for usage.\n", c.sub, fmt.Sprintf(format, args...))
	return flag.ErrHelp
}

// ---- create ----

// createFlags are the invitation fields shared by create and import.
type createFlags struct {
	roles       stringList
	clientFor   string
	expiresIn   string
	noEmail     bool
	emailMatch  string
	inviter     string
	link        string
	locale      string
	expiresSecs *int64
}

func (f *createFlags) register(fs *flag.FlagSet) {
	fs.Var(&f.roles, "role", "a role to grant (repeatable)")
	fs.StringVar(&f.clientFor, "client-id-for", "", "the client (app) the invitation is for")
	fs.StringVar(&f.expiresIn, "expires-in", "", "lifetime, e.g. 72h or 7d (default: usher's configured default)")
	fs.BoolVar(&f.noEmail, "no-email", false, "do not mail the invitation; only return its link")
	fs.StringVar(&f.emailMatch, "email-match", "", "who may redeem it: any, exact or domain")
	fs.StringVar(&f.inviter, "inviter", "", "who invites (shown in the mail; default: the client ID)")
	fs.StringVar(&f.link, "link", "", "the link's form: invite (/invite/<token>, default) or authorize (/authorize?client_id=…&invitation=<token>)")
	fs.StringVar(&f.locale, "locale", "", "the language of the invitation mail, a BCP 47 tag such as fr or pt-BR (default: English)")
}

func (c *inviteCmd) checkCreateFlags(f *createFlags) error {
	if f.expiresIn != "" {
		d, err := parseLifetime(f.expiresIn)
		if err != nil {
			return c.usagef("--expires-in: %v", err)
		}
		secs := int64(d / time.Second)
		f.expiresSecs = &secs
	}
	switch f.emailMatch {
	case "", "any", "exact", "domain":
	default:
		return c.usagef("--email-match must be any, exact or domain, not %q", f.emailMatch)
	}
	switch f.link {
	case "", "invite", "authorize":
	default:
		return c.usagef("--link must be invite or authorize, not %q", f.link)
	}
	for _, r := range f.roles {
		if strings.TrimSpace(r) == "" {
			return c.usagef("--role must not be empty")
		}
	}
	return nil
}

// parseLifetime reads a Go duration, or whole days ("7d").
func parseLifetime(s string) (time.Duration, error) {
	var d time.Duration
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil {
			return 0, fmt.Errorf("%q is not a duration (examples: 90m, 72h, 7d)", s)
		}
		d = time.Duration(days) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("%q is not a duration (examples: 90m, 72h, 7d)", s)
		}
	}
	if d < time.Second {
		return 0, fmt.Errorf("%q must be at least one second", s)
	}
	return d, nil
}

func (f *createFlags) body(email string, roles []string) client.CreateRequest {
	b := client.CreateRequest{
		Email: email, ClientID: f.clientFor, ExpiresIn: f.expiresSecs,
		EmailMatch: f.emailMatch, Inviter: f.inviter, Link: f.link, Locale: f.locale,
	}
	for _, r := range append(slices.Clone(roles), f.roles...) {
		if !slices.Contains(b.Roles, r) {
			b.Roles = append(b.Roles, r)
		}
	}
	if f.noEmail {
		no := false
		b.SendEmail = &no
	}
	return b
}

func (c *inviteCmd) create(ctx context.Context, args []string) error {
	fs := c.flags()
	var cf createFlags
	cf.register(fs)
	email := fs.String("email", "", "the invitee's email address (required)")
	claims := fs.String("claims", "", "claims for the invitee's tokens: a JSON object or @FILE")
	metadata := fs.String("metadata", "", "data kept with the invitation (not in tokens): a JSON object or @FILE")
	externalID := fs.String("external-id", "", "your reference; a pending invitation with the same one is returned instead of a new one")
	idemKey := fs.String("idempotency-key", "", "makes a retried create safe: the same key replays the first answer (24h)")
	fs.BoolVar(&c.jsonOut, "json", false, "print the API's JSON")
	pos, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return c.usagef("unexpected argument %q", pos[0])
	}
	if strings.TrimSpace(*email) == "" {
		return c.usagef("--email is required")
	}
	if err := c.checkCreateFlags(&cf); err != nil {
		return err
	}
	body := cf.body(*email, nil)
	body.ExternalID = *externalID
	if body.Claims, err = jsonObjectArg(*claims); err != nil {
		return c.usagef("--claims: %v", err)
	}
	if body.Metadata, err = jsonObjectArg(*metadata); err != nil {
		return c.usagef("--metadata: %v", err)
	}
	ac, err := c.client(scopeWrite)
	if err != nil {
		return err
	}
	inv, rep, err := ac.CreateInvitation(ctx, body, *idemKey)
	inv, err = c.invitationAnswer(ac, inv, rep, err)
	if err != nil || inv == nil {
		return err // nil, nil: printed as JSON
	}
	switch {
	case rep.Status == http.StatusOK && inv.URL == "":
		fmt.Fprintf(c.stdout, "already invited: invitation %s with external_id %q is still pending; nothing new was created.\n", inv.ID, inv.ExternalID)
		c.printInvitation(inv)
		fmt.Fprintf(c.stdout, "Its link was shown when it was created; 'usher invite resend %s' issues a new one.\n", inv.ID)
	default:
		if rep.Replayed {
			fmt.Fprintln(c.stdout, "replayed: this Idempotency-Key was already used; this is the first answer, nothing new was created.")
		} else {
			fmt.Fprintln(c.stdout, "created invitation")
		}
		c.printInvitation(inv)
		c.printLinkNote(inv)
	}
	return nil
}

// jsonObjectArg reads a JSON object from a flag value or, with @FILE, a file.
func jsonObjectArg(v string) (map[string]any, error) {
	if v == "" {
		return nil, nil
	}
	if name, ok := strings.CutPrefix(v, "@"); ok {
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, err
		}
		v = string(b)
	}
	return parseJSONObject(v)
}

func parseJSONObject(s string) (map[string]any, error) {
	var raw any
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("not valid JSON: %v", err)
	}
	if dec.More() {
		return nil, errors.New("not valid JSON: unexpected data after the object")
	}
	m, ok := raw.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("must be a JSON object like {\"key\": \"value\"}, not %s", jsonKind(raw))
	}
	return m, nil
}

func jsonKind(v any) string {
	switch v.(type) {
	case []any:
		return "an array"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

func (c *inviteCmd) printInvitation(inv *client.Invitation) {
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "  %s\t%s\n", k, v)
		}
	}
	row("id", inv.ID)
	row("status", string(inv.Status))
	row("email", inv.Email)
	row("roles", strings.Join(inv.Roles, " "))
	if len(inv.Claims) > 0 {
		b, _ := json.Marshal(inv.Claims)
		row("claims", string(b))
	}
	row("external_id", inv.ExternalID)
	row("client_id", inv.ClientID)
	row("email_match", inv.EmailMatch)
	if !inv.ExpiresAt.IsZero() {
		row("expires_at", inv.ExpiresAt.Format(time.RFC3339))
	}
	es := inv.EmailStatus
	if inv.EmailError != "" {
		es += " (" + inv.EmailError + ")"
	}
	row("email_status", es)
	row("url", inv.URL)
	tw.Flush()
}

func (c *inviteCmd) printLinkNote(inv *client.Invitation) {
	if inv.URL != "" {
		fmt.Fprintln(c.stdout, "The url is shown only now (usher keeps only a hash of its token); keep it if you send it yourself.")
	}
}

func (c *inviteCmd) printJSON(raw []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, bytes.TrimSpace(raw), "", "  "); err != nil {
		buf.Reset()
		buf.Write(bytes.TrimSpace(raw))
	}
	buf.WriteByte('\n')
	_, err := c.stdout.Write(buf.Bytes())
	return err
}

// ---- revoke, resend ----

func (c *inviteCmd) oneID(args []string) (string, error) {
	c.flags()
	c.fs.BoolVar(&c.jsonOut, "json", false, "print the API's JSON")
	pos, err := c.parse(args)
	if err != nil {
		return "", err
	}
	switch {
	case len(pos) == 0 || strings.TrimSpace(pos[0]) == "":
		return "", c.usagef("the invitation ID is required: usher invite %s ID", c.sub)
	case len(pos) > 1:
		return "", c.usagef("one invitation ID at a time (got %d arguments)", len(pos))
	}
	return pos[0], nil
}

func (c *inviteCmd) revoke(ctx context.Context, args []string) error {
	id, err := c.oneID(args)
	if err != nil {
		return err
	}
	ac, err := c.client(scopeWrite)
	if err != nil {
		return err
	}
	inv, rep, err := ac.RevokeInvitation(ctx, id)
	inv, err = c.invitationAnswer(ac, inv, rep, err)
	if err != nil || inv == nil {
		return err // nil, nil: printed as JSON
	}
	fmt.Fprintf(c.stdout, "revoked invitation %s (%s); its link no longer works\n", inv.ID, inv.Email)
	return nil
}

func (c *inviteCmd) resend(ctx context.Context, args []string) error {
	id, err := c.oneID(args)
	if err != nil {
		return err
	}
	ac, err := c.client(scopeWrite)
	if err != nil {
		return err
	}
	inv, rep, err := ac.ResendInvitation(ctx, id)
	inv, err = c.invitationAnswer(ac, inv, rep, err)
	if err != nil || inv == nil {
		return err // nil, nil: printed as JSON
	}
	fmt.Fprintln(c.stdout, "resent invitation: a new link; the previous one no longer works")
	c.printInvitation(inv)
	c.printLinkNote(inv)
	return nil
}
