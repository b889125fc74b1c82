package redis

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/usher-oidc/usher/grants"
)

// Record formats. An invitation is stored as "version|status|payload"; the
// scripts read only version and status, never the payload, so both formats
// go through the same scripts. The payload is either
//
//	v1: grants.Invitation as JSON (starts with '{')
//	v2: the byte 0x02, then invitationV2 as JSON: short keys, empty fields
//	    left out, times as unix nanoseconds (later ones relative to
//	    created_at), the token hash as base64url bytes, and neither the ID
//	    (it is in the key) nor the status (it is in the prefix).
//
// Every Store reads both; Options.RecordFormat only chooses what it writes,
// so a rollout upgrades every replica first and then switches writing to v2
// (and back to v1, if need be, without losing any record).
const (
	RecordFormatV1 = "v1"
	RecordFormatV2 = "v2"
)

// v2Marker starts a v2 payload: a v1 payload is JSON and starts with '{'.
const v2Marker = '\x02'

// RecordFormats lists the values Options.RecordFormat accepts ("" is v1).
var RecordFormats = []string{RecordFormatV1, RecordFormatV2}

// ValidRecordFormat reports whether f is a format this version can write.
func ValidRecordFormat(f string) bool {
	return f == "" || f == RecordFormatV1 || f == RecordFormatV2
}

// invitationV2 is the wire form of grants.Invitation in the v2 payload.
// Times: CA is unix ns; the others are ns after CA (pointers: present
// when set, even if 0).
type invitationV2 struct {
	H  string                       `json:"h,omitempty"`  // token hash: base64url of its bytes
	HX string                       `json:"hx,omitempty"` // token hash as is, when not lowercase hex
	E  string                       `json:"e,omitempty"`
	R  []string                     `json:"r,omitempty"`
	C  map[string]any               `json:"c,omitempty"`
	M  map[string]any               `json:"m,omitempty"`
	X  string                       `json:"x,omitempty"`
	CI string                       `json:"ci,omitempty"`
	EM string                       `json:"em,omitempty"`
	IV string                       `json:"iv,omitempty"`
	L  string                       `json:"l,omitempty"`
	LC string                       `json:"lc,omitempty"`
	CA int64                        `json:"ca"`
	EA *int64                       `json:"ea,omitempty"`
	SE bool                         `json:"se,omitempty"`
	ES string                       `json:"es,omitempty"`
	ER string                       `json:"er,omitempty"`
	RA *int64                       `json:"ra,omitempty"`
	RB string                       `json:"rb,omitempty"`
	RI string                       `json:"ri,omitempty"`
	RC string                       `json:"rc,omitempty"`
	VA *int64                       `json:"va,omitempty"` // revoked_at
	DA *int64                       `json:"da,omitempty"`
	DB string                       `json:"db,omitempty"`
	AV *grants.AwaitingVerification `json:"av,omitempty"` // rare: as in v1
	EV []eventV2                    `json:"ev,omitempty"`
	O  []grants.OutboxEvent         `json:"o,omitempty"` // short-lived: as in v1
}

type eventV2 struct {
	T string            `json:"t"`
	A int64             `json:"a,omitempty"` // ns after created_at
	D map[string]string `json:"d,omitempty"`
}

// encodeInvitation is the payload of inv in the format s writes. A record v2
// cannot hold exactly (see compactable) is written in v1, which every
// version reads.
func (s *Store) encodeInvitation(inv *grants.Invitation) ([]byte, error) {
	if s.format != RecordFormatV2 || !compactable(inv) {
		return json.Marshal(inv)
	}
	w := toV2(inv)
	raw, err := json.Marshal(&w)
	if err != nil {
		return nil, err
	}
	return append([]byte{v2Marker}, raw...), nil
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
	var w invitationV2
	if err := json.Unmarshal([]byte(payload[1:]), &w); err != nil {
		return nil, "", fmt.Errorf("decode invitation (v2): %w", err)
	}
	inv, err := fromV2(&w, id, grants.Status(status))
	if err != nil {
		return nil, "", fmt.Errorf("decode invitation (v2): %w", err)
	}
	return inv, version, nil
}

