package redis

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/sessions"
)

// TestRecordFormatsReadBackAlike: every invitation reads back from a v2
// record exactly as from a v1 record (reflect.DeepEqual), and v2 is used
// whenever it can be, falling back to v1 for what it cannot hold exactly.
func TestRecordFormatsReadBackAlike(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 2, 0, 30, 1, 123456789, time.UTC)
	later := now.Add(90 * time.Minute)
	full := func() *grants.Invitation {
		return &grants.Invitation{
			ID: "inv_1", TokenHash: strings.Repeat("0a", 32), Email: "Ann@Example.com",
			Roles: []string{"member", "admin"}, Claims: map[string]any{"org": "acme", "seats": 3.0, "tags": []any{"a"}},
			Metadata: map[string]any{"source": "crm"}, ExternalID: "crm-1", ClientID: "spa", EmailMatch: "domain",
			Inviter: "client:backend", Link: grants.LinkAuthorize, Locale: "de", Status: grants.StatusRedeemed,
			CreatedAt: now, ExpiresAt: now.Add(7 * 24 * time.Hour), SendEmail: true, EmailStatus: "failed", EmailError: "550",
			RedeemedAt: &later, RedeemedBy: "usr_1", RedeemedIdentity: "https://iss|sub", RedeemedConnection: "google",
			RevokedAt: &now, DeclinedAt: &later, DeclinedBy: "usr_2",
			AwaitingVerification: &grants.AwaitingVerification{UserID: "usr_1", Identity: "i|s", Email: "a@b", Since: later},
			Events:               []grants.Event{{Type: "created", At: now, Detail: map[string]string{"by": "x"}}, {Type: "redeemed", At: later}},
			Outbox: []grants.OutboxEvent{{ID: "evt_1", Type: "invitation.redeemed", At: later, Actor: "usr_1",
				Conflicts: []grants.ClaimConflict{{Claim: "org", Kept: "a", Offered: "b"}}}},
		}
	}
	everyFieldSet(t, full())
	minimal := &grants.Invitation{ID: "inv_2", TokenHash: "ff", Status: grants.StatusPending, CreatedAt: now}
	tests := []struct {
		name   string
		inv    *grants.Invitation
		wantV2 bool
	}{
		{"full", full(), true},
		{"minimal", minimal, true},
		{"token hash not lowercase hex", with(full(), func(i *grants.Invitation) { i.TokenHash = "ABC-not hex" }), true},
		{"token hash upper-case hex", with(full(), func(i *grants.Invitation) { i.TokenHash = "0A0B" }), true},
		{"zero revocation delta", with(full(), func(i *grants.Invitation) { c := i.CreatedAt; i.RevokedAt = &c }), true},
		{"empty roles, not nil", with(full(), func(i *grants.Invitation) { i.Roles = []string{} }), false},
		{"empty claims, not nil", with(full(), func(i *grants.Invitation) { i.Claims = map[string]any{} }), false},
		{"empty event detail", with(full(), func(i *grants.Invitation) { i.Events[0].Detail = map[string]string{} }), false},
		{"zero created_at", with(full(), func(i *grants.Invitation) { i.CreatedAt = time.Time{} }), false},
		{"not UTC", with(full(), func(i *grants.Invitation) { i.ExpiresAt = i.ExpiresAt.In(time.FixedZone("x", 3600)) }), false},
		{"zero event time", with(full(), func(i *grants.Invitation) { i.Events[1].At = time.Time{} }), false},
		{"far future", with(full(), func(i *grants.Invitation) { i.ExpiresAt = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC) }), false},
		// What v3 writes in its own fields, and the cases next to them it must not.
		{"string maps", with(full(), func(i *grants.Invitation) {
			i.Claims, i.Metadata = map[string]any{"org": "acme", "": ""}, map[string]any{"s": "crm"}
		}), true},
		{"string claim not UTF-8", with(full(), func(i *grants.Invitation) { i.Claims = map[string]any{"org": "\xff"} }), true},
		{"claim key not UTF-8", with(full(), func(i *grants.Invitation) { i.Claims = map[string]any{"\xff": "x"} }), true},
		{"expiry not whole seconds", with(full(), func(i *grants.Invitation) { i.ExpiresAt = i.ExpiresAt.Add(time.Nanosecond) }), true},
		{"expiry before creation", with(full(), func(i *grants.Invitation) { i.ExpiresAt = i.CreatedAt.Add(-time.Hour) }), true},
		{"created by the inviter", with(full(), func(i *grants.Invitation) {
			i.Events[0].Detail = map[string]string{"inviter": i.Inviter, "by": i.Inviter, i.Inviter: "created"}
		}), true},
		{"no inviter", with(full(), func(i *grants.Invitation) {
			i.Inviter, i.Events[0].Detail = "", map[string]string{"inviter": "", "x": "redeemed"}
		}), true},
		{"words as other fields", with(full(), func(i *grants.Invitation) { i.Email, i.Locale, i.EmailError = "created", "sent", "any" }), true},
		{"event type unknown", with(full(), func(i *grants.Invitation) { i.Events[1].Type = "something_new" }), true},
	}
	v1 := &Store{format: RecordFormatV1}
	for _, format := range []string{RecordFormatV2, RecordFormatV3} {
		compact := &Store{format: format}
		for _, tt := range tests {
			t.Run(format+"/"+tt.name, func(t *testing.T) {
				want := readBack(t, v1, tt.inv)
				raw, err := compact.encodeInvitation(tt.inv)
				if err != nil {
					t.Fatal(err)
				}
				if got := raw[0] == v2Marker; got != tt.wantV2 {
					t.Errorf("written compact: %v, want %v", got, tt.wantV2)
				}
				if got := readBack(t, compact, tt.inv); !reflect.DeepEqual(got, want) {
					t.Errorf("%s reads back\n%+v\nv1 reads back\n%+v", format, got, want)
				}
			})
		}
	}
	if a, b := mustEncode(t, v1, full()), mustEncode(t, &Store{format: RecordFormatV2}, full()); len(b) >= len(a)*2/3 {
		t.Errorf("v2 record %d B, v1 %d B: want at least a third smaller", len(b), len(a))
	}
}

