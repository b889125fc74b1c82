// Package bolt (imported as boltstore beside go.etcd.io/bbolt) is the embedded backend: sessions.Store and grants.Store in
// one bbolt file, plus a second file for the short-lived sign-in flow records
// (see openFlow). Records are JSON in buckets; secondary indexes are buckets of
// composite keys kept in step with the records inside the same transaction.
package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

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

// Options tunes Open.
type Options struct {
	// Now is the clock used for expiry; nil means time.Now.
	Now func() time.Time
	// SweepInterval is how often expired ephemeral records are deleted:
	// 0 means one minute, a negative value disables the sweeper.
	SweepInterval time.Duration
	// Logger receives sweep results and failures; nil means slog.Default().
	Logger *slog.Logger
}

// Store implements sessions.Store and grants.Store on one bbolt database.
type Store struct {
	db *bolt.DB
	// group shares the main file's commits among concurrent writes (batch).
	group *committer
	// flow holds the sign-in flow records (auth requests, codes) with
	// unsynced commits; flowPath is its file.
	flow     *bolt.DB
	flowPath string
	// epoch is the flow file's code epoch (CodeEpoch): new with every
	// flow file, so a crash that discards the file refuses the sealed
	// codes issued before it.
	epoch  string
	now    func() time.Time
	log    *slog.Logger
	stop   chan struct{}
	done   chan struct{}
	closed sync.Once
	err    error
	// riding: new browser sessions until their write's commit (browser_ride.go).
	riding ridingSessions
	// writes counts write requests (batch calls), for WriteStats.
	writes atomic.Uint64
	// txid0 is the database's last committed transaction at Open, so that
	// WriteStats can count commits as a txid difference.
	txid0 uint64
}

// WriteStats reports, since Open, how many writes were asked of the store
// and how many durable bbolt commits (each a data and a meta fdatasync) the
// main file made for them. Concurrent writes share commits (committer),
// so commits ≤ writes under load; writes to the flow file commit without
// fdatasync and are not counted as commits. For tests and benchmarks.
func (s *Store) WriteStats() (writes, commits uint64) {
	return s.writes.Load(), lastTxID(s.db) - s.txid0
}

// lastTxID is the ID of the last committed write transaction.
func lastTxID(db *bolt.DB) uint64 {
	var id uint64
	_ = db.View(func(tx *bolt.Tx) error { id = uint64(tx.ID()); return nil })
	return id
}

// Bucket names. Index buckets hold composite keys (parts joined by sep) and
// either no value or the primary key of the record.
var (
	bAuthReqs     = []byte("auth_requests")              // in the flow file
	bCodes        = []byte("codes")                      // in the flow file
	bBrowserFlow  = []byte("transient_browser_sessions") // in the flow file (browser.go)
	bFlowMeta     = []byte("flow_meta")                  // in the flow file: its code epoch (codespend.go)
	bRefresh      = []byte("refresh_tokens")
	bRevFamily    = []byte("revoked_families")
	bRevJTI       = []byte("revoked_jtis")
	bSessionFams  = []byte("session_families") // sessionID sep familyID -> revocation{family expiry}
	bBrowser      = []byte("browser_sessions")
	bSigningKeys  = []byte("signing_keys")
	bUsers        = []byte("users")
	bUsersByEmail = []byte("users_by_email")     // lower(email) sep userID
	bIdentities   = []byte("identities")         // iss sep sub -> Identity
	bIdentsByUser = []byte("identities_by_user") // userID sep iss sep sub -> iss sep sub
	bGrants       = []byte("grants")
	bInvitations  = []byte("invitations")
	bInvByToken   = []byte("invitations_by_token")       // hash -> id
	bInvByExt     = []byte("invitations_by_external_id") // ext sep id
	bInvByEmail   = []byte("invitations_by_email")       // lower(email) sep id
	bInvByTime    = []byte("invitations_by_time")        // timeKey(created) id
	bInvAwaiting  = []byte("invitations_awaiting")       // userID sep id: AwaitingVerification.UserID
	bIdempotency  = []byte("idempotency")
	bJobs         = []byte("jobs")
	bJobsDue      = []byte("jobs_due")      // kind sep timeKey(visible from) id -> id
	bAudit        = []byte("audit")         // timeKey(at) id -> AuditRecord
	bOutbox       = []byte("outbox")        // invitation id -> lease end (unix µs, 0: due now) of an invitation holding events
	bFunnel       = []byte("funnel")        // day sep clientID sep field -> uint64 (funnel.go)
	bFunnelEvents = []byte("funnel_events") // event id -> day: the events counted

	// flowBuckets live in the flow file, allBuckets in the main one.
	flowBuckets = [][]byte{bAuthReqs, bCodes, bBrowserFlow, bFlowMeta}
	allBuckets  = [][]byte{
		bRefresh, bRevFamily, bRevJTI, bSessionFams, bBrowser, bSigningKeys,
		bUsers, bUsersByEmail, bIdentities, bIdentsByUser, bGrants,
		bInvitations, bInvByToken, bInvByExt, bInvByEmail, bInvByTime, bInvAwaiting,
		bIdempotency, bJobs, bJobsDue, bAudit, bOutbox, bFunnel, bFunnelEvents,
	}
)