// compactable reports whether v2 holds inv exactly as v1 would give it back:
// times in UTC within unix-nanosecond range (and a created_at to count from),
// no empty-but-present slices or maps (v2 leaves empty ones out, which reads
// back as nil).
func compactable(inv *grants.Invitation) bool {
	if !nanoTime(inv.CreatedAt) || (!inv.ExpiresAt.IsZero() && !nanoTime(inv.ExpiresAt)) {
		return false
	}
	for _, t := range []*time.Time{inv.RedeemedAt, inv.RevokedAt, inv.DeclinedAt} {
		if t != nil && !nanoTime(*t) {
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

func toV2(inv *grants.Invitation) invitationV2 {
	ca := inv.CreatedAt.UnixNano()
	after := func(t *time.Time) *int64 {
		if t == nil {
			return nil
		}
		d := t.UnixNano() - ca
		return &d
	}
	w := invitationV2{
		E: inv.Email, R: inv.Roles, C: inv.Claims, M: inv.Metadata, X: inv.ExternalID, CI: inv.ClientID,
		EM: inv.EmailMatch, IV: inv.Inviter, L: inv.Link, LC: inv.Locale, CA: ca, SE: inv.SendEmail,
		ES: inv.EmailStatus, ER: inv.EmailError, RA: after(inv.RedeemedAt), RB: inv.RedeemedBy,
		RI: inv.RedeemedIdentity, RC: inv.RedeemedConnection, VA: after(inv.RevokedAt),
		DA: after(inv.DeclinedAt), DB: inv.DeclinedBy, AV: inv.AwaitingVerification, O: inv.Outbox,
	}
	if !inv.ExpiresAt.IsZero() {
		w.EA = after(&inv.ExpiresAt)
	}
	if b, err := hex.DecodeString(inv.TokenHash); err == nil && hex.EncodeToString(b) == inv.TokenHash && len(b) > 0 {
		w.H = base64.RawURLEncoding.EncodeToString(b)
	} else {
		w.HX = inv.TokenHash
	}
	if len(inv.Events) > 0 {
		w.EV = make([]eventV2, len(inv.Events))
		for i, e := range inv.Events {
			w.EV[i] = eventV2{T: e.Type, A: e.At.UnixNano() - ca, D: e.Detail}
		}
	}
	return w
}

func fromV2(w *invitationV2, id string, status grants.Status) (*grants.Invitation, error) {
	ca := time.Unix(0, w.CA).UTC()
	at := func(d *int64) *time.Time {
		if d == nil {
			return nil
		}
		t := ca.Add(time.Duration(*d))
		return &t
	}
	inv := &grants.Invitation{
		ID: id, TokenHash: w.HX, Email: w.E, Roles: w.R, Claims: w.C, Metadata: w.M, ExternalID: w.X,
		ClientID: w.CI, EmailMatch: w.EM, Inviter: w.IV, Link: w.L, Locale: w.LC, Status: status,
		CreatedAt: ca, SendEmail: w.SE, EmailStatus: w.ES, EmailError: w.ER, RedeemedAt: at(w.RA),
		RedeemedBy: w.RB, RedeemedIdentity: w.RI, RedeemedConnection: w.RC, RevokedAt: at(w.VA),
		DeclinedAt: at(w.DA), DeclinedBy: w.DB, AwaitingVerification: w.AV, Outbox: w.O,
	}
	if w.EA != nil {
		inv.ExpiresAt = *at(w.EA)
	}
	if w.H != "" {
		b, err := base64.RawURLEncoding.DecodeString(w.H)
		if err != nil {
			return nil, fmt.Errorf("token hash: %w", err)
		}
		inv.TokenHash = hex.EncodeToString(b)
	}
	if len(w.EV) > 0 {
		inv.Events = make([]grants.Event, len(w.EV))
		for i, e := range w.EV {
			inv.Events[i] = grants.Event{Type: e.T, At: ca.Add(time.Duration(e.A)), Detail: e.D}
		}
	}
	return inv, nil
}
