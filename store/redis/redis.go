// Package redis (imported as redisstore beside go-redis) is the shared backend: sessions.Store and grants.Store on
// Redis (standalone, Sentinel or Cluster) through go-redis's UniversalClient,
// so several usher replicas share one state. It passes store/conformance like
// the bbolt store and follows its semantics (refusals, events, expiry rules,
// revocation margins).
//
// # Atomicity
//
// Every decision that must not race (single-use codes, refresh rotation and
// reuse detection, redemption, idempotency keys, first signing key, job
// claims, one user per upstream identity) is taken inside Redis by a Lua script
// (EVALSHA, falling back to EVAL after a restart flushed the script cache).
// Go never reads a value and writes a decision based on it unchecked: where Go
// computes a new record (invitations, a relinked identity), the script writes it only if the
// record's version is still the one Go read (compare-and-set), and Go retries
// from a fresh read otherwise.
//
// # Redis Cluster
//
// A script may only touch keys of one hash slot, so keys that a script touches
// together share a hash tag (the part in braces decides the slot):
//
//	{f:<family>}:t:<hash>   refresh token      (rotation script: old, next, marker)
//	{f:<family>}:rev        family revocation marker
//	{g:<user>}              grant claims + updated_at (+ roles from record format v2)   (merge script: all four)
//	{g:<user>}:r, :i, :p    grant roles (v1), redeemed invitation IDs, pending merges
//	{i:<id>}                invitation (CAS script)
//	{x:<external_id>}       the pending invitation holding an external_id
//	{jobs}:…                every job and every queue (claim script)
//	{rl:<limit>:<key>}      a rate limit's GCRA arrival time (alone in its slot)
//
// Keys read or written alone carry no tag: codes, auth requests, browser
// sessions, idempotency records, users, identities, signing keys, and the
// lookup indexes (token hash → family, token hash → invitation, email → users,
// user → identities, listing sorted sets). Operations that span slots are
// sequences of single-slot steps ordered so that a crash between two steps
// leaves at worst a stale index entry, which every reader re-checks against
// the record it points to, or a pending grant merge that the next read of the
// grant applies (see RedeemInvitation).
//
// Resharding (a slot migrating between masters) is followed by go-redis (ASK,
// MOVED); a script whose keys are split between the two masters, or partly
// absent, is refused with TRYAGAIN, and runs again here after a short backoff
// (see run). A script never touches a key again after it may have emptied
// it: during a migration that key would be "non local" and fail the script
// after its writes.
//
// # Expiry
//
// Ephemeral records (auth requests, codes, refresh tokens, browser sessions,
// idempotency records, revocation markers) get a Redis TTL at their own expiry
// plus ttlMargin, and every read also compares their ExpiresAt with
// Options.Now, exactly as bbolt does, so the store's clock decides and Redis
// only reclaims memory. Rate-limit keys are the exception: they follow
// Redis's own clock (TIME), which every replica then shares, and expire once
// the limit is back to its full burst. Users, identities, grants, invitations, signing keys
// and jobs have no TTL.
package redis

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/sessions"
	"github.com/usher-oidc/usher/store/errs"
)

var (
	_ sessions.Store = (*Store)(nil)
	_ grants.Store   = (*Store)(nil)
)

// ErrInvalid is wrapped by every error about bad input (empty IDs, missing
// expiry, bad cursors), so callers can tell a bug in the request from a
// storage failure. It is the store-wide errs.ErrInvalid.
var ErrInvalid = errs.ErrInvalid

// ttlMargin is added to every Redis TTL: the clock of the replica that wrote a
// record and Redis's clock may disagree, and reads check ExpiresAt anyway.
const ttlMargin = time.Minute

// reuseRevocationMargin extends a family revocation caused by refresh-token
// reuse past the family's own expiry (same rule as bbolt): access tokens minted
// by the last rotation outlive the refresh token by up to their lifetime.
const reuseRevocationMargin = 24 * time.Hour