// sep joins the parts of composite index keys; keyPart refuses it inside a part
// so one key can never be read as another.
const sep = 0

// Open opens (creating if needed) the database at path and starts the sweeper.
func Open(path string, opts Options) (*Store, error) {
	// Without a timeout a second usher on the same file would hang forever on
	// bbolt's file lock instead of saying why it cannot start.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("boltstore: open %s (is another process using it?): %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		// Files from before the flow file kept these in the main file: their
		// records are minutes-lived, so dropping them costs at most the
		// sign-ins in flight during the upgrade.
		for _, name := range flowBuckets {
			if err := tx.DeleteBucket(name); err != nil && !errors.Is(err, bolt.ErrBucketNotFound) {
				return fmt.Errorf("drop bucket %s: %w", name, err)
			}
		}
		return nil
	}); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("boltstore: init %s: %w", path, err)
	}
	// After the main file's lock is ours: a second usher must not touch the
	// flow file of the first.
	flowPath := path + ".flow"
	flow, epoch, err := openFlowWithEpoch(flowPath)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("boltstore: open %s: %w", flowPath, err)
	}
	s := &Store{db: db, flow: flow, flowPath: flowPath, epoch: epoch, now: opts.Now, log: opts.Logger, stop: make(chan struct{}), done: make(chan struct{})}
	s.txid0 = lastTxID(db)
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.group = &committer{db: db, rideFailed: func(err error) {
		s.log.Error("boltstore: a deferred write was dropped", "err", err)
	}}
	interval := opts.SweepInterval
	if interval == 0 {
		interval = time.Minute
	}
	if interval > 0 {
		go s.sweeper(interval)
	} else {
		close(s.done)
	}
	return s, nil
}

// Close stops the sweeper and closes both files; the flow file is synced and
// marked clean so that the next Open keeps its records. Calling it again is
// a no-op.
func (s *Store) Close() error {
	s.closed.Do(func() {
		close(s.stop)
		<-s.done
		ferr := closeFlow(s.flow, s.flowPath)
		rerr := s.group.flush()
		if err := s.db.Close(); err != nil {
			s.err = fmt.Errorf("boltstore: close: %w", err)
		} else if rerr != nil {
			s.err = fmt.Errorf("boltstore: close: the last deferred writes: %w", rerr)
		} else if ferr != nil {
			s.err = fmt.Errorf("boltstore: close %s: %w", s.flowPath, ferr)
		}
	})
	return s.err
}

// openFlow opens the flow file: the short-lived records of sign-ins in
// progress (auth requests, authorization codes). Its commits skip fdatasync
// (NoSync), which makes a login's flow writes cost no disk wait, but after a
// power loss such a file may be torn. So it is trusted only when the last
// Close marked it clean (synced, then the path+".clean" marker written); any
// other start (crash, kill -9, power loss) discards it and starts empty. The
// cost of a crash is the sign-ins in flight: their auth requests and unused
// codes are gone, and those people sign in again.
//
// Single use of codes survives that: a code and its consumption live in the
// same file, which after a crash is discarded whole, so a consumed code can
// never come back unconsumed; within a run ConsumeCode is one serialized bbolt
// transaction. Everything whose loss would matter (refresh tokens and their
// rotation, browser sessions and sign-outs, users, grants, invitations, keys)
// stays in the main file with durable commits.
func openFlow(path string) (*bolt.DB, error) {
	marker := path + ".clean"
	_, err := os.Stat(marker)
	switch {
	case err == nil:
		// The marker goes, durably, before any unsynced write can follow.
		if err := os.Remove(marker); err != nil {
			return nil, err
		}
	case errors.Is(err, fs.ErrNotExist):
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	default:
		return nil, err
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return nil, err
	}
	opts := &bolt.Options{Timeout: 5 * time.Second, NoSync: true, NoFreelistSync: true, NoGrowSync: true}
	db, err := bolt.Open(path, 0o600, opts)
	if err != nil {
		// Marked clean yet unreadable: its records are not worth refusing
		// to start over.
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		if db, err = bolt.Open(path, 0o600, opts); err != nil {
			return nil, err
		}
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, name := range flowBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		return nil
	}); err != nil {
		_ = db.Close()
		return nil, err
	}
	return db, nil
}

