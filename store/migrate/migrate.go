// Package migrate copies usher's state from one backend to another (bbolt to
// Redis and back) through the store.Exporter and store.Importer interfaces:
// every durable record, and the ephemeral ones still live at the start of
// the run. It is idempotent and resumable — every record is created only if
// absent, keyed by its ID — and it ends with a verification pass that
// compares counts and a content hash per kind.
package migrate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/sessions"
	"github.com/usher-oidc/usher/store"
)

// Backend is what migrate reads from and writes to.
type Backend interface {
	store.Exporter
	store.Importer
}

// Options tunes Run.
type Options struct {
	// Merge allows a target that holds records the source does not (or holds
	// differently): they are kept, and the source's copy of a record the
	// target already has is not written.
	Merge bool
	// Now decides which ephemeral records are still live; nil means time.Now.
	// It is read once: the whole run uses one instant.
	Now func() time.Time
}

// Row is one line of the report.
type Row struct {
	Kind store.Kind
	// Source counts the live records read; Expired the ones dropped.
	Source, Expired int
	// Copied were created in the target, Present were there already.
	Copied, Present int
	// Target counts the target's live records after the copy; Missing and
	// Differ are source records the target lacks or holds differently.
	Target, Missing, Differ int
	// SourceHash and TargetHash hash the records' content (over the source's
	// IDs for the target), so equal hashes mean equal records.
	SourceHash, TargetHash string
}

// OK reports whether the target holds every source record as it is.
func (r *Row) OK() bool { return r.Missing == 0 && r.Differ == 0 && r.SourceHash == r.TargetHash }

// Report is the outcome of Run.
type Report struct {
	Rows   []Row
	Merge  bool
	Copied int
}

// ErrNotEmpty: the target holds records that are not the source's, and
// Options.Merge is off.
var ErrNotEmpty = errors.New("the target is not empty")

// ErrVerify: after the copy, the target does not hold every source record.
var ErrVerify = errors.New("verification failed")

// digests maps a record's ID to the hash of its canonical content.
type digests map[string][32]byte

