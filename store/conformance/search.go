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

// searchFixture stores invitations for the prefix-search tests, created a
// minute apart in this order, and returns them by ID.
func searchFixture(t *testing.T, ctx context.Context, s grants.Store, now time.Time) map[string]*grants.Invitation {
	t.Helper()
	rows := []struct{ id, email, ext string }{
		{"g1", "grace@example.com", "crm-10"},
		{"g2", "Grace.Hopper@navy.example", "CRM-11"},
		{"g3", "graham@example.com", "crm-2"},
		{"g4", "greta@example.com", ""},
		{"a1", "ada@grace.example", "erp-1"},
		{"g5", "GRU@example.com", "crm-12"},
	}
	out := map[string]*grants.Invitation{}
	for i, r := range rows {
		inv := invitation(r.id, now.Add(time.Duration(i-len(rows))*time.Minute))
		inv.Email, inv.ExternalID = r.email, r.ext
		_, err := s.CreateInvitation(ctx, inv)
		must(t, "create "+r.id, err)
		out[r.id] = inv
	}
	return out
}

// listAll follows the cursors to the end and returns every ID in order.
func listAll(t *testing.T, ctx context.Context, s grants.Store, f grants.InvitationFilter, now time.Time) []string {
	t.Helper()
	var got []string
	for range 100 {
		page, next, err := s.ListInvitations(ctx, f, now)
		must(t, fmt.Sprintf("list %+v", f), err)
		if f.Limit > 0 && len(page) > f.Limit {
			t.Fatalf("list %+v: %d results on a page of %d", f, len(page), f.Limit)
		}
		got = append(got, ids(page)...)
		if next == "" {
			return got
		}
		f.Cursor = next
	}
	t.Fatalf("list %+v: no end after 100 pages", f)
	return nil
}

