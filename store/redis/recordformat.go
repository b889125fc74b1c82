package redis

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/usher-oidc/usher/grants"
)

// Record formats. An invitation is stored as "version|status|payload"; the
// scripts read only version and status, never the payload, so both formats
// go through the same scripts. The payload is either
//
//	v1: grants.Invitation as JSON (starts with '{')
//	v2: the byte 0x02, then tagged binary fields (recordcodec.go): empty
//	    fields left out, times as unix nanoseconds (later ones relative to
//	    created_at), the token hash as its bytes, and neither the ID (it is
//	    in the key) nor the status (it is in the prefix); maps of arbitrary
//	    JSON (claims, metadata) and rare parts stay JSON inside.
//
// v3 writes v2 payloads that may also use fields older versions cannot
// read (recordformat_v3.go), and stops writing the lookups a v3 reader no
// longer needs (each is named where it is skipped, with the reader that makes
// it unneeded); see formatV3.
//
// v4 writes what v3 writes, plus a sign-in's upstream state (nonce, PKCE
// verifier) in fields of its auth request's hash (loginstates.go), which
// versions before v4 do not look for; and it stops writing the
// all-invitations index inv:t: the per-client sets (and inv:nc) serve the
// full listing (invitations_union.go).
//
// v5 writes what v4 writes, but an invitation's token lookup in the short
// form ih: (invitations_token.go) and the ID in its prefix-search members
// packed (invitations_search.go), which versions before v5 do not read.
//
// v6 writes what v5 writes, and lets the broker issue sealed codes: codes
// that carry their request, stored only when spent (codespend.go), which
// versions before v6 cannot exchange.
//
// Every Store reads every format; Options.RecordFormat only chooses what it
// writes, so a rollout upgrades every replica first and then switches writing
// to the next format (and back, if need be, without losing any record).
const (
	RecordFormatV1 = "v1"
	RecordFormatV2 = "v2"
	RecordFormatV3 = "v3"
	RecordFormatV4 = "v4"
	RecordFormatV5 = "v5"
	RecordFormatV6 = "v6"
)

// v2Marker starts a v2 payload: a v1 payload is JSON and starts with '{'.
const v2Marker = '\x02'

// RecordFormats lists the values Options.RecordFormat accepts ("" is v1),
// oldest first.
var RecordFormats = []string{RecordFormatV1, RecordFormatV2, RecordFormatV3, RecordFormatV4, RecordFormatV5, RecordFormatV6}

// ValidRecordFormat reports whether f is a format this version can write.
func ValidRecordFormat(f string) bool {
	return f == "" || slices.Contains(RecordFormats, f)
}

// atLeast reports whether s writes format f or a later one (RecordFormats
// order; "" is v1): each format writes everything the one before it does.
func (s *Store) atLeast(f string) bool {
	return max(0, slices.Index(RecordFormats, s.format)) >= slices.Index(RecordFormats, f)
}

// formatV2 reports whether s writes compact payloads (v2 and later).
func (s *Store) formatV2() bool { return s.atLeast(RecordFormatV2) }

// compactUsers reports whether s writes users, identities and grants in
// the compact encoding: from v3 only, since versions that already wrote v2
// (for invitations, refresh tokens and browser sessions) cannot read them.
func (s *Store) compactUsers() bool { return s.formatV3() }

// formatV3 reports whether s may leave out the lookups only older readers
// use: every replica reads v3 (v3 and later).
func (s *Store) formatV3() bool { return s.atLeast(RecordFormatV3) }

// formatV4 reports whether s may keep login states with their auth
// requests and leave invitations out of inv:t: every replica looks for
// them there, and lists the union of the per-client sets (v4 and later).
func (s *Store) formatV4() bool { return s.atLeast(RecordFormatV4) }

// formatV5 reports whether s may write token lookups in the short form
// only: every replica looks for them there (v5 and later).
func (s *Store) formatV5() bool { return s.atLeast(RecordFormatV5) }

// formatV6 reports whether every replica exchanges sealed codes (v6 and
// later): codes that carry their request and are stored only once spent.
func (s *Store) formatV6() bool { return s.atLeast(RecordFormatV6) }