func (d digests) hash(ids []string) string {
	h := sha256.New()
	for _, id := range ids {
		v := d[id]
		h.Write([]byte(id))
		h.Write([]byte{0})
		h.Write(v[:])
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Run copies every kind of store.Kinds from src to dst, then verifies.
func Run(ctx context.Context, src, dst Backend, opts Options) (*Report, error) {
	now := time.Now()
	if opts.Now != nil {
		now = opts.Now()
	}
	rep := &Report{Merge: opts.Merge}
	// Pass 1: what the source holds.
	source, expired, err := readAll(ctx, src, now)
	if err != nil {
		return nil, fmt.Errorf("reading the source: %w", err)
	}
	// A target holding only records identical to the source's is a previous
	// (possibly interrupted) run of this migration: resuming is fine.
	if !opts.Merge {
		if err := checkNoForeign(ctx, dst, source, now); err != nil {
			return nil, err
		}
	}
	// Pass 2: copy.
	for _, kind := range store.Kinds {
		row := Row{Kind: kind, Source: len(source[kind]), Expired: expired[kind]}
		if err := copyKind(ctx, src, dst, kind, source[kind], now, &row); err != nil {
			return rep, fmt.Errorf("copying %s (rerun to resume: what was copied stays): %w", kind, err)
		}
		rep.Copied += row.Copied
		rep.Rows = append(rep.Rows, row)
	}
	// Pass 3: verify.
	failed := false
	for i := range rep.Rows {
		row := &rep.Rows[i]
		if err := verifyKind(ctx, dst, source[row.Kind], now, row); err != nil {
			return rep, fmt.Errorf("verifying: %w", err)
		}
		if !row.OK() && !(opts.Merge && row.Missing == 0) {
			failed = true
		}
	}
	if failed {
		return rep, ErrVerify
	}
	return rep, nil
}

// readAll is read for every kind of store.Kinds.
func readAll(ctx context.Context, b store.Exporter, now time.Time) (map[store.Kind]digests, map[store.Kind]int, error) {
	all := map[store.Kind]digests{}
	expired := map[store.Kind]int{}
	for _, kind := range store.Kinds {
		d, n, err := read(ctx, b, kind, now)
		if err != nil {
			return nil, nil, err
		}
		all[kind], expired[kind] = d, n
	}
	return all, expired, nil
}

// checkNoForeign returns ErrNotEmpty when dst holds a live record that source
// lacks or holds otherwise, naming how many of each kind.
func checkNoForeign(ctx context.Context, dst store.Exporter, source map[store.Kind]digests, now time.Time) error {
	var foreign []string
	for _, kind := range store.Kinds {
		d, _, err := read(ctx, dst, kind, now)
		if err != nil {
			return fmt.Errorf("reading the target: %w", err)
		}
		n := 0
		for id, v := range d {
			if sv, ok := source[kind][id]; !ok || sv != v {
				n++
			}
		}
		if n > 0 {
			foreign = append(foreign, fmt.Sprintf("%d %s", n, kind))
		}
	}
	if len(foreign) > 0 {
		return fmt.Errorf("%w: it holds records the source does not have (or has otherwise): %s; pass --merge to copy into it anyway", ErrNotEmpty, strings.Join(foreign, ", "))
	}
	return nil
}

// copyKind imports into dst the live records of kind that pass 1 read from
// src (source), counting them in row as copied or already present.
func copyKind(ctx context.Context, src store.Exporter, dst store.Importer, kind store.Kind, source digests, now time.Time, row *Row) error {
	return src.Export(ctx, kind, func(rec json.RawMessage) error {
		id, _, live, err := canonical(kind, rec, now)
		if err != nil {
			return err
		}
		if !live {
			return nil
		}
		if _, ok := source[id]; !ok {
			return nil // appeared after pass 1: the source is in use
		}
		created, err := dst.Import(ctx, kind, rec)
		if err != nil {
			return fmt.Errorf("%s %s: %w", kind, id, err)
		}
		if created {
			row.Copied++
		} else {
			row.Present++
		}
		return nil
	})
}

// verifyKind reads row.Kind back from dst and fills in row's target count,
// the source records dst lacks or holds otherwise, and both content hashes
// (over source's IDs).
func verifyKind(ctx context.Context, dst store.Exporter, source digests, now time.Time, row *Row) error {
	d, _, err := read(ctx, dst, row.Kind, now)
	if err != nil {
		return err
	}
	row.Target = len(d)
	ids := slices.Sorted(maps.Keys(source))
	for _, id := range ids {
		if v, ok := d[id]; !ok {
			row.Missing++
		} else if v != source[id] {
			row.Differ++
		}
	}
	row.SourceHash = source.hash(ids)
	row.TargetHash = d.hash(ids)
	return nil
}

// read digests the live records of kind and counts the expired ones.
func read(ctx context.Context, b store.Exporter, kind store.Kind, now time.Time) (digests, int, error) {
	d := digests{}
	expired := 0
	err := b.Export(ctx, kind, func(rec json.RawMessage) error {
		id, c, live, err := canonical(kind, rec, now)
		if err != nil {
			return err
		}
		if !live {
			expired++
			return nil
		}
		d[id] = sha256.Sum256(c)
		return nil
	})
	return d, expired, err
}

// canonical decodes rec and returns its ID, a canonical encoding (equal for
// equal records whichever backend exported them) and whether it is live.
func canonical(kind store.Kind, rec json.RawMessage, now time.Time) (string, []byte, bool, error) {
	id, v, live, err := decodeRecord(kind, rec, now)
	if err != nil {
		return "", nil, false, err
	}
	if id == "" {
		return "", nil, false, fmt.Errorf("%s record without an ID", kind)
	}
	c, err := json.Marshal(v)
	return id, c, live, err
}

// decodeRecord decodes rec into the value canonical encodes and returns it
// with the record's ID and whether the record is live at now. The ephemeral
// kinds, whose records expire, are decoded here; the durable ones, always
// live, by decodeDurable.
func decodeRecord(kind store.Kind, rec json.RawMessage, now time.Time) (id string, v any, live bool, err error) {
	alive := func(t time.Time) bool { return now.Before(t) }
	switch kind {
	case store.Idempotency:
		var x grants.IdempotencyRecord
		if err := json.Unmarshal(rec, &x); err != nil {
			return "", nil, false, err
		}
		return x.Key, &x, alive(x.ExpiresAt), nil
	case store.RevokedFamilies, store.RevokedTokens:
		var x store.Revocation
		if err := json.Unmarshal(rec, &x); err != nil {
			return "", nil, false, err
		}
		// Redis keeps revocations to the microsecond.
		x.Until = x.Until.Truncate(time.Microsecond).UTC()
		return x.ID, &x, alive(x.Until), nil
	case store.RefreshTokens:
		var x sessions.RefreshToken
		if err := json.Unmarshal(rec, &x); err != nil {
			return "", nil, false, err
		}
		live = alive(x.ExpiresAt) && (x.FamilyExpiresAt.IsZero() || alive(x.FamilyExpiresAt))
		return x.Hash, &x, live, nil
	case store.BrowserSessions:
		var x sessions.BrowserSession
		if err := json.Unmarshal(rec, &x); err != nil {
			return "", nil, false, err
		}
		return x.ID, &x, alive(x.ExpiresAt), nil
	}
	id, v, err = decodeDurable(kind, rec)
	return id, v, true, err
}

// decodeDurable is decodeRecord for the kinds whose records do not expire.
func decodeDurable(kind store.Kind, rec json.RawMessage) (string, any, error) {
	switch kind {
	case store.SigningKeys:
		var x sessions.SigningKey
		if err := json.Unmarshal(rec, &x); err != nil {
			return "", nil, err
		}
		return x.ID, &x, nil
	case store.Users:
		var x grants.User
		if err := json.Unmarshal(rec, &x); err != nil {
			return "", nil, err
		}
		return x.ID, &x, nil
	case store.Identities:
		var x grants.Identity
		if err := json.Unmarshal(rec, &x); err != nil {
			return "", nil, err
		}
		return x.Issuer + "\x00" + x.Subject, &x, nil
	case store.Grants:
		var x grants.Grant
		if err := json.Unmarshal(rec, &x); err != nil {
			return "", nil, err
		}
		x.FillEmpty() // empty, null and left out compare the same
		return x.UserID, &x, nil
	case store.Invitations:
		var x grants.Invitation
		if err := json.Unmarshal(rec, &x); err != nil {
			return "", nil, err
		}
		return x.ID, &x, nil
	case store.Audit:
		var x grants.AuditRecord
		if err := json.Unmarshal(rec, &x); err != nil {
			return "", nil, err
		}
		return x.ID, &x, nil
	case store.Jobs:
		var x grants.Job
		if err := json.Unmarshal(rec, &x); err != nil {
			return "", nil, err
		}
		return x.ID, &x, nil
	}
	return "", nil, fmt.Errorf("unknown kind %q", kind)
}

// Print writes the report as a table, then what was not copied and why.
func (r *Report) Print(w io.Writer) {
	fmt.Fprintf(w, "%-22s %7s %7s %7s %7s %7s  %-16s %-16s %s\n", "KIND", "SOURCE", "EXPIRED", "COPIED", "PRESENT", "TARGET", "SOURCE HASH", "TARGET HASH", "CHECK")
	for _, row := range r.Rows {
		check := "ok"
		switch {
		case row.Missing > 0:
			check = fmt.Sprintf("MISSING %d", row.Missing)
		case row.Differ > 0 && r.Merge:
			check = fmt.Sprintf("%d differ (target's kept: --merge)", row.Differ)
		case row.Differ > 0:
			check = fmt.Sprintf("DIFFER %d", row.Differ)
		case row.Target > row.Source:
			check = fmt.Sprintf("ok (+%d in target)", row.Target-row.Source)
		}
		fmt.Fprintf(w, "%-22s %7d %7d %7d %7d %7d  %-16s %-16s %s\n", row.Kind, row.Source, row.Expired, row.Copied, row.Present, row.Target, row.SourceHash, row.TargetHash, check)
	}
	fmt.Fprintf(w, "%d copied\n", r.Copied)
	fmt.Fprintf(w, "not copied: expired ephemeral records (EXPIRED above), and\n")
	for _, k := range slices.Sorted(maps.Keys(store.Dropped)) {
		fmt.Fprintf(w, "  %-20s %s\n", k, store.Dropped[k])
	}
}