// closeFlow syncs and closes the flow file, then marks it clean (see openFlow).
func closeFlow(db *bolt.DB, path string) error {
	if err := db.Sync(); err != nil {
		_ = db.Close()
		return err
	}
	if err := db.Close(); err != nil {
		return err
	}
	f, err := os.OpenFile(path+".clean", os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

// syncDir makes a file's creation or removal in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Ping reports whether the database is open.
func (s *Store) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.db.View(func(*bolt.Tx) error { return nil }); err != nil {
		return fmt.Errorf("boltstore: ping: %w", err)
	}
	if err := s.flow.View(func(*bolt.Tx) error { return nil }); err != nil {
		return fmt.Errorf("boltstore: ping %s: %w", s.flowPath, err)
	}
	return nil
}

// batch runs fn in a write transaction that concurrent callers share
// (committer: group commit), so N writers pay for one fsync instead of N:
// that is what lets refresh rotation keep up with the token endpoint. fn may
// run more than once (the whole group re-runs when one member fails, and
// the failing member re-runs alone),
// so every fn given here
//   - resets whatever it reports at its start, so the caller sees the final run;
//   - reports refusals (not found, replayed, conflict…) through a variable and
//     returns nil (batchRefusable does this), so one refusal does not roll
//     back and replay its neighbours;
//     it must not have written anything before deciding to refuse, unless the
//     write is part of the outcome (reuse detection revokes the family);
//   - returns an error only for a failure that must roll back.
//
// Because members run one after another in the same transaction, each sees
// the writes of those before it: single-use checks stay exact.
func (s *Store) batch(fn func(tx *bolt.Tx) error) error {
	s.writes.Add(1)
	return s.group.run(fn)
}

// batchRefusable runs fn in a shared write transaction (see batch). fn returns
// a refusal (not found, conflict, replayed…) apart from a failure: a refusal
// commits what fn wrote and leaves its batch neighbours alone; a failure rolls
// back. The refusal of fn's final run is returned (bbolt may run fn more than
// once); a failure takes precedence over it.
func (s *Store) batchRefusable(fn func(tx *bolt.Tx) (refusal, err error)) error {
	var refusal error
	if err := s.batch(func(tx *bolt.Tx) error {
		var err error
		refusal, err = fn(tx)
		return err
	}); err != nil {
		return err
	}
	return refusal
}

// flowUpdate is batchRefusable for the flow file. Its commits skip fdatasync
// and cost little, so a plain Update (no batch delay) serves each writer
// at once; fn runs exactly once.
func (s *Store) flowUpdate(fn func(tx *bolt.Tx) (refusal, err error)) error {
	s.writes.Add(1)
	var refusal error
	if err := s.flow.Update(func(tx *bolt.Tx) error {
		var err error
		refusal, err = fn(tx)
		return err
	}); err != nil {
		return err
	}
	return refusal
}

// getJSON loads key from bucket into v; false when absent.
func getJSON(b *bolt.Bucket, key []byte, v any) (bool, error) {
	raw := b.Get(key)
	if raw == nil {
		return false, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return false, fmt.Errorf("decode %q: %w", key, err)
	}
	return true, nil
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %q: %w", key, err)
	}
	if err := b.Put(key, raw); err != nil {
		return fmt.Errorf("put %q: %w", key, err)
	}
	return nil
}

// checkKeys returns an ErrInvalid error if a key part is empty or contains sep.
func checkKeys(what string, parts ...string) error {
	for _, p := range parts {
		if p == "" {
			return fmt.Errorf("%s: empty key: %w", what, ErrInvalid)
		}
		if strings.IndexByte(p, sep) >= 0 {
			return fmt.Errorf("%s: key contains NUL: %w", what, ErrInvalid)
		}
	}
	return nil
}

// checkNoNUL is checkKeys for optional parts: empty is fine, sep is not.
func checkNoNUL(what string, parts ...string) error {
	for _, p := range parts {
		if strings.IndexByte(p, sep) >= 0 {
			return fmt.Errorf("%s: key contains NUL: %w", what, ErrInvalid)
		}
	}
	return nil
}

// compositeKey joins parts with sep.
func compositeKey(parts ...string) []byte {
	n := len(parts)
	for _, p := range parts {
		n += len(p)
	}
	k := make([]byte, 0, n)
	for i, p := range parts {
		if i > 0 {
			k = append(k, sep)
		}
		k = append(k, p...)
	}
	return k
}

// prefixKeys returns the keys of b that start with prefix.
func prefixKeys(b *bolt.Bucket, prefix []byte) [][]byte {
	var out [][]byte
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		out = append(out, bytes.Clone(k))
	}
	return out
}

// timeKey encodes t so that byte order is time order, for any t including the
// zero time (UnixNano would overflow there).
func timeKey(t time.Time) []byte {
	k := make([]byte, 12)
	binary.BigEndian.PutUint64(k, uint64(t.Unix())^(1<<63))
	binary.BigEndian.PutUint32(k[8:], uint32(t.Nanosecond()))
	return k
}

func decodeTimeKey(k []byte) time.Time {
	sec := int64(binary.BigEndian.Uint64(k) ^ (1 << 63))
	return time.Unix(sec, int64(binary.BigEndian.Uint32(k[8:]))).UTC()
}

// expired is the one rule for "past ExpiresAt": expired from that instant on.
func expired(expiresAt, now time.Time) bool {
	return !now.Before(expiresAt)
}

// lower is the email index key: ASCII case only (grants.EmailKey).
func lower(email string) string { return grants.EmailKey(email) }