// encodeInvitation is the payload of inv in the format s writes. A record v2
// cannot hold exactly (see compactable) is written in v1, which every
// version reads.
func (s *Store) encodeInvitation(inv *grants.Invitation) ([]byte, error) {
	if !s.formatV2() || !compactable(inv) {
		return json.Marshal(inv)
	}
	return encodeInvitationV2(inv, s.formatV3())
}

// decodeInvitation parses a stored invitation "version|status|payload" of
// either format; id is the one its key holds. It returns the version.
func decodeInvitation(id, v string) (*grants.Invitation, string, error) {
	version, rest, ok1 := strings.Cut(v, "|")
	status, payload, ok2 := strings.Cut(rest, "|")
	if !ok1 || !ok2 || payload == "" {
		return nil, "", errors.New("malformed invitation record")
	}
	if payload[0] != v2Marker {
		inv := &grants.Invitation{}
		if err := json.Unmarshal([]byte(payload), inv); err != nil {
			return nil, "", fmt.Errorf("decode invitation: %w", err)
		}
		return inv, version, nil
	}
	inv, err := decodeInvitationV2(id, grants.Status(status), payload[1:])
	if err != nil {
		return nil, "", fmt.Errorf("decode invitation: %w", err)
	}
	return inv, version, nil
}

// compactable reports whether v2 holds inv exactly as v1 would give it back:
// times in UTC within unix-nanosecond range (and a created_at to count from),
// no empty-but-present slices or maps (v2 leaves empty ones out, which reads
// back as nil).
func compactable(inv *grants.Invitation) bool {
	if !nanoTime(inv.CreatedAt) || !zeroOrNano(inv.ExpiresAt) {
		return false
	}
	for _, t := range []*time.Time{inv.RedeemedAt, inv.RevokedAt, inv.DeclinedAt} {
		if t != nil && !zeroOrNano(*t) {
			return false
		}
	}
	if emptyNotNil(inv.Roles == nil, len(inv.Roles)) || emptyNotNil(inv.Claims == nil, len(inv.Claims)) ||
		emptyNotNil(inv.Metadata == nil, len(inv.Metadata)) || emptyNotNil(inv.Events == nil, len(inv.Events)) ||
		emptyNotNil(inv.Outbox == nil, len(inv.Outbox)) {
		return false
	}
	for _, e := range inv.Events {
		if !nanoTime(e.At) || emptyNotNil(e.Detail == nil, len(e.Detail)) {
			return false
		}
	}
	return true
}

func emptyNotNil(isNil bool, n int) bool { return !isNil && n == 0 }

// nanoTime: a non-zero UTC instant that int64 nanoseconds hold, and so
// the differences between two of them.
func nanoTime(t time.Time) bool {
	_, off := t.Zone()
	return off == 0 && t.Year() >= 1970 && t.Year() < 2200
}

// The v2 fields of an invitation (tags):
//
//	a created_at (unix ns), first; relative to it: E expires_at, the
//	  optional times (invTimes) and each event's time
//	h token hash bytes (H: as is, when not lowercase hex)   r roles
//	s send_email (flag)   t events   the strings (invStrings)
//	the JSON parts (invJSON)
type (
	strField struct {
		tag byte
		p   *string
	}
	timeField struct {
		tag byte
		p   **time.Time
	}
	jsonField struct {
		tag     byte
		p       any // a pointer to the field
		present bool
	}
)

func invStrings(inv *grants.Invitation) []strField {
	return []strField{{'e', &inv.Email}, {'x', &inv.ExternalID}, {'C', &inv.ClientID}, {'M', &inv.EmailMatch},
		{'I', &inv.Inviter}, {'L', &inv.Link}, {'l', &inv.Locale}, {'S', &inv.EmailStatus}, {'F', &inv.EmailError},
		{'b', &inv.RedeemedBy}, {'i', &inv.RedeemedIdentity}, {'n', &inv.RedeemedConnection}, {'B', &inv.DeclinedBy}}
}

func invTimes(inv *grants.Invitation) []timeField {
	return []timeField{{'d', &inv.RedeemedAt}, {'v', &inv.RevokedAt}, {'D', &inv.DeclinedAt}}
}

