package bolt

import (
	"context"
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/sessions"
	"github.com/usher-oidc/usher/store"
)

var (
	_ store.Exporter = (*Store)(nil)
	_ store.Importer = (*Store)(nil)
)

// exportBuckets: the bucket each kind is read from; every value there is the
// record's JSON except for the revocation markers (keyed by ID).
var exportBuckets = map[store.Kind][]byte{
	store.SigningKeys: bSigningKeys, store.Users: bUsers, store.Identities: bIdentities,
	store.Grants: bGrants, store.Invitations: bInvitations, store.Audit: bAudit,
	store.Idempotency: bIdempotency, store.Jobs: bJobs, store.RevokedFamilies: bRevFamily,
	store.RevokedTokens: bRevJTI, store.RefreshTokens: bRefresh, store.BrowserSessions: bBrowser,
}

// Export reads every record of kind in one read transaction.
func (s *Store) Export(ctx context.Context, kind store.Kind, fn func(rec json.RawMessage) error) error {
	name, ok := exportBuckets[kind]
	if !ok {
		return fmt.Errorf("boltstore: export: unknown kind %q: %w", kind, ErrInvalid)
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(name).ForEach(func(k, v []byte) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			if kind == store.RevokedFamilies || kind == store.RevokedTokens {
				var r revocation
				if err := json.Unmarshal(v, &r); err != nil {
					return fmt.Errorf("decode %q: %w", k, err)
				}
				raw, err := json.Marshal(store.Revocation{ID: string(k), Until: r.Until})
				if err != nil {
					return err
				}
				return fn(raw)
			}
			// v is only valid inside the transaction: hand out a copy.
			return fn(append(json.RawMessage(nil), v...))
		})
	})
	if err != nil {
		return fmt.Errorf("boltstore: export %s: %w", kind, err)
	}
	return nil
}

// Import stores rec create-if-absent, through the store's own write paths
// where they keep the record exactly, else by a raw put that keeps the
// indexes in step (users, identities, grants, invitations).
func (s *Store) Import(ctx context.Context, kind store.Kind, rec json.RawMessage) (bool, error) {
	handled, created, err := store.ImportViaStore(ctx, s, kind, rec)
	if !handled {
		created, err = s.importRecord(ctx, kind, rec)
	}
	if err != nil {
		return false, fmt.Errorf("boltstore: import %s: %w", kind, err)
	}
	return created, nil
}

// importRecord is Import for the kinds that store.ImportViaStore leaves to
// the backend: it decodes rec and stores it create-if-absent.
func (s *Store) importRecord(ctx context.Context, kind store.Kind, rec json.RawMessage) (bool, error) {
	switch kind {
	case store.SigningKeys:
		var k sessions.SigningKey
		if err := json.Unmarshal(rec, &k); err != nil {
			return false, err
		}
		return store.Absent(s.AddSigningKey(ctx, &k, false))
	case store.Users:
		return s.importUser(rec)
	case store.Identities:
		return s.importIdentity(rec)
	case store.Grants:
		return s.importGrant(rec)
	case store.Invitations:
		return s.importInvitation(rec)
	case store.Audit:
		return s.importAudit(ctx, rec)
	case store.RevokedFamilies, store.RevokedTokens:
		return s.importRevocation(kind, rec)
	case store.RefreshTokens:
		// CreateRefreshToken stores the record as given, RotatedAt included,
		// and links it to its browser session.
		var rt sessions.RefreshToken
		if err := json.Unmarshal(rec, &rt); err != nil {
			return false, err
		}
		return store.Absent(s.CreateRefreshToken(ctx, &rt))
	case store.BrowserSessions:
		return s.importBrowserSession(rec)
	}
	return false, fmt.Errorf("unknown kind %q: %w", kind, ErrInvalid)
}

func (s *Store) importUser(rec json.RawMessage) (bool, error) {
	var u grants.User
	if err := json.Unmarshal(rec, &u); err != nil {
		return false, err
	}
	if err := checkKeys("user", u.ID); err != nil {
		return false, err
	}
	return s.putIfAbsent(bUsers, []byte(u.ID), func(tx *bolt.Tx) error { return putUser(tx, nil, &u) })
}

