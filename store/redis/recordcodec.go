package redis

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// The v2 payload body (after v2Marker): fields as a tag byte (a letter, so
// that redis-cli output stays legible) and a value, in any order, absent
// when empty, then the byte 0. Values: strings and JSON documents as a
// uvarint length and the bytes; integers as varints; lists and maps as a
// uvarint count and their strings; a flag is its tag alone. The end byte
// makes a cut-short record an error rather than a record with fewer fields.

var errTruncated = errors.New("record format v2: truncated")

const endTag = 0

type wbuf struct{ b []byte }

func newWbuf() *wbuf { return &wbuf{b: append(make([]byte, 0, 256), v2Marker)} }

func (w *wbuf) raw(s string) {
	w.b = binary.AppendUvarint(w.b, uint64(len(s)))
	w.b = append(w.b, s...)
}

func (w *wbuf) str(tag byte, s string) {
	if s != "" {
		w.b = append(w.b, tag)
		w.raw(s)
	}
}

func (w *wbuf) strs(tag byte, ss []string) {
	if len(ss) == 0 {
		return
	}
	w.b = append(w.b, tag)
	w.b = binary.AppendUvarint(w.b, uint64(len(ss)))
	for _, s := range ss {
		w.raw(s)
	}
}

// strMap writes m's pairs in key order (a stable encoding).
func (w *wbuf) strMap(tag byte, m map[string]string) {
	if len(m) == 0 {
		return
	}
	w.b = append(w.b, tag)
	w.pairs(m)
}

func (w *wbuf) pairs(m map[string]string) {
	w.b = binary.AppendUvarint(w.b, uint64(len(m)))
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		w.raw(k)
		w.raw(m[k])
	}
}

func (w *wbuf) int(tag byte, v int64) {
	w.b = append(w.b, tag)
	w.b = binary.AppendVarint(w.b, v)
}

func (w *wbuf) optInt(tag byte, v *int64) {
	if v != nil {
		w.int(tag, *v)
	}
}

func (w *wbuf) flag(tag byte, on bool) {
	if on {
		w.b = append(w.b, tag)
	}
}

// json writes v as a JSON document when present.
func (w *wbuf) json(tag byte, v any, present bool) error {
	if !present {
		return nil
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.str(tag, string(raw))
	return nil
}

func (w *wbuf) done() []byte { return append(w.b, endTag) }

type rbuf struct {
	b   []byte
	err error
}

// fields calls field for each tag until the end byte; field reads the value.
func (r *rbuf) fields(field func(tag byte) error) error {
	for r.err == nil {
		if len(r.b) == 0 {
			return errTruncated
		}
		tag := r.b[0]
		r.b = r.b[1:]
		if tag == endTag {
			if len(r.b) > 0 {
				return errors.New("record format v2: bytes after the end")
			}
			return nil
		}
		if err := field(tag); err != nil {
			return err
		}
	}
	return r.err
}

func unknownTag(tag byte) error { return fmt.Errorf("record format v2: unknown field %q", tag) }

func (r *rbuf) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *rbuf) int() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *rbuf) optInt() *int64 {
	v := r.int()
	return &v
}

func (r *rbuf) fail() {
	if r.err == nil {
		r.err = errTruncated
	}
	r.b = nil
}

func (r *rbuf) str() string {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.fail()
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

// count reads a list length, bounded by what is left (each element takes
// at least a byte), so a corrupt count cannot allocate much.
func (r *rbuf) count() int {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.fail()
		return 0
	}
	return int(n)
}

func (r *rbuf) strs() []string {
	n := r.count()
	out := make([]string, 0, n)
	for range n {
		out = append(out, r.str())
	}
	return out
}

// pairs reads what wbuf.pairs wrote; nil for none.
func (r *rbuf) pairs() map[string]string {
	n := r.count()
	if n == 0 {
		return nil
	}
	m := make(map[string]string, n)
	for range n {
		k := r.str()
		m[k] = r.str()
	}
	return m
}

// json decodes a JSON document into v.
func (r *rbuf) json(v any) error {
	s := r.str()
	if r.err != nil {
		return r.err
	}
	return json.Unmarshal([]byte(s), v)
}
