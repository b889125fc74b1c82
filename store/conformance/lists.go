package conformance

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/store/errs"
)

func ids(invs []grants.Invitation) []string {
	out := make([]string, len(invs))
	for i, inv := range invs {
		out[i] = inv.ID
	}
	return out
}

func testInvitationListFilters(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	now := clock.Now()
	mk := func(id string, age time.Duration, email, client, ext string) *grants.Invitation {
		inv := invitation(id, now.Add(-age))
		inv.Email, inv.ClientID, inv.ExternalID = email, client, ext
		return inv
	}
	p1 := mk("p1", 5*time.Minute, "Ada@Example.com", "spa", "crm-1")
	p2 := mk("p2", 4*time.Minute, "bob@example.com", "admin", "")
	e1 := mk("e1", 3*time.Minute, "carol@example.com", "admin", "")
	e1.ExpiresAt = now.Add(-time.Minute)
	r1 := mk("r1", 2*time.Minute, "ada@example.com", "admin", "")
	v1 := mk("v1", time.Minute, "dan@example.com", "spa", "crm-2")
	for _, inv := range []*grants.Invitation{p1, p2, e1, r1, v1} {
		_, err := s.CreateInvitation(ctx, inv)
		must(t, "create "+inv.ID, err)
	}
	_, _, err := s.RedeemInvitation(ctx, r1.TokenHash, grants.Redemption{UserID: "u-1", At: now})
	must(t, "redeem r1", err)
	_, err = s.RevokeInvitation(ctx, "v1", now)
	must(t, "revoke v1", err)

	for _, c := range []struct {
		name string
		f    grants.InvitationFilter
		now  time.Time
		want []string
	}{
		{"all", grants.InvitationFilter{}, now, []string{"v1", "r1", "e1", "p2", "p1"}},
		{"pending", grants.InvitationFilter{Status: grants.StatusPending}, now, []string{"p2", "p1"}},
		{"expired", grants.InvitationFilter{Status: grants.StatusExpired}, now, []string{"e1"}},
		{"redeemed", grants.InvitationFilter{Status: grants.StatusRedeemed}, now, []string{"r1"}},
		{"revoked", grants.InvitationFilter{Status: grants.StatusRevoked}, now, []string{"v1"}},
		{"email any case", grants.InvitationFilter{Email: "ADA@example.COM"}, now, []string{"r1", "p1"}},
		{"email pending", grants.InvitationFilter{Email: "ada@example.com", Status: grants.StatusPending}, now, []string{"p1"}},
		{"client", grants.InvitationFilter{ClientID: "spa"}, now, []string{"v1", "p1"}},
		{"external id", grants.InvitationFilter{ExternalID: "crm-1"}, now, []string{"p1"}},
		{"external id revoked", grants.InvitationFilter{ExternalID: "crm-2", Status: grants.StatusRevoked}, now, []string{"v1"}},
		{"external id no match", grants.InvitationFilter{ExternalID: "crm-2", Status: grants.StatusPending}, now, nil},
		{"unknown email", grants.InvitationFilter{Email: "zed@example.com"}, now, nil},
		{"pending, later", grants.InvitationFilter{Status: grants.StatusPending}, now.Add(8 * 24 * time.Hour), nil},
		{"expired, later", grants.InvitationFilter{Status: grants.StatusExpired}, now.Add(8 * 24 * time.Hour), []string{"e1", "p2", "p1"}},
	} {
		got, next, err := s.ListInvitations(ctx, c.f, c.now)
		must(t, "list "+c.name, err)
		if !slices.Equal(ids(got), c.want) && !(len(got) == 0 && len(c.want) == 0) {
			t.Errorf("list %s = %v, want %v", c.name, ids(got), c.want)
		}
		if next != "" {
			t.Errorf("list %s: cursor %q on the only page", c.name, next)
		}
	}
	_, _, err = s.ListInvitations(ctx, grants.InvitationFilter{Cursor: "!!not a cursor!!"}, now)
	if err == nil {
		t.Error("ListInvitations accepted a garbage cursor")
	}
}

// A cursor the store did not issue is refused with errs.ErrBadCursor (and
// errs.ErrInvalid), never read as a storage failure: the API answers 400 and
// the admin page falls back to the first page on errors.Is alone.
func testListBadCursor(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	now := clock.Now()
	for _, id := range []string{"inv-1", "inv-2"} {
		inv := invitation(id, now)
		inv.ExternalID = "crm-" + id
		_, err := s.CreateInvitation(ctx, inv)
		must(t, "create "+id, err)
	}
	must(t, "append audit", s.AppendAudit(ctx, &grants.AuditRecord{ID: "a-1", At: now, Action: "invitation.created", Actor: "test", Target: "inv-1"}))
	b64 := base64.RawURLEncoding.EncodeToString
	for _, cursor := range []string{
		"!!not a cursor!!", "!!", "%%%", "eA==", // not unpadded base64url
		b64([]byte("x")), b64([]byte("NaN|inv-1")), b64([]byte("Inf|x")), // decodes, but to no position
	} {
		for _, c := range []struct {
			name string
			list func() error
		}{
			{"ListInvitations", func() error {
				_, _, err := s.ListInvitations(ctx, grants.InvitationFilter{Cursor: cursor}, now)
				return err
			}},
			{"ListInvitations(email)", func() error {
				_, _, err := s.ListInvitations(ctx, grants.InvitationFilter{Email: "inv-1@example.com", Cursor: cursor}, now)
				return err
			}},
			{"ListInvitations(external_id)", func() error {
				_, _, err := s.ListInvitations(ctx, grants.InvitationFilter{ExternalID: "crm-inv-1", Cursor: cursor}, now)
				return err
			}},
			{"ListAudit", func() error {
				_, _, err := s.ListAudit(ctx, grants.AuditFilter{Cursor: cursor})
				return err
			}},
		} {
			err := noPanic(t, c.name, c.list)
			if !errors.Is(err, errs.ErrBadCursor) || !errors.Is(err, errs.ErrInvalid) {
				t.Errorf("%s(cursor %q) = %v, want errs.ErrBadCursor and errs.ErrInvalid", c.name, cursor, err)
			}
		}
	}
	// Not a cursor problem: a valid listing is no ErrBadCursor.
	_, next, err := s.ListInvitations(ctx, grants.InvitationFilter{Limit: 1}, now)
	must(t, "list first page", err)
	if _, _, err := s.ListInvitations(ctx, grants.InvitationFilter{Limit: 1, Cursor: next}, now); err != nil {
		t.Errorf("ListInvitations with the cursor it issued: %v", err)
	}
}