// TestV3RecordSmaller: an invitation as the service creates it (string
// claims, a TTL in seconds, the created event naming the inviter) takes at
// least a fifth fewer bytes in v3 than in v2.
func TestV3RecordSmaller(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 2, 0, 30, 1, 123456789, time.UTC)
	inv := &grants.Invitation{
		ID: "inv_1", TokenHash: strings.Repeat("0a", 32), Email: "ann@example.com", Roles: []string{"member"},
		Claims: map[string]any{"org": "acme", "plan": "pro"}, Metadata: map[string]any{"source": "funnel"},
		ClientID: "spa", EmailMatch: grants.MatchExact, Inviter: "funnel-backend", Status: grants.StatusPending,
		CreatedAt: now, ExpiresAt: now.Add(7 * 24 * time.Hour), SendEmail: true, EmailStatus: "queued",
		Events: []grants.Event{{Type: "created", At: now, Detail: map[string]string{"inviter": "funnel-backend"}}},
	}
	v2, v3 := mustEncode(t, &Store{format: RecordFormatV2}, inv), mustEncode(t, &Store{format: RecordFormatV3}, inv)
	t.Logf("v2 %d B, v3 %d B", len(v2), len(v3))
	if len(v3) > len(v2)*4/5 {
		t.Errorf("v3 record %d B, v2 %d B: want at least a fifth smaller", len(v3), len(v2))
	}
}

func with[T any](v *T, f func(*T)) *T {
	f(v)
	return v
}