func testInvitationSearch(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	now := clock.Now()
	invs := searchFixture(t, ctx, s, now)
	_, err := s.RevokeInvitation(ctx, "g3", now)
	must(t, "revoke g3", err)
	_, err = s.RevokeInvitation(ctx, "g5", now)
	must(t, "revoke g5", err)
	g1 := invs["g1"].CreatedAt
	for _, c := range []struct {
		name string
		f    grants.InvitationFilter
		want []string
	}{
		// By email, then ID: "grace." sorts before "grace@".
		{"email prefix", grants.InvitationFilter{EmailPrefix: "grace"}, []string{"g2", "g1"}},
		{"email prefix any case", grants.InvitationFilter{EmailPrefix: "GRACE"}, []string{"g2", "g1"}},
		{"email prefix whole address", grants.InvitationFilter{EmailPrefix: "grace@example.com"}, []string{"g1"}},
		{"email prefix, one page at a time", grants.InvitationFilter{EmailPrefix: "gr", Limit: 2}, []string{"g2", "g1", "g3", "g4", "g5"}},
		{"email prefix no match", grants.InvitationFilter{EmailPrefix: "zed"}, nil},
		{"external id prefix", grants.InvitationFilter{ExternalIDPrefix: "crm-1"}, []string{"g1", "g5"}},
		{"external id prefix is case-sensitive", grants.InvitationFilter{ExternalIDPrefix: "CRM"}, []string{"g2"}},
		{"prefix and status", grants.InvitationFilter{EmailPrefix: "gr", Status: grants.StatusRevoked, Limit: 1}, []string{"g3", "g5"}},
		{"prefix and pending", grants.InvitationFilter{EmailPrefix: "gr", Status: grants.StatusPending, Limit: 1}, []string{"g2", "g1", "g4"}},
		{"both prefixes", grants.InvitationFilter{EmailPrefix: "gr", ExternalIDPrefix: "crm-1"}, []string{"g1", "g5"}},
		{"exact email wins", grants.InvitationFilter{Email: "grace@example.com", EmailPrefix: "gr"}, []string{"g1"}},
		{"created since", grants.InvitationFilter{CreatedSince: invs["a1"].CreatedAt}, []string{"g5", "a1"}},
		{"created until", grants.InvitationFilter{CreatedUntil: invs["g3"].CreatedAt, Limit: 1}, []string{"g2", "g1"}},
		{"created window", grants.InvitationFilter{CreatedSince: g1.Add(time.Minute), CreatedUntil: g1.Add(3 * time.Minute)}, []string{"g3", "g2"}},
		{"prefix in window", grants.InvitationFilter{EmailPrefix: "gr", CreatedSince: g1.Add(time.Minute), Limit: 1}, []string{"g2", "g3", "g4", "g5"}},
	} {
		got := listAll(t, ctx, s, c.f, now)
		if !slices.Equal(got, c.want) && !(len(got) == 0 && len(c.want) == 0) {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
}

// A changed email or external ID moves the invitation in the prefix
// indexes: the old prefix no longer finds it.
func testInvitationSearchUpdate(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	now := clock.Now()
	searchFixture(t, ctx, s, now)
	_, err := s.UpdateInvitation(ctx, "g1", func(inv *grants.Invitation) error {
		inv.Email, inv.ExternalID = "pseudonym-1@invalid.example", ""
		return nil
	})
	must(t, "update g1", err)
	for _, c := range []struct {
		f    grants.InvitationFilter
		want []string
	}{
		{grants.InvitationFilter{EmailPrefix: "grace"}, []string{"g2"}},
		{grants.InvitationFilter{EmailPrefix: "pseudo"}, []string{"g1"}},
		{grants.InvitationFilter{ExternalIDPrefix: "crm-1"}, []string{"g5"}},
	} {
		if got := listAll(t, ctx, s, c.f, now); !slices.Equal(got, c.want) {
			t.Errorf("list %+v after the update: got %v, want %v", c.f, got, c.want)
		}
	}
}

// A prefix listing refuses cursors it did not issue, including one issued
// for another prefix, with errs.ErrBadCursor.
func testInvitationSearchBadCursor(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	now := clock.Now()
	searchFixture(t, ctx, s, now)
	_, other, err := s.ListInvitations(ctx, grants.InvitationFilter{ExternalIDPrefix: "crm", Limit: 1}, now)
	must(t, "list crm", err)
	_, timeCursor, err := s.ListInvitations(ctx, grants.InvitationFilter{Limit: 1}, now)
	must(t, "list all", err)
	b64 := base64.RawURLEncoding.EncodeToString
	for _, cursor := range []string{"!!not a cursor!!", "eA==", b64([]byte("x")), b64([]byte("grace")), other, timeCursor} {
		_, _, err := s.ListInvitations(ctx, grants.InvitationFilter{EmailPrefix: "grace", Cursor: cursor}, now)
		if !errors.Is(err, errs.ErrBadCursor) || !errors.Is(err, errs.ErrInvalid) {
			t.Errorf("search with cursor %q = %v, want errs.ErrBadCursor and errs.ErrInvalid", cursor, err)
		}
	}
}

// RunSearchBackfill checks that invitations stored before the prefix
// indexes existed are found. legacy stores invs as the backend did before
// (or as an upgrade finds them) and returns the store an upgraded usher
// opens on that state.
func RunSearchBackfill(t *testing.T, legacy func(t *testing.T, clock *Clock, invs []*grants.Invitation) grants.Store) {
	clock := NewClock(start())
	now := clock.Now()
	var invs []*grants.Invitation
	for i, email := range []string{"grace@example.com", "Grace.Hopper@navy.example", "ada@example.com"} {
		inv := invitation(fmt.Sprintf("old-%d", i), now.Add(time.Duration(i)*time.Second))
		inv.Email, inv.ExternalID = email, fmt.Sprintf("crm-%d", i)
		invs = append(invs, inv)
	}
	s := legacy(t, clock, invs)
	ctx := t.Context()
	if got := listAll(t, ctx, s, grants.InvitationFilter{EmailPrefix: "grace", Limit: 1}, now); !slices.Equal(got, []string{"old-1", "old-0"}) {
		t.Errorf("email prefix over invitations from before the index: got %v, want [old-1 old-0]", got)
	}
	if got := listAll(t, ctx, s, grants.InvitationFilter{ExternalIDPrefix: "crm-"}, now); !slices.Equal(got, []string{"old-0", "old-1", "old-2"}) {
		t.Errorf("external id prefix over invitations from before the index: got %v, want [old-0 old-1 old-2]", got)
	}
	// Later writes keep the index current.
	inv := invitation("new-1", now.Add(time.Minute))
	inv.Email = "grace.new@example.com"
	_, err := s.CreateInvitation(ctx, inv)
	must(t, "create after the backfill", err)
	if got := listAll(t, ctx, s, grants.InvitationFilter{EmailPrefix: "grace"}, now); !slices.Equal(got, []string{"old-1", "new-1", "old-0"}) {
		t.Errorf("email prefix after a new invitation: got %v, want [old-1 new-1 old-0]", got)
	}
}