// casRetries bounds optimistic compare-and-set loops; each retry means another
// writer changed the record in between, so running out takes sustained
// contention on one record.
const casRetries = 50

// Options tunes New and Open.
type Options struct {
	// Now is the clock used for expiry; nil means time.Now.
	Now func() time.Time
	// Logger receives failures of best-effort cleanup steps; nil means slog.Default().
	Logger *slog.Logger
	// Prefix starts every key; "" means "usher:". Braces in it are escaped
	// (they would change the keys' hash slots); Open refuses them.
	Prefix string
	// RecordFormat is the encoding new records are written in: "" or
	// RecordFormatV1 (JSON, what every earlier version reads),
	// RecordFormatV2 (compact), RecordFormatV3 (compact, without the
	// lookups older versions need), RecordFormatV4 (v3, plus login
	// states kept with their auth requests) or RecordFormatV5 (v4, with
	// invitation token lookups and search members in shorter forms); see
	// recordformat.go. All are always read. Open refuses other values; New
	// writes v1 for them.
	RecordFormat string
}

// Config says where Redis is. Exactly one of URL and Addrs is set.
type Config struct {
	// URL is a redis:// or rediss:// URL of a standalone server.
	URL string
	// Addrs lists host:port pairs: Sentinels when MasterName is set, cluster
	// nodes when there are several, else one standalone server.
	Addrs      []string
	MasterName string
	Username   string
	Password   string
	DB         int
	// PoolSize is the most connections opened to Redis (per node of a
	// Cluster); 0 = DefaultPoolSize, unless the URL sets pool_size.
	PoolSize int
}

// DefaultPoolSize is 32 connections per CPU: under go-redis's own default
// (10) requests queued for a connection once a replica served more at once
// (BenchmarkInvitationRedeemConcurrency, three runs each: 200 redemptions
// in flight ran at 0.93–0.96 of the rate of 16; at 32 per CPU 1.02–1.12).
// Connections are opened only as concurrent requests need them.
func DefaultPoolSize() int { return 32 * runtime.GOMAXPROCS(0) }

// Store implements sessions.Store and grants.Store on Redis.
type Store struct {
	rdb    redis.UniversalClient
	prefix string
	format string // one of RecordFormats: what records are written in
	now    func() time.Time
	log    *slog.Logger

	closeOnce sync.Once
	closeErr  error
	search    searchState // invitations_search.go
	// usersIndexed: this process saw the user list's backfill done
	// (users_index.go).
	usersIndexed atomic.Bool
	// tokenSum is the 64-bit hash of a token hash that picks its ih: field
	// (invitations_token.go); nil: FNV-1a. Tests make it collide.
	tokenSum func(hash string) uint64
}

// New wraps an existing client. The store owns it from then on: Close closes it.
func New(client redis.UniversalClient, opts Options) *Store {
	s := &Store{rdb: client, prefix: opts.Prefix, now: opts.Now, log: opts.Logger, format: RecordFormatV1}
	if opts.RecordFormat != "" && ValidRecordFormat(opts.RecordFormat) {
		s.format = opts.RecordFormat
	}
	if s.prefix == "" {
		s.prefix = "usher:"
	}
	// A brace in the prefix would become the hash tag of every key and put
	// the whole store in one slot (and break the tags below): escape it.
	s.prefix = strings.NewReplacer("{", "%7B", "}", "%7D").Replace(s.prefix)
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	return s
}

// Open builds a client from cfg, checks that Redis answers, and wraps it.
// A person is waiting on every store call: when Redis is down, usher should
// answer 503 within a couple of seconds, not after go-redis's default five
// dial retries per call.
const (
	failFastDial    = 2 * time.Second
	failFastRetries = 1
)

