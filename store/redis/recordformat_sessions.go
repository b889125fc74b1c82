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
// short-key form, anything else the v1 JSON; both are always read.
//
//	{f:<family>}:t:<hash>  "e|fe|r|payload": the scripts read e, fe and r,
//	                       never the payload; v2 leaves out the hash and the
//	                       family (both in the key)
//	bs:<id>                payload; v2 leaves out the ID (in the key)

type refreshV2 struct {
	CI string             `json:"ci,omitempty"`
	S  string             `json:"s,omitempty"`
	SC []string           `json:"sc,omitempty"`
	AU []string           `json:"au,omitempty"`
	AM []string           `json:"am,omitempty"`
	CA int64              `json:"ca"`           // unix ns; the others ns after it
	AT *int64             `json:"at,omitempty"` // auth_time
	EA *int64             `json:"ea,omitempty"`
	FE *int64             `json:"fe,omitempty"`
	FC *int64             `json:"fc,omitempty"` // family_created_at
	SI string             `json:"si,omitempty"`
	UP *sessions.Upstream `json:"up,omitempty"` // as in v1
}

type browserSessionV2 struct {
	V  map[string]string `json:"v,omitempty"`
	CA int64             `json:"ca"`
	EA *int64            `json:"ea,omitempty"`
}

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
	if s.format != RecordFormatV2 || !nanoTime(rt.CreatedAt) ||
		!zeroOrNano(rt.AuthTime, rt.ExpiresAt, rt.FamilyExpiresAt, rt.FamilyCreatedAt) ||
		emptyNotNil(rt.Scopes == nil, len(rt.Scopes)) || emptyNotNil(rt.Audience == nil, len(rt.Audience)) {
		stored := *rt
		stored.RotatedAt = nil
		return json.Marshal(&stored)
	}
	ca := rt.CreatedAt.UnixNano()
	raw, err := json.Marshal(&refreshV2{
		CI: rt.ClientID, S: rt.Subject, SC: rt.Scopes, AU: rt.Audience, AM: rt.AMR, CA: ca,
		AT: after(ca, rt.AuthTime), EA: after(ca, rt.ExpiresAt), FE: after(ca, rt.FamilyExpiresAt),
		FC: after(ca, rt.FamilyCreatedAt), SI: rt.SessionID, UP: rt.Upstream,
	})
	if err != nil {
		return nil, err
	}
	return append([]byte{v2Marker}, raw...), nil
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
	var w refreshV2
	if err := json.Unmarshal([]byte(payload[1:]), &w); err != nil {
		return nil, fmt.Errorf("decode refresh token (v2): %w", err)
	}
	ca := time.Unix(0, w.CA).UTC()
	return &sessions.RefreshToken{
		Hash: hash, FamilyID: family, ClientID: w.CI, Subject: w.S, Scopes: w.SC, Audience: w.AU, AMR: w.AM,
		AuthTime: at(ca, w.AT), CreatedAt: ca, ExpiresAt: at(ca, w.EA), FamilyExpiresAt: at(ca, w.FE),
		FamilyCreatedAt: at(ca, w.FC), SessionID: w.SI, Upstream: w.UP,
	}, nil
}

func (s *Store) encodeBrowserSession(bs *sessions.BrowserSession) ([]byte, error) {
	if s.format != RecordFormatV2 || !nanoTime(bs.CreatedAt) || !zeroOrNano(bs.ExpiresAt) ||
		emptyNotNil(bs.Values == nil, len(bs.Values)) {
		return json.Marshal(bs)
	}
	ca := bs.CreatedAt.UnixNano()
	raw, err := json.Marshal(&browserSessionV2{V: bs.Values, CA: ca, EA: after(ca, bs.ExpiresAt)})
	if err != nil {
		return nil, err
	}
	return append([]byte{v2Marker}, raw...), nil
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
	var w browserSessionV2
	if err := json.Unmarshal(v[1:], &w); err != nil {
		return nil, fmt.Errorf("decode browser session (v2): %w", err)
	}
	ca := time.Unix(0, w.CA).UTC()
	return &sessions.BrowserSession{ID: id, Values: w.V, CreatedAt: ca, ExpiresAt: at(ca, w.EA)}, nil
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
