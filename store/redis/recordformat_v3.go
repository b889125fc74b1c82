package redis

import (
	"encoding/binary"
	"errors"
	"maps"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/usher-oidc/usher/grants"
)

// Invitation fields only v3 stores write (every store reads them): a v3
// payload is a v2 payload that may use these tags as well, each where it is
// shorter.
//
//	X expires_at as whole seconds after created_at (a TTL in seconds)
//	k, q claims, metadata when every value is a string: their pairs
//	K a string field holding a word of v3Words: its tag, the word's index
//	T events, each string a reference (wbuf.ref)
//
// v3Words is part of the format: a word may be appended, never removed or
// moved, and a store reading a record with an index past its table fails.
var v3Words = []string{
	"created", "inviter", "mailed", "mail_failed", "redeemed", "revoked", "declined", "resent", "opened",
	"expired", "awaiting_verification", "redemption_failed", "email", "reason", "user_id", "by",
	grants.MatchExact, grants.MatchAny, grants.MatchDomain, "queued", "sending", "sent", "failed", "not_requested",
}

var v3WordIndex = func() map[string]int {
	m := make(map[string]int, len(v3Words))
	for i, w := range v3Words {
		m[w] = i
	}
	return m
}()

// References (wbuf.ref): 0 then the string, 1 for the invitation's inviter,
// 2+i for v3Words[i].
const (
	refLiteral = 0
	refInviter = 1
	refWords   = 2
)

// v3Strings writes inv's string fields, words as 'K'.
func (w *wbuf) v3Strings(inv *grants.Invitation) {
	for _, f := range invStrings(inv) {
		if i, ok := v3WordIndex[*f.p]; ok {
			w.b = append(w.b, 'K', f.tag)
			w.b = binary.AppendUvarint(w.b, uint64(i))
			continue
		}
		w.str(f.tag, *f.p)
	}
}

// v3Expiry writes expires_at as 'X' when it is whole seconds after
// created_at; it reports whether it did.
func (w *wbuf) v3Expiry(d *int64) bool {
	if d == nil || *d%int64(time.Second) != 0 {
		return false
	}
	w.int('X', *d/int64(time.Second))
	return true
}

// v3StrMap writes m as pairs under tag when every value is a string (and
// all of it UTF-8, which JSON would not give back as it is); it reports
// whether it did.
func (w *wbuf) v3StrMap(tag byte, m map[string]any) bool {
	if len(m) == 0 {
		return false
	}
	pairs := make(map[string]string, len(m))
	for k, v := range m {
		s, ok := v.(string)
		if !ok || !utf8.ValidString(s) || !utf8.ValidString(k) {
			return false
		}
		pairs[k] = s
	}
	w.strMap(tag, pairs)
	return true
}

// ref writes s as a reference.
func (w *wbuf) ref(s, inviter string) {
	if i, ok := v3WordIndex[s]; ok {
		w.b = binary.AppendUvarint(w.b, uint64(refWords+i))
		return
	}
	if s != "" && s == inviter {
		w.b = binary.AppendUvarint(w.b, refInviter)
		return
	}
	w.b = binary.AppendUvarint(w.b, refLiteral)
	w.raw(s)
}

func (w *wbuf) v3Events(inv *grants.Invitation, ca int64) {
	w.b = append(w.b, 'T')
	w.b = binary.AppendUvarint(w.b, uint64(len(inv.Events)))
	for _, e := range inv.Events {
		w.ref(e.Type, inv.Inviter)
		w.b = binary.AppendVarint(w.b, e.At.UnixNano()-ca)
		w.b = binary.AppendUvarint(w.b, uint64(len(e.Detail)))
		for _, k := range slices.Sorted(maps.Keys(e.Detail)) {
			w.ref(k, "") // a key is never the inviter: the decoder needs it at once
			w.ref(e.Detail[k], inv.Inviter)
		}
	}
}

// v3Decoder reads the v3 fields of one invitation; references to its
// inviter are resolved once every field is read (fields come in any order).
type v3Decoder struct {
	r        *rbuf
	inv      *grants.Invitation
	inviters []func(string)
}

var errBadWord = errors.New("record format v3: unknown word")

// field reads a v3 field; false for a tag that is none.
func (d *v3Decoder) field(tag byte) (bool, error) {
	r, inv := d.r, d.inv
	switch tag {
	case 'X':
		s := r.int() * int64(time.Second)
		inv.ExpiresAt = at(inv.CreatedAt, &s)
	case 'k':
		inv.Claims = anyMap(r.pairs())
	case 'q':
		inv.Metadata = anyMap(r.pairs())
	case 'K':
		return true, d.word()
	case 'T':
		return true, d.events()
	default:
		return false, nil
	}
	return true, nil
}

func (d *v3Decoder) word() error {
	if len(d.r.b) == 0 {
		d.r.fail()
		return d.r.err
	}
	tag := d.r.b[0]
	d.r.b = d.r.b[1:]
	i := d.r.uvarint()
	if i >= uint64(len(v3Words)) {
		return errBadWord
	}
	for _, f := range invStrings(d.inv) {
		if f.tag == tag {
			*f.p = v3Words[i]
			return nil
		}
	}
	return unknownTag(tag)
}

func (d *v3Decoder) events() error {
	inv := d.inv
	inv.Events = make([]grants.Event, d.r.count())
	for i := range inv.Events {
		e := &inv.Events[i]
		if err := d.ref(func(s string) { e.Type = s }); err != nil {
			return err
		}
		e.At = at(inv.CreatedAt, d.r.optInt())
		n := d.r.count()
		if n > 0 {
			e.Detail = make(map[string]string, n)
		}
		for range n {
			key, late := "", len(d.inviters)
			if err := d.ref(func(s string) { key = s }); err != nil {
				return err
			}
			if len(d.inviters) > late {
				return errors.New("record format v3: an event detail key refers to the inviter")
			}
			if err := d.ref(func(s string) { e.Detail[key] = s }); err != nil {
				return err
			}
		}
	}
	return nil
}

// ref reads a reference and sets it, now or, for the inviter, at the end.
func (d *v3Decoder) ref(set func(string)) error {
	switch n := d.r.uvarint(); {
	case n == refLiteral:
		set(d.r.str())
	case n == refInviter:
		d.inviters = append(d.inviters, set)
	case n-refWords < uint64(len(v3Words)):
		set(v3Words[n-refWords])
	default:
		return errBadWord
	}
	return nil
}

// done sets the references to the inviter.
func (d *v3Decoder) done() {
	for _, set := range d.inviters {
		set(d.inv.Inviter)
	}
}

func anyMap(m map[string]string) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