func Open(cfg Config, opts Options) (*Store, error) {
	if strings.ContainsAny(opts.Prefix, "{}") {
		return nil, fmt.Errorf("redisstore: prefix %q contains a brace: %w", opts.Prefix, ErrInvalid)
	}
	if !ValidRecordFormat(opts.RecordFormat) {
		return nil, fmt.Errorf("redisstore: record format %q: want one of %s: %w", opts.RecordFormat, strings.Join(RecordFormats, ", "), ErrInvalid)
	}
	var client redis.UniversalClient
	switch {
	case cfg.URL != "" && len(cfg.Addrs) > 0:
		return nil, fmt.Errorf("redisstore: both url and addrs are set: %w", ErrInvalid)
	case cfg.URL != "":
		o, err := redis.ParseURL(cfg.URL)
		if err != nil {
			return nil, fmt.Errorf("redisstore: url: %w", err)
		}
		if cfg.Username != "" {
			o.Username = cfg.Username
		}
		if cfg.Password != "" {
			o.Password = cfg.Password
		}
		if cfg.DB != 0 {
			o.DB = cfg.DB
		}
		switch {
		case cfg.PoolSize > 0:
			o.PoolSize = cfg.PoolSize
		case o.PoolSize == 0:
			o.PoolSize = DefaultPoolSize()
		}
		o.DialTimeout, o.DialerRetries = failFastDial, failFastRetries
		client = redis.NewClient(o)
	case len(cfg.Addrs) > 0:
		if cfg.DB != 0 && cfg.MasterName == "" && len(cfg.Addrs) > 1 {
			return nil, fmt.Errorf("redisstore: a cluster has only database 0: %w", ErrInvalid)
		}
		client = redis.NewUniversalClient(&redis.UniversalOptions{
			Addrs:         cfg.Addrs,
			MasterName:    cfg.MasterName,
			Username:      cfg.Username,
			Password:      cfg.Password,
			DB:            cfg.DB,
			PoolSize:      cmp.Or(cfg.PoolSize, DefaultPoolSize()),
			DialTimeout:   failFastDial,
			DialerRetries: failFastRetries,
		})
	default:
		return nil, fmt.Errorf("redisstore: neither url nor addrs is set: %w", ErrInvalid)
	}
	s := New(client, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Ping(ctx); err != nil {
		_ = client.Close()
		return nil, err
	}
	go s.backfillSearch()
	return s, nil
}

// Client returns the underlying client (for health checks and tests).
func (s *Store) Client() redis.UniversalClient { return s.rdb }

// Close closes the client. Calling it again is a no-op.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		if err := s.rdb.Close(); err != nil {
			s.closeErr = fmt.Errorf("redisstore: close: %w", err)
		}
	})
	return s.closeErr
}

// Ping reports whether Redis answers (every master, on a cluster).
func (s *Store) Ping(ctx context.Context) error {
	var err error
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			return c.Ping(ctx).Err()
		})
	} else {
		err = s.rdb.Ping(ctx).Err()
	}
	if err != nil {
		return fmt.Errorf("redisstore: ping: %w", err)
	}
	return nil
}

// --- keys ---

// esc makes a caller-supplied key part safe inside a key: braces would move
// the key to another hash slot, and ':' separates parts, so keys built from
// different parts can never collide.
func esc(s string) string {
	if !strings.ContainsAny(s, "%{}:") {
		return s
	}
	r := strings.NewReplacer("%", "%25", "{", "%7B", "}", "%7D", ":", "%3A")
	return r.Replace(s)
}

func (s *Store) key(kind, id string) string { return s.prefix + kind + ":" + esc(id) }

// tagged returns prefix{kind:id} — the hash tag pins it (and keys built from
// it) to one slot.
func (s *Store) tagged(kind, id string) string { return s.prefix + "{" + kind + ":" + esc(id) + "}" }

// --- time ---

// micros is the form times take inside scripts and sorted-set scores: exact
// for any present-day instant in a Lua double.
func micros(t time.Time) int64 { return t.UnixMicro() }

func microsStr(t time.Time) string { return strconv.FormatInt(t.UnixMicro(), 10) }

