package bolt

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/store/errs"
)

// Prefix search (grants/search.go) reads the email and external-ID indexes
// that putInvitation has kept since the first bbolt file: their keys are
// lower(email) sep id and external_id sep id, so byte order is already
// "by value, then ID" and a prefix is one contiguous range. No new bucket,
// and so nothing to backfill in existing files.

// searchBuckets maps a search field to its index.
var searchBuckets = map[grants.SearchField][]byte{
	grants.SearchEmail:      bInvByEmail,
	grants.SearchExternalID: bInvByExt,
}

// createdBounds narrows a newest-first walk of the time index to the
// filter's creation window: keys at or above before are skipped, and the
// walk stops below since (nil: open).
func createdBounds(f grants.InvitationFilter, before []byte) (upper, since []byte) {
	upper = before
	if !f.CreatedUntil.IsZero() {
		if u := timeKey(f.CreatedUntil); upper == nil || bytes.Compare(u, upper) < 0 {
			upper = u
		}
	}
	if !f.CreatedSince.IsZero() {
		since = timeKey(f.CreatedSince)
	}
	return upper, since
}

// searchInvitations lists the invitations whose field starts with prefix, in
// index order, from just after the cursor (an index key of the same prefix).
func (s *Store) searchInvitations(f grants.InvitationFilter, field grants.SearchField, prefix string, limit int, now time.Time) ([]grants.Invitation, string, error) {
	page, next, _, err := s.searchPage(f, field, prefix, limit, now)
	if err != nil {
		return nil, "", fmt.Errorf("boltstore: list invitations: %w", err)
	}
	return page, next, nil
}

// searchPage is searchInvitations that also counts the index rows it read,
// so a test can tell a range read from a scan.
func (s *Store) searchPage(f grants.InvitationFilter, field grants.SearchField, prefix string, limit int, now time.Time) (page []grants.Invitation, next string, visited int, err error) {
	p := []byte(prefix)
	var after []byte
	if f.Cursor != "" {
		c, err := base64.RawURLEncoding.DecodeString(f.Cursor)
		if err != nil || !bytes.HasPrefix(c, p) || bytes.IndexByte(c[len(p):], sep) < 0 {
			return nil, "", 0, fmt.Errorf("%w: %w", errs.ErrBadCursor, ErrInvalid)
		}
		after = c
	}
	var last []byte // index key of the last invitation on the page
	err = s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(searchBuckets[field]).Cursor()
		k, _ := c.Seek(p)
		if after != nil {
			if k, _ = c.Seek(after); bytes.Equal(k, after) {
				k, _ = c.Next()
			}
		}
		for ; k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
			visited++
			i := bytes.IndexByte(k, sep) // values hold no NUL (checkNoNUL)
			if i < 0 {
				continue
			}
			inv, err := loadInvitation(tx, k[i+1:])
			if err != nil {
				return err
			}
			// The record decides: an entry whose value is not the
			// invitation's own (stale) never shows.
			if inv == nil || grants.SearchKey(inv, field) != string(k[:i]) || !f.Matches(inv, now) {
				continue
			}
			if len(page) == limit {
				next = base64.RawURLEncoding.EncodeToString(last)
				return nil
			}
			page = append(page, *inv)
			last = bytes.Clone(k)
		}
		return nil
	})
	return page, next, visited, err
}