func invJSON(inv *grants.Invitation) []jsonField {
	return []jsonField{{'c', &inv.Claims, inv.Claims != nil}, {'m', &inv.Metadata, inv.Metadata != nil},
		{'w', &inv.AwaitingVerification, inv.AwaitingVerification != nil}, {'o', &inv.Outbox, inv.Outbox != nil}}
}

// encodeInvitationV2 writes the v2 payload, with the v3 fields
// (recordformat_v3.go) when v3.
func encodeInvitationV2(inv *grants.Invitation, v3 bool) ([]byte, error) {
	ca := inv.CreatedAt.UnixNano()
	w := newWbuf()
	w.int('a', ca)
	if exp := after(ca, inv.ExpiresAt); !v3 || !w.v3Expiry(exp) {
		w.optInt('E', exp)
	}
	for _, f := range invTimes(inv) {
		if *f.p != nil {
			w.optInt(f.tag, after(ca, **f.p))
		}
	}
	if b, err := hex.DecodeString(inv.TokenHash); err == nil && len(b) > 0 && hex.EncodeToString(b) == inv.TokenHash {
		w.str('h', string(b))
	} else {
		w.str('H', inv.TokenHash)
	}
	w.strs('r', inv.Roles)
	w.flag('s', inv.SendEmail)
	if v3 {
		w.v3Strings(inv)
	} else {
		for _, f := range invStrings(inv) {
			w.str(f.tag, *f.p)
		}
	}
	for _, f := range invJSON(inv) {
		if v3 && (f.tag == 'c' && w.v3StrMap('k', inv.Claims) || f.tag == 'm' && w.v3StrMap('q', inv.Metadata)) {
			continue
		}
		if err := w.json(f.tag, f.p, f.present); err != nil {
			return nil, err
		}
	}
	if v3 && len(inv.Events) > 0 {
		w.v3Events(inv, ca)
	} else if len(inv.Events) > 0 {
		w.b = append(w.b, 't')
		w.b = binary.AppendUvarint(w.b, uint64(len(inv.Events)))
		for _, e := range inv.Events {
			w.raw(e.Type)
			w.b = binary.AppendVarint(w.b, e.At.UnixNano()-ca)
			w.pairs(e.Detail)
		}
	}
	return w.done(), nil
}

func decodeInvitationV2(id string, status grants.Status, body string) (*grants.Invitation, error) {
	inv := &grants.Invitation{ID: id, Status: status}
	strs, times, docs := invStrings(inv), invTimes(inv), invJSON(inv)
	r := &rbuf{b: []byte(body)}
	v3 := &v3Decoder{r: r, inv: inv}
	seenCA := false
	err := r.fields(func(tag byte) error {
		if tag != 'a' && !seenCA {
			return errors.New("record format v2: created_at is not first")
		}
		if ok, err := v3.field(tag); ok {
			return err
		}
		for _, f := range strs {
			if f.tag == tag {
				*f.p = r.str()
				return nil
			}
		}
		for _, f := range times {
			if f.tag == tag {
				t := at(inv.CreatedAt, r.optInt())
				*f.p = &t
				return nil
			}
		}
		for _, f := range docs {
			if f.tag == tag {
				return r.json(f.p)
			}
		}
		switch tag {
		case 'a':
			inv.CreatedAt, seenCA = time.Unix(0, r.int()).UTC(), true
		case 'E':
			inv.ExpiresAt = at(inv.CreatedAt, r.optInt())
		case 'h':
			inv.TokenHash = hex.EncodeToString([]byte(r.str()))
		case 'H':
			inv.TokenHash = r.str()
		case 'r':
			inv.Roles = r.strs()
		case 's':
			inv.SendEmail = true
		case 't':
			inv.Events = make([]grants.Event, r.count())
			for i := range inv.Events {
				e := &inv.Events[i]
				e.Type = r.str()
				e.At = at(inv.CreatedAt, r.optInt())
				e.Detail = r.pairs()
			}
		default:
			return unknownTag(tag)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	v3.done()
	return inv, nil
}
