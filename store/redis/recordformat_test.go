package redis

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/usher-oidc/usher/grants"
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
	// A field added to grants.Invitation must be mapped in invitationV2 too;
	// full sets every field, so that the comparison below covers it.
	rv := reflect.ValueOf(full()).Elem()
	for i := range rv.NumField() {
		if rv.Field(i).IsZero() {
			t.Errorf("full() leaves Invitation.%s unset: set it here and map it in invitationV2", rv.Type().Field(i).Name)
		}
	}
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
	}
	v1, v2 := &Store{format: RecordFormatV1}, &Store{format: RecordFormatV2}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := readBack(t, v1, tt.inv)
			raw, err := v2.encodeInvitation(tt.inv)
			if err != nil {
				t.Fatal(err)
			}
			if got := raw[0] == v2Marker; got != tt.wantV2 {
				t.Errorf("written as v2: %v, want %v", got, tt.wantV2)
			}
			if got := readBack(t, v2, tt.inv); !reflect.DeepEqual(got, want) {
				t.Errorf("v2 reads back\n%+v\nv1 reads back\n%+v", got, want)
			}
		})
	}
	if a, b := mustEncode(t, v1, full()), mustEncode(t, v2, full()); len(b) >= len(a)*2/3 {
		t.Errorf("v2 record %d B, v1 %d B: want at least a third smaller", len(b), len(a))
	}
}

func with(inv *grants.Invitation, f func(*grants.Invitation)) *grants.Invitation {
	f(inv)
	return inv
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

func TestDecodeInvitationRefusesMalformed(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"", "1", "1|pending", "1|pending|", "1|pending|{", "1|pending|\x02{", "1|pending|\x02{\"h\":\"!!\"}"} {
		if _, _, err := decodeInvitation("inv_1", v); err == nil {
			t.Errorf("decodeInvitation(%q) succeeded", v)
		}
	}
}