func mustEncode(t *testing.T, s *Store, inv *grants.Invitation) []byte {
	t.Helper()
	raw, err := s.encodeInvitation(inv)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// readBack is inv stored by s as the CAS script stores it, then decoded.
func readBack(t *testing.T, s *Store, inv *grants.Invitation) *grants.Invitation {
	t.Helper()
	got, version, err := decodeInvitation(inv.ID, "3|"+string(inv.Status)+"|"+string(mustEncode(t, s, inv)))
	if err != nil {
		t.Fatal(err)
	}
	if version != "3" {
		t.Fatalf("version %q, want 3", version)
	}
	return got
}

// TestDecodeRefusesMalformed: a record cut short anywhere, with bytes after
// its end, or with a field this version does not know is an error, never a
// record with fewer fields.
func TestDecodeRefusesMalformed(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"", "1", "1|pending", "1|pending|", "1|pending|{", "1|pending|\x02", "1|pending|\x02{}"} {
		if _, _, err := decodeInvitation("inv_1", v); err == nil {
			t.Errorf("decodeInvitation(%q) succeeded", v)
		}
	}
	now := time.Date(2026, 12, 2, 0, 30, 1, 123456789, time.UTC)
	v2 := &Store{format: RecordFormatV2}
	inv, err := v2.encodeInvitation(&grants.Invitation{ID: "inv_1", TokenHash: "ab", Email: "a@b", Roles: []string{"r"},
		Claims: map[string]any{"c": 1.0}, CreatedAt: now, Events: []grants.Event{{Type: "created", At: now, Detail: map[string]string{"k": "v"}}}})
	if err != nil {
		t.Fatal(err)
	}
	rt, err := v2.encodeRefresh(&sessions.RefreshToken{Hash: "h", FamilyID: "f", Scopes: []string{"openid"}, CreatedAt: now, ExpiresAt: now})
	if err != nil {
		t.Fatal(err)
	}
	bs, err := v2.encodeBrowserSession(&sessions.BrowserSession{ID: "b", Values: map[string]string{"k": "v"}, CreatedAt: now, ExpiresAt: now})
	if err != nil {
		t.Fatal(err)
	}
	inv3, err := (&Store{format: RecordFormatV3}).encodeInvitation(&grants.Invitation{ID: "inv_1", TokenHash: "ab", Email: "a@b",
		Claims: map[string]any{"c": "d"}, EmailMatch: grants.MatchExact, Inviter: "me", CreatedAt: now, ExpiresAt: now.Add(time.Hour),
		Events: []grants.Event{{Type: "created", At: now, Detail: map[string]string{"inviter": "me", "k": "v"}}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, body := range []string{"a\x00KM\xc8\x01\x00", "a\x00KZ\x00\x00", "a\x00T\x01\xc8\x01\x00\x00\x00", "a\x00T\x01\x02\x00\x01\x01\x00\x00"} {
		if _, _, err := decodeInvitation("inv_1", "1|pending|\x02"+body); err == nil { // no such word, field; a key naming the inviter
			t.Errorf("v3 body %q: decoded", body)
		}
	}
	user := encodeUserCompact(grants.Profile{Email: "a@b", EmailVerified: true, Name: "n", Picture: strings.Repeat("p", 200)}, "i%3As:sub", now)
	ident, err := v2.encodeIdentity(&grants.Identity{Issuer: "i", Subject: "s", UserID: "u", Connection: "c", Email: "e", EmailVerified: true, CreatedAt: now})
	if err != nil {
		t.Fatal(err)
	}
	decoders := []struct {
		name   string
		valid  []byte
		decode func([]byte) error
	}{
		{"invitation", inv, func(b []byte) error { _, _, err := decodeInvitation("inv_1", "1|pending|"+string(b)); return err }},
		{"invitation v3", inv3, func(b []byte) error { _, _, err := decodeInvitation("inv_1", "1|pending|"+string(b)); return err }},
		{"refresh token", rt, func(b []byte) error { _, err := decodeRefreshPayload("f", "h", string(b)); return err }},
		{"browser session", bs, func(b []byte) error { _, err := decodeBrowserSession("b", b); return err }},
		{"user", []byte(user), func(b []byte) error { _, _, err := decodeUserCompact("u", string(b)); return err }},
		{"identity", ident, func(b []byte) error { _, err := decodeIdentity("i", "s", b); return err }},
	}
	for _, d := range decoders {
		if err := d.decode(d.valid); err != nil {
			t.Fatalf("%s: the valid record: %v", d.name, err)
		}
		for n := 1; n < len(d.valid); n++ {
			if err := d.decode(d.valid[:n]); err == nil {
				t.Errorf("%s cut to %d of %d bytes: decoded", d.name, n, len(d.valid))
			}
		}
		if err := d.decode(append(slices.Clone(d.valid), 'x')); err == nil {
			t.Errorf("%s with a byte after its end: decoded", d.name)
		}
		unknown := append(slices.Clone(d.valid[:len(d.valid)-1]), '~', 1, 'x', 0) // a string field this version does not know
		if err := d.decode(unknown); err == nil {
			t.Errorf("%s with an unknown field: decoded", d.name)
		}
	}
}

// TestSessionRecordFormatsReadBackAlike: refresh tokens and browser
// sessions read back from v2 exactly as from v1.
func TestSessionRecordFormatsReadBackAlike(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 2, 0, 30, 1, 123456789, time.UTC)
	fullRT := func() *sessions.RefreshToken {
		return &sessions.RefreshToken{
			Hash: strings.Repeat("0a", 32), FamilyID: "fam_1", ClientID: "spa", Subject: "usr_1",
			Scopes: []string{"openid", "offline_access"}, Audience: []string{"api"}, AMR: []string{"pwd", "mfa"},
			AuthTime: now.Add(-time.Minute), CreatedAt: now, ExpiresAt: now.Add(24 * time.Hour),
			FamilyExpiresAt: now.Add(30 * 24 * time.Hour), FamilyCreatedAt: now.Add(-time.Hour),
			RotatedAt: new(time.Time), SessionID: "bs_1", Upstream: &sessions.Upstream{Subject: "auth0|1", Claims: map[string]any{"x": "y"}},
		}
	}
	everyFieldSet(t, fullRT())
	v1, v2 := &Store{format: RecordFormatV1}, &Store{format: RecordFormatV2}
	rts := []struct {
		name   string
		rt     *sessions.RefreshToken
		wantV2 bool
	}{
		{"full", fullRT(), true},
		{"minimal", &sessions.RefreshToken{Hash: "h", FamilyID: "f", CreatedAt: now, ExpiresAt: now}, true},
		{"no auth time, empty AMR", with(fullRT(), func(r *sessions.RefreshToken) { r.AuthTime, r.AMR = time.Time{}, []string{} }), true},
		{"empty scopes, not nil", with(fullRT(), func(r *sessions.RefreshToken) { r.Scopes = []string{} }), false},
		{"not UTC", with(fullRT(), func(r *sessions.RefreshToken) { r.AuthTime = r.AuthTime.In(time.FixedZone("x", 60)) }), false},
		{"zero created_at", with(fullRT(), func(r *sessions.RefreshToken) { r.CreatedAt = time.Time{} }), false},
	}
	for _, tt := range rts {
		t.Run("refresh/"+tt.name, func(t *testing.T) {
			want := readBackRefresh(t, v1, tt.rt)
			if raw, _ := v2.encodeRefresh(tt.rt); (raw[0] == v2Marker) != tt.wantV2 {
				t.Errorf("written as v2: %v, want %v", raw[0] == v2Marker, tt.wantV2)
			}
			if got := readBackRefresh(t, v2, tt.rt); !reflect.DeepEqual(got, want) {
				t.Errorf("v2 reads back\n%+v\nv1 reads back\n%+v", got, want)
			}
		})
	}
	fullBS := func() *sessions.BrowserSession {
		return &sessions.BrowserSession{ID: "bs_1", Values: map[string]string{"user": "usr_1"}, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	}
	everyFieldSet(t, fullBS())
	bss := []struct {
		name   string
		bs     *sessions.BrowserSession
		wantV2 bool
	}{
		{"full", fullBS(), true},
		{"nil values", with(fullBS(), func(b *sessions.BrowserSession) { b.Values = nil }), true},
		{"empty values, not nil", with(fullBS(), func(b *sessions.BrowserSession) { b.Values = map[string]string{} }), false},
		{"not UTC", with(fullBS(), func(b *sessions.BrowserSession) { b.CreatedAt = b.CreatedAt.In(time.FixedZone("x", -60)) }), false},
	}
	for _, tt := range bss {
		t.Run("browser session/"+tt.name, func(t *testing.T) {
			want := readBackBrowserSession(t, v1, tt.bs)
			if raw, _ := v2.encodeBrowserSession(tt.bs); (raw[0] == v2Marker) != tt.wantV2 {
				t.Errorf("written as v2: %v, want %v", raw[0] == v2Marker, tt.wantV2)
			}
			if got := readBackBrowserSession(t, v2, tt.bs); !reflect.DeepEqual(got, want) {
				t.Errorf("v2 reads back\n%+v\nv1 reads back\n%+v", got, want)
			}
		})
	}
}

// everyFieldSet fails when v (a pointer to a struct) leaves a field zero: a
// field added to the record must be mapped in its v2 form too.
func everyFieldSet(t *testing.T, v any) {
	t.Helper()
	rv := reflect.ValueOf(v).Elem()
	for i := range rv.NumField() {
		if rv.Type().Field(i).Tag.Get("json") == "-" {
			continue // never stored (e.g. BrowserSession.Transient)
		}
		if rv.Field(i).IsZero() {
			t.Errorf("%s.%s unset: set it in the test and map it in the v2 form", rv.Type().Name(), rv.Type().Field(i).Name)
		}
	}
}

func readBackRefresh(t *testing.T, s *Store, rt *sessions.RefreshToken) *sessions.RefreshToken {
	t.Helper()
	e, fe, _, raw, err := s.refreshArgs(rt)
	if err != nil {
		t.Fatal(err)
	}
	r := ""
	if rt.RotatedAt != nil {
		r = fmtTime(*rt.RotatedAt)
	}
	got, err := decodeRefresh(rt.FamilyID, rt.Hash, e+"|"+fe+"|"+r+"|"+string(raw))
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func readBackBrowserSession(t *testing.T, s *Store, bs *sessions.BrowserSession) *sessions.BrowserSession {
	t.Helper()
	raw, err := s.encodeBrowserSession(bs)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeBrowserSession(bs.ID, raw)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestUserRecordFormatsReadBackAlike: an identity and a new user read back
// from the compact form (v3) exactly as from v1, and a v2 store still writes
// identities as v1 did.
func TestUserRecordFormatsReadBackAlike(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 2, 0, 30, 1, 123456789, time.UTC)
	full := grants.Identity{Issuer: "https://i:x{y}/", Subject: "auth0|1", UserID: "usr_1", Connection: "google",
		Email: "a@b", EmailVerified: true, CreatedAt: now}
	everyFieldSet(t, &full)
	v1, v2, v3 := &Store{format: RecordFormatV1}, &Store{format: RecordFormatV2}, &Store{format: RecordFormatV3}
	for _, id := range []grants.Identity{full, {Issuer: "i", Subject: "s", UserID: "u"}} {
		var want, got *grants.Identity
		for _, s := range []*Store{v1, v2, v3} {
			raw, err := s.encodeIdentity(&id)
			if err != nil {
				t.Fatal(err)
			}
			if (raw[0] == v2Marker) != (s == v3) {
				t.Errorf("identity written compact: %v by a %s store", raw[0] == v2Marker, s.format)
			}
			got, err = decodeIdentityAt(identitySuffix(id.Issuer, id.Subject), raw)
			if err != nil {
				t.Fatal(err)
			}
			if want == nil {
				want = got
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("identity: v3 reads back\n%+v\nv1 reads back\n%+v", got, want)
		}
	}
	p := grants.Profile{Email: "Ann@Example.com", EmailVerified: true, Name: "Ann", Picture: strings.Repeat("p", 300)}
	want, err := userFromHash(map[string]string{"id": "usr_1", "email": p.Email, "ev": "1", "name": p.Name, "pic": p.Picture,
		"ca": fmtTime(now), "ua": fmtTime(now), "ll": fmtTime(now), "o": "i:s"})
	if err != nil {
		t.Fatal(err)
	}
	got, suffixes, err := decodeUserCompact("usr_1", encodeUserCompact(p, "i:s", now))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) || !slices.Equal(suffixes, []string{"i:s"}) {
		t.Errorf("user: the compact form reads back\n%+v %v\nv1 reads back\n%+v", got, suffixes, want)
	}
}
