package redis

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/usher-oidc/usher/sessions"
)

// Record format v2 (recordformat.go) for refresh tokens and browser
// sessions, with the same rules: a payload starting with v2Marker is the
// tagged binary form (recordcodec.go), anything else the v1 JSON; both are
// always read.
//
//	{f:<family>}:t:<hash>  "e|fe|r|payload": the scripts read e, fe and r,
//	                       never the payload; v2 leaves out the hash and the
//	                       family (both in the key)
//	bs:<id>                payload; v2 leaves out the ID (in the key)

// after is t as ns after ca; nil for the zero time.
func after(ca int64, t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	d := t.UnixNano() - ca
	return &d
}

// at undoes after.
func at(ca time.Time, d *int64) time.Time {
	if d == nil {
		return time.Time{}
	}
	return ca.Add(time.Duration(*d))
}

// zeroOrNano: the zero time, or one v2 holds exactly.
func zeroOrNano(ts ...time.Time) bool {
	for _, t := range ts {
		if !t.IsZero() && !nanoTime(t) {
			return false
		}
	}
	return true
}

// encodeRefresh is the payload of rt (without RotatedAt, which lives in r).
func (s *Store) encodeRefresh(rt *sessions.RefreshToken) ([]byte, error) {
	if !s.formatV2() || !nanoTime(rt.CreatedAt) ||
		!zeroOrNano(rt.AuthTime, rt.ExpiresAt, rt.FamilyExpiresAt, rt.FamilyCreatedAt) ||
		emptyNotNil(rt.Scopes == nil, len(rt.Scopes)) || emptyNotNil(rt.Audience == nil, len(rt.Audience)) {
		stored := *rt
		stored.RotatedAt = nil
		return json.Marshal(&stored)
	}
	// Tags: C client_id, s subject, S scopes, A audience, M amr, a created_at
	// (unix ns); relative to it: t auth_time, E expires_at, F
	// family_expires_at, f family_created_at; i session_id, u upstream (JSON).
	ca := rt.CreatedAt.UnixNano()
	w := newWbuf()
	w.str('C', rt.ClientID)
	w.str('s', rt.Subject)
	w.strs('S', rt.Scopes)
	w.strs('A', rt.Audience)
	w.strs('M', rt.AMR)
	w.int('a', ca)
	w.optInt('t', after(ca, rt.AuthTime))
	w.optInt('E', after(ca, rt.ExpiresAt))
	w.optInt('F', after(ca, rt.FamilyExpiresAt))
	w.optInt('f', after(ca, rt.FamilyCreatedAt))
	w.str('i', rt.SessionID)
	if err := w.json('u', rt.Upstream, rt.Upstream != nil); err != nil {
		return nil, err
	}
	return w.done(), nil
}

// decodeRefreshPayload reads either format; family and hash come from the key.
func decodeRefreshPayload(family, hash, payload string) (*sessions.RefreshToken, error) {
	if payload == "" || payload[0] != v2Marker {
		var rt sessions.RefreshToken
		if err := json.Unmarshal([]byte(payload), &rt); err != nil {
			return nil, fmt.Errorf("decode refresh token: %w", err)
		}
		return &rt, nil
	}
	rt := &sessions.RefreshToken{Hash: hash, FamilyID: family}
	var ca int64
	var auth, exp, fexp, fcre *int64
	r := &rbuf{b: []byte(payload[1:])}
	err := r.fields(func(tag byte) error {
		switch tag {
		case 'C':
			rt.ClientID = r.str()
		case 's':
			rt.Subject = r.str()
		case 'S':
			rt.Scopes = r.strs()
		case 'A':
			rt.Audience = r.strs()
		case 'M':
			rt.AMR = r.strs()
		case 'a':
			ca = r.int()
		case 't':
			auth = r.optInt()
		case 'E':
			exp = r.optInt()
		case 'F':
			fexp = r.optInt()
		case 'f':
			fcre = r.optInt()
		case 'i':
			rt.SessionID = r.str()
		case 'u':
			return r.json(&rt.Upstream)
		default:
			return unknownTag(tag)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("decode refresh token: %w", err)
	}
	rt.CreatedAt = time.Unix(0, ca).UTC()
	rt.AuthTime, rt.ExpiresAt = at(rt.CreatedAt, auth), at(rt.CreatedAt, exp)
	rt.FamilyExpiresAt, rt.FamilyCreatedAt = at(rt.CreatedAt, fexp), at(rt.CreatedAt, fcre)
	return rt, nil
}

func (s *Store) encodeBrowserSession(bs *sessions.BrowserSession) ([]byte, error) {
	if !s.formatV2() || !nanoTime(bs.CreatedAt) || !zeroOrNano(bs.ExpiresAt) ||
		emptyNotNil(bs.Values == nil, len(bs.Values)) {
		return json.Marshal(bs)
	}
	// Tags: v values, a created_at (unix ns), E expires_at (relative).
	ca := bs.CreatedAt.UnixNano()
	w := newWbuf()
	w.strMap('v', bs.Values)
	w.int('a', ca)
	w.optInt('E', after(ca, bs.ExpiresAt))
	return w.done(), nil
}

// decodeBrowserSession reads either format; id comes from the key.
func decodeBrowserSession(id string, v []byte) (*sessions.BrowserSession, error) {
	if len(v) == 0 || v[0] != v2Marker {
		var bs sessions.BrowserSession
		if err := json.Unmarshal(v, &bs); err != nil {
			return nil, fmt.Errorf("decode browser session: %w", err)
		}
		return &bs, nil
	}
	bs := &sessions.BrowserSession{ID: id}
	var ca int64
	var exp *int64
	r := &rbuf{b: v[1:]}
	err := r.fields(func(tag byte) error {
		switch tag {
		case 'v':
			bs.Values = r.pairs()
		case 'a':
			ca = r.int()
		case 'E':
			exp = r.optInt()
		default:
			return unknownTag(tag)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("decode browser session: %w", err)
	}
	bs.CreatedAt = time.Unix(0, ca).UTC()
	bs.ExpiresAt = at(bs.CreatedAt, exp)
	return bs, nil
}

// refreshKeyParts is the family and hash of a refreshKey.
func (s *Store) refreshKeyParts(k string) (string, string, error) {
	rest, ok := strings.CutPrefix(k, s.prefix+"{f:")
	fam, hash, ok2 := strings.Cut(rest, "}:t:")
	if !ok || !ok2 {
		return "", "", errors.New("not a refresh token key")
	}
	return unesc(fam), unesc(hash), nil
}