func (s *Store) importIdentity(rec json.RawMessage) (bool, error) {
	var id grants.Identity
	if err := json.Unmarshal(rec, &id); err != nil {
		return false, err
	}
	if err := checkKeys("identity", id.Issuer, id.Subject, id.UserID); err != nil {
		return false, err
	}
	return s.putIfAbsent(bIdentities, identityKey(id.Issuer, id.Subject), func(tx *bolt.Tx) error { return putIdentity(tx, &id) })
}

func (s *Store) importGrant(rec json.RawMessage) (bool, error) {
	var g grantRecord // with the events of a bolt export
	if err := json.Unmarshal(rec, &g); err != nil {
		return false, err
	}
	if err := checkKeys("grant", g.UserID); err != nil {
		return false, err
	}
	g.Grant.Outbox = g.Outbox
	return s.putIfAbsent(bGrants, []byte(g.UserID), func(tx *bolt.Tx) error { return putGrant(tx, &g.Grant) })
}

// importInvitation is not CreateInvitation: that refuses a second invitation
// with the external_id of a pending one, which a redeemed one may well have.
func (s *Store) importInvitation(rec json.RawMessage) (bool, error) {
	var inv grants.Invitation
	if err := json.Unmarshal(rec, &inv); err != nil {
		return false, err
	}
	if err := checkKeys("invitation", inv.ID, inv.TokenHash); err != nil {
		return false, err
	}
	if err := checkNoNUL("invitation", inv.ExternalID, inv.Email); err != nil {
		return false, err
	}
	return s.putIfAbsent(bInvitations, []byte(inv.ID), func(tx *bolt.Tx) error {
		if owner := tx.Bucket(bInvByToken).Get([]byte(inv.TokenHash)); owner != nil {
			return fmt.Errorf("invitation %s: token hash held by %s: %w", inv.ID, owner, grants.ErrConflict)
		}
		return putInvitation(tx, nil, &inv)
	})
}

// importAudit appends the record through AppendAudit unless the audit bucket
// already holds its key (time, then ID).
func (s *Store) importAudit(ctx context.Context, rec json.RawMessage) (bool, error) {
	var a grants.AuditRecord
	if err := json.Unmarshal(rec, &a); err != nil {
		return false, err
	}
	if a.ID == "" || a.At.IsZero() {
		return false, fmt.Errorf("audit record without id or time: %w", ErrInvalid)
	}
	var there bool
	if err := s.db.View(func(tx *bolt.Tx) error {
		there = tx.Bucket(bAudit).Get(append(timeKey(a.At), a.ID...)) != nil
		return nil
	}); err != nil || there {
		return false, err
	}
	return true, s.AppendAudit(ctx, &a)
}

// importRevocation stores a revoked family or token (kind says which) as
// the marker Export reads back.
func (s *Store) importRevocation(kind store.Kind, rec json.RawMessage) (bool, error) {
	var r store.Revocation
	if err := json.Unmarshal(rec, &r); err != nil {
		return false, err
	}
	if err := checkKeys("revocation", r.ID); err != nil {
		return false, err
	}
	b := bRevFamily
	if kind == store.RevokedTokens {
		b = bRevJTI
	}
	return s.putIfAbsent(b, []byte(r.ID), func(tx *bolt.Tx) error {
		return putJSON(tx.Bucket(b), []byte(r.ID), revocation{Until: r.Until})
	})
}

func (s *Store) importBrowserSession(rec json.RawMessage) (bool, error) {
	var bs sessions.BrowserSession
	if err := json.Unmarshal(rec, &bs); err != nil {
		return false, err
	}
	if err := checkKeys("browser session", bs.ID); err != nil {
		return false, err
	}
	return s.putIfAbsent(bBrowser, []byte(bs.ID), func(tx *bolt.Tx) error {
		return putJSON(tx.Bucket(bBrowser), []byte(bs.ID), &bs)
	})
}

// putIfAbsent runs put in one write transaction unless bucket already holds key.
func (s *Store) putIfAbsent(bucket, key []byte, put func(tx *bolt.Tx) error) (bool, error) {
	created := false
	err := s.db.Update(func(tx *bolt.Tx) error {
		created = false
		if tx.Bucket(bucket).Get(key) != nil {
			return nil
		}
		created = true
		return put(tx)
	})
	return created && err == nil, err
}