func testInvitationListPagination(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	now := clock.Now()
	all := map[string]*grants.Invitation{}
	for i := range 23 {
		// Pairs share a creation time, so the order must break ties itself.
		inv := invitation(fmt.Sprintf("inv-%02d", i), now.Add(time.Duration(i/2)*time.Second))
		if i%3 == 0 {
			inv.Email = "Page@Example.com"
		}
		if i%2 == 1 {
			inv.ClientID = "odd"
		}
		_, err := s.CreateInvitation(ctx, inv)
		must(t, "create "+inv.ID, err)
		all[inv.ID] = inv
	}
	walk := func(name string, f grants.InvitationFilter, wantPages []int) []string {
		t.Helper()
		var seen []string
		var sizes []int
		for page := 0; ; page++ {
			if page > len(wantPages) {
				t.Fatalf("%s: more than %d pages", name, len(wantPages))
			}
			got, next, err := s.ListInvitations(ctx, f, now)
			must(t, name, err)
			sizes = append(sizes, len(got))
			for _, inv := range got {
				if slices.Contains(seen, inv.ID) {
					t.Fatalf("%s: %s listed twice", name, inv.ID)
				}
				if len(seen) > 0 {
					prev := all[seen[len(seen)-1]]
					if inv.CreatedAt.After(prev.CreatedAt) {
						t.Fatalf("%s: %s (%v) listed after newer %s (%v)", name, inv.ID, inv.CreatedAt, prev.ID, prev.CreatedAt)
					}
				}
				seen = append(seen, inv.ID)
			}
			if next == "" {
				break
			}
			f.Cursor = next
		}
		if !slices.Equal(sizes, wantPages) {
			t.Fatalf("%s: page sizes %v, want %v", name, sizes, wantPages)
		}
		return seen
	}
	seen := walk("all", grants.InvitationFilter{Limit: 10}, []int{10, 10, 3})
	if len(seen) != 23 || seen[0] != "inv-22" {
		t.Fatalf("all: listed %v", seen)
	}
	seen = walk("by email", grants.InvitationFilter{Email: "page@example.com", Limit: 3}, []int{3, 3, 2})
	for _, id := range seen {
		if all[id].Email != "Page@Example.com" {
			t.Fatalf("by email listed %s", id)
		}
	}
	seen = walk("by client", grants.InvitationFilter{ClientID: "odd", Limit: 5}, []int{5, 5, 1})
	for _, id := range seen {
		if all[id].ClientID != "odd" {
			t.Fatalf("by client listed %s", id)
		}
	}
	walk("default limit", grants.InvitationFilter{}, []int{23})
}

func testAudit(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	base := clock.Now()
	for i := range 25 {
		action := "invitation.created"
		if i%5 == 0 {
			action = "invitation.revoked"
		}
		rec := &grants.AuditRecord{ID: fmt.Sprintf("a%02d", i), At: base.Add(time.Duration(i) * time.Second), Action: action,
			Actor: "funnel", Target: fmt.Sprintf("inv-%d", i), Detail: map[string]string{"n": fmt.Sprint(i)}}
		must(t, "append", s.AppendAudit(ctx, rec))
	}
	var seen []string
	cursor := ""
	for page := 0; ; page++ {
		recs, next, err := s.ListAudit(ctx, grants.AuditFilter{Limit: 10, Cursor: cursor})
		must(t, "list", err)
		for _, r := range recs {
			seen = append(seen, r.ID)
		}
		if next == "" {
			break
		}
		cursor = next
		if page > 5 {
			t.Fatal("pagination does not end")
		}
	}
	if len(seen) != 25 || seen[0] != "a24" || seen[24] != "a00" {
		t.Fatalf("audit pages = %v, want a24…a00 once each", seen)
	}
	revoked, _, err := s.ListAudit(ctx, grants.AuditFilter{Action: "invitation.revoked"})
	must(t, "filter action", err)
	if len(revoked) != 5 {
		t.Fatalf("%d revoked records, want 5", len(revoked))
	}
	one, _, err := s.ListAudit(ctx, grants.AuditFilter{Target: "inv-7"})
	must(t, "filter target", err)
	if len(one) != 1 || one[0].Detail["n"] != "7" {
		t.Fatalf("target filter: %+v", one)
	}
	window, _, err := s.ListAudit(ctx, grants.AuditFilter{Since: base.Add(10 * time.Second), Until: base.Add(12 * time.Second)})
	must(t, "time window", err)
	if len(window) != 3 {
		t.Fatalf("time window: %d records, want 3", len(window))
	}
	if err := s.AppendAudit(ctx, &grants.AuditRecord{}); err == nil {
		t.Fatal("an empty audit record was accepted")
	}
	if _, _, err := s.ListAudit(ctx, grants.AuditFilter{Cursor: "!!"}); err == nil {
		t.Fatal("a garbage cursor was accepted")
	}
}