// expireAtMS is the Redis expiry (PXAT, unix ms) of a record that is dead from
// t on: t plus ttlMargin, never <= 0 (Redis refuses that).
func expireAtMS(t time.Time) int64 {
	return max(t.Add(ttlMargin).UnixMilli(), 1)
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Format(time.RFC3339Nano)
}

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	return time.Parse(time.RFC3339Nano, s)
}

// expired is the one rule for "past ExpiresAt": expired from that instant on.
func expired(expiresAt, now time.Time) bool { return !now.Before(expiresAt) }

// lower is the email index key: ASCII case only (grants.EmailKey).
func lower(email string) string { return grants.EmailKey(email) }

// checkKeys returns an ErrInvalid error if a key part is empty.
func checkKeys(what string, parts ...string) error {
	for _, p := range parts {
		if p == "" {
			return fmt.Errorf("%s: empty key: %w", what, ErrInvalid)
		}
	}
	return nil
}

// --- script results ---

// str reads element i of a script's array reply as a string ("" for nil).
func str(v []any, i int) string {
	if i >= len(v) || v[i] == nil {
		return ""
	}
	switch x := v[i].(type) {
	case string:
		return x
	case int64:
		return strconv.FormatInt(x, 10)
	}
	return fmt.Sprint(v[i])
}

// While a slot migrates between cluster masters (CLUSTER SETSLOT MIGRATING/
// IMPORTING), a script whose keys are split between the two, or absent from
// both (a first grant), is refused with TRYAGAIN until the keys have moved or
// the slot is handed over. Redis refuses it before running anything, so it is
// safe to run again; go-redis retries only a few times within milliseconds
// (ClusterOptions.MaxRedirects, 3 by default, shared with the ASK and MOVED
// redirects, so the last reply can be a redirect it did not follow), so
// scripts wait out a migration here, for up to tryAgainBudget.
const (
	tryAgainBackoff    = 5 * time.Millisecond
	tryAgainMaxBackoff = 100 * time.Millisecond
	tryAgainBudget     = 3 * time.Second
)

// run runs sc (EVALSHA, EVAL after NOSCRIPT), again after TRYAGAIN.
func (s *Store) run(ctx context.Context, sc *redis.Script, keys []string, args ...any) *redis.Cmd {
	wait, deadline := tryAgainBackoff, time.Now().Add(tryAgainBudget)
	for {
		cmd := sc.Run(ctx, s.rdb, keys, args...)
		if !notRun(cmd.Err()) || time.Now().Add(wait).After(deadline) {
			return cmd
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return cmd
		case <-t.C:
		}
		wait = min(2*wait, tryAgainMaxBackoff)
	}
}

// notRun reports whether err is a reply by which Redis refused to run a
// command at all: TRYAGAIN, or a redirect go-redis gave up following.
func notRun(err error) bool {
	if err == nil {
		return false
	}
	if redis.IsTryAgainError(err) {
		return true
	}
	if _, ok := redis.IsMovedError(err); ok {
		return true
	}
	_, ok := redis.IsAskError(err)
	return ok
}

// runScript runs sc and returns its reply as an array (a single status string
// becomes a one-element array).
func (s *Store) runScript(ctx context.Context, sc *redis.Script, keys []string, args ...any) ([]any, error) {
	res, err := s.run(ctx, sc, keys, args...).Result()
	if err != nil {
		return nil, err
	}
	return asSlice(res), nil
}

// pairs turns an HGETALL-style flat reply into a map.
func pairs(v []any) map[string]string {
	m := make(map[string]string, len(v)/2)
	for i := 0; i+1 < len(v); i += 2 {
		m[str(v, i)] = str(v, i+1)
	}
	return m
}

func strs(v any) []string {
	arr, _ := v.([]any)
	out := make([]string, 0, len(arr))
	for i := range arr {
		out = append(out, str(arr, i))
	}
	return out
}

// Prefix returns the key prefix in use.
func (s *Store) Prefix() string { return s.prefix }
