package redis_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/sessions"
	"github.com/usher-oidc/usher/store"
	"github.com/usher-oidc/usher/store/conformance"
	redisstore "github.com/usher-oidc/usher/store/redis"
)

// TestRecordFormatRollout is a rollout with mixed replicas: one replica
// writes invitations in one record format, another (configured for the
// other) reads, lists, updates, redeems, revokes and re-tokens them, and the
// first reads the result back; the same for users, identities and grants
// (checkUsersRollout). Both directions: v1 → v2, v2 → v3, v3 → v4 and
// v4 → v5 are the upgrades, v2 → v1, v3 → v2, v4 → v3 and v5 → v4 a
// replica not switched yet, or an operator going back. The full invitation listing across
// v3 → v4 → v3 is TestInvitationListingRollout's.
func TestRecordFormatRollout(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ writer, reader string }{
		{redisstore.RecordFormatV1, redisstore.RecordFormatV2},
		{redisstore.RecordFormatV2, redisstore.RecordFormatV1},
		{redisstore.RecordFormatV2, redisstore.RecordFormatV3},
		{redisstore.RecordFormatV3, redisstore.RecordFormatV2},
		{redisstore.RecordFormatV3, redisstore.RecordFormatV4},
		{redisstore.RecordFormatV4, redisstore.RecordFormatV3},
		{redisstore.RecordFormatV4, redisstore.RecordFormatV5},
		{redisstore.RecordFormatV5, redisstore.RecordFormatV4},
	} {
		t.Run(tc.writer+" then "+tc.reader, func(t *testing.T) {
			t.Parallel()
			checkRollout(t, tc.writer, tc.reader)
		})
		t.Run(tc.writer+" then "+tc.reader+"/sessions", func(t *testing.T) {
			t.Parallel()
			checkSessionsRollout(t, tc.writer, tc.reader)
		})
		t.Run(tc.writer+" then "+tc.reader+"/users", func(t *testing.T) {
			t.Parallel()
			checkUsersRollout(t, tc.writer, tc.reader)
		})
	}
}

// replicas opens two stores on one prefix, writing the two formats.
func replicas(t *testing.T, writerFormat, readerFormat string) (*redisstore.Store, *redisstore.Store) {
	prefix := uniquePrefix()
	open := func(format string) *redisstore.Store {
		s := redisstore.New(redis.NewClient(&redis.Options{Addr: standalone.addr()}), redisstore.Options{Prefix: prefix, RecordFormat: format})
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	return open(writerFormat), open(readerFormat)
}

func checkRollout(t *testing.T, writerFormat, readerFormat string) {
	ctx := ctxT(t)
	writer, reader := replicas(t, writerFormat, readerFormat)
	now := time.Now().UTC()
	invs := map[string]*grants.Invitation{}
	for _, name := range []string{"get", "redeem", "revoke", "retoken", "update"} {
		inv := pendingInvitation("inv_"+name, now)
		inv.ExternalID = "crm-" + name
		if _, err := writer.CreateInvitation(ctx, inv); err != nil {
			t.Fatalf("create %s: %v", name, err)
		}
		invs[name] = inv
		if got := storedFormat(t, writer, inv.ID); got != payloadFormat(writerFormat) {
			t.Fatalf("%s written in %s by a %s store", name, got, writerFormat)
		}
	}

	got, err := reader.GetInvitation(ctx, "inv_get")
	must(t, "get", err)
	want := *invs["get"]
	if !equalInvitations(got, &want) {
		t.Errorf("reader got\n%+v\nwant\n%+v", got, &want)
	}
	byHash, err := reader.GetInvitationByTokenHash(ctx, want.TokenHash)
	must(t, "get by token hash", err)
	if byHash.ID != want.ID || !byHash.CreatedAt.Equal(want.CreatedAt) {
		t.Errorf("by token hash: %+v", byHash)
	}
	list, _, err := reader.ListInvitations(ctx, grants.InvitationFilter{ExternalID: "crm-get"}, now)
	must(t, "list", err)
	if len(list) != 1 || list[0].ID != "inv_get" || list[0].Email != want.Email {
		t.Errorf("list by external_id: %+v", list)
	}

	checkListings(t, reader, now, want.Email, []string{"inv_update", "inv_revoke", "inv_retoken", "inv_redeem", "inv_get"})
	dup := pendingInvitation("inv_dup", now)
	dup.TokenHash = want.TokenHash
	if _, err := reader.CreateInvitation(ctx, dup); !errors.Is(err, grants.ErrConflict) {
		t.Errorf("a second invitation with the other replica's token hash: %v, want ErrConflict", err)
	}

	redeemed, g, err := reader.RedeemInvitation(ctx, invs["redeem"].TokenHash, grants.Redemption{UserID: "usr_1", Identity: "iss|sub", At: now.Add(time.Minute)})
	must(t, "redeem", err)
	if redeemed.Status != grants.StatusRedeemed || !slices.Contains(g.Roles, "member") || g.Claims["org"] != "acme" {
		t.Errorf("redeemed %+v, grant %+v", redeemed, g)
	}
	if _, _, err := writer.RedeemInvitation(ctx, invs["redeem"].TokenHash, grants.Redemption{UserID: "usr_2", At: now.Add(time.Minute)}); !errors.Is(err, grants.ErrInvitationRedeemed) {
		t.Errorf("second redemption, by the other replica: %v, want ErrInvitationRedeemed", err)
	}
	_, err = reader.RevokeInvitation(ctx, "inv_revoke", now.Add(time.Minute))
	must(t, "revoke", err)
	newHash := strings.Repeat("ab", 32)
	_, err = reader.ReplaceInvitationToken(ctx, "inv_retoken", newHash, now.Add(48*time.Hour), now.Add(time.Minute))
	must(t, "replace token", err)
	_, err = reader.UpdateInvitation(ctx, "inv_update", func(inv *grants.Invitation) error {
		inv.Roles = append(inv.Roles, "admin")
		inv.Email = "Moved@example.com"
		return nil
	})
	must(t, "update", err)
	for email, want := range map[string][]string{"moved@example.com": {"inv_update"}, invs["update"].Email: nil} {
		list, _, err := writer.ListInvitations(ctx, grants.InvitationFilter{Email: email}, now)
		must(t, "list by email after the update", err)
		if !slices.Equal(ids(list), want) {
			t.Errorf("by email %s after the other replica changed it: %v, want %v", email, ids(list), want)
		}
	}
	for _, id := range []string{"inv_redeem", "inv_revoke", "inv_retoken", "inv_update"} {
		if got := storedFormat(t, reader, id); got != payloadFormat(readerFormat) {
			t.Errorf("%s rewritten in %s by a %s store", id, got, readerFormat)
		}
	}

	// The first replica reads what the second wrote.
	for id, want := range map[string]grants.Status{"inv_redeem": grants.StatusRedeemed, "inv_revoke": grants.StatusRevoked} {
		inv, err := writer.GetInvitation(ctx, id)
		must(t, "get "+id, err)
		if inv.Status != want {
			t.Errorf("%s: status %s, want %s", id, inv.Status, want)
		}
	}
	red, err := writer.GetInvitation(ctx, "inv_redeem")
	must(t, "get redeemed", err)
	if red.RedeemedBy != "usr_1" || red.RedeemedAt == nil || !red.RedeemedAt.Equal(now.Add(time.Minute)) {
		t.Errorf("redeemed invitation read back: by %q at %v", red.RedeemedBy, red.RedeemedAt)
	}
	if inv, err := writer.GetInvitationByTokenHash(ctx, newHash); err != nil || inv.ID != "inv_retoken" || !inv.ExpiresAt.Equal(now.Add(48*time.Hour)) {
		t.Errorf("by the new token hash: %+v, %v", inv, err)
	}
	if _, err := writer.GetInvitationByTokenHash(ctx, invs["retoken"].TokenHash); !errors.Is(err, grants.ErrNotFound) {
		t.Errorf("by the replaced token hash: %v, want ErrNotFound", err)
	}
	upd, err := writer.GetInvitation(ctx, "inv_update")
	must(t, "get updated", err)
	if !slices.Equal(upd.Roles, []string{"member", "admin"}) {
		t.Errorf("updated roles %v", upd.Roles)
	}
}

// checkListings: s lists by email, by client and by email prefix what the
// other replica created (all, newest first: ties by ID descending).
func checkListings(t *testing.T, s *redisstore.Store, now time.Time, email string, all []string) {
	t.Helper()
	for _, c := range []struct {
		name string
		f    grants.InvitationFilter
		want []string
	}{
		{"email", grants.InvitationFilter{Email: strings.ToUpper(email)}, []string{"inv_get"}},
		{"client", grants.InvitationFilter{ClientID: "spa"}, all},
		{"client, pages of 2", grants.InvitationFilter{ClientID: "spa", Limit: 2}, all},
		{"email prefix", grants.InvitationFilter{EmailPrefix: "inv_"}, []string{"inv_get", "inv_redeem", "inv_retoken", "inv_revoke", "inv_update"}},
	} {
		var got []string
		f := c.f
		for range len(all) + 1 {
			list, next, err := s.ListInvitations(ctxT(t), f, now)
			must(t, "list by "+c.name, err)
			got = append(got, ids(list)...)
			if f.Cursor = next; next == "" {
				break
			}
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("list by %s: %v, want %v", c.name, got, c.want)
		}
	}
}

// checkSessionsRollout: refresh tokens rotate and browser sessions change
// hands between replicas writing different formats, and export reads both.
func checkSessionsRollout(t *testing.T, writerFormat, readerFormat string) {
	ctx := ctxT(t)
	writer, reader := replicas(t, writerFormat, readerFormat)
	now := time.Now().UTC()
	first := refresh(strings.Repeat("1", 64), "fam_1", now)
	must(t, "create refresh token", writer.CreateRefreshToken(ctx, first))
	checkPayloadFormat(t, writer, "{f:fam_1}:t:"+first.Hash, 3, writerFormat)
	// Versions before v3 find a token through its rth: lookup: written
	// until the store writes v3.
	n, err := writer.Client().Exists(ctx, writer.Prefix()+"rth:"+first.Hash).Result()
	must(t, "exists rth", err)
	if want := !fromV3(writerFormat); (n == 1) != want {
		t.Errorf("a %s store wrote the rth: lookup: %v, want %v", writerFormat, n == 1, want)
	}
	got, err := reader.GetRefreshToken(ctx, "fam_1", first.Hash)
	must(t, "get refresh token", err)
	if got.Hash != first.Hash || got.FamilyID != "fam_1" || got.Subject != first.Subject || !slices.Equal(got.Scopes, first.Scopes) ||
		!got.ExpiresAt.Equal(first.ExpiresAt) || !got.FamilyExpiresAt.Equal(first.FamilyExpiresAt) || !got.AuthTime.Equal(first.AuthTime) {
		t.Errorf("reader got %+v\nwant %+v", got, first)
	}
	second := refresh(strings.Repeat("2", 64), "fam_1", now.Add(time.Minute))
	must(t, "rotate on the reader", reader.RotateRefreshToken(ctx, first.Hash, second))
	checkPayloadFormat(t, writer, "{f:fam_1}:t:"+second.Hash, 3, readerFormat)
	if got, err := writer.GetRefreshToken(ctx, "fam_1", second.Hash); err != nil || got.Subject != second.Subject {
		t.Errorf("writer reads the successor: %+v, %v", got, err)
	}
	// The rotation script rewrote the first token's r field around its
	// payload: the payload must come through intact.
	if got, err := writer.GetRefreshToken(ctx, "fam_1", first.Hash); err != nil || got.RotatedAt == nil || got.Subject != first.Subject ||
		!slices.Equal(got.AMR, first.AMR) || !got.FamilyExpiresAt.Equal(first.FamilyExpiresAt) {
		t.Errorf("the rotated token read back: %+v, %v", got, err)
	}
	third := refresh(strings.Repeat("3", 64), "fam_1", now.Add(2*time.Minute))
	if err := writer.RotateRefreshToken(ctx, first.Hash, third); !errors.Is(err, sessions.ErrRefreshReused) {
		t.Errorf("rotating the first token again, on the writer: %v, want ErrRefreshReused", err)
	}

	bs := &sessions.BrowserSession{ID: "bs_1", Values: map[string]string{"user": "usr_1"}, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	must(t, "save session", writer.SaveBrowserSession(ctx, bs))
	checkPayloadFormat(t, writer, "bs:bs_1", 0, writerFormat)
	gotBS, err := reader.GetBrowserSession(ctx, "bs_1")
	must(t, "get session", err)
	if gotBS.ID != "bs_1" || gotBS.Values["user"] != "usr_1" || !gotBS.ExpiresAt.Equal(bs.ExpiresAt) {
		t.Errorf("reader got session %+v", gotBS)
	}
	gotBS.Values["user"] = "usr_2"
	must(t, "save session on the reader", reader.SaveBrowserSession(ctx, gotBS))
	checkPayloadFormat(t, writer, "bs:bs_1", 0, readerFormat)
	if got, err := writer.GetBrowserSession(ctx, "bs_1"); err != nil || got.Values["user"] != "usr_2" {
		t.Errorf("writer reads the session back: %+v, %v", got, err)
	}
	must(t, "save a second session", writer.SaveBrowserSession(ctx, &sessions.BrowserSession{ID: "bs:2{x}", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}))

	// Export reads both formats: a store holding both exports every record
	// with its ID, hash and family.
	var hashes, ids []string
	must(t, "export refresh tokens", writer.Export(ctx, store.RefreshTokens, func(rec json.RawMessage) error {
		var rt sessions.RefreshToken
		err := json.Unmarshal(rec, &rt)
		if rt.FamilyID != "fam_1" {
			t.Errorf("exported token %s of family %q", rt.Hash, rt.FamilyID)
		}
		hashes = append(hashes, rt.Hash)
		return err
	}))
	must(t, "export browser sessions", writer.Export(ctx, store.BrowserSessions, func(rec json.RawMessage) error {
		var bs sessions.BrowserSession
		err := json.Unmarshal(rec, &bs)
		ids = append(ids, bs.ID)
		return err
	}))
	slices.Sort(hashes)
	slices.Sort(ids)
	if !slices.Equal(hashes, []string{first.Hash, second.Hash}) || !slices.Equal(ids, []string{"bs:2{x}", "bs_1"}) {
		t.Errorf("exported tokens %v, sessions %v", hashes, ids)
	}
}

// checkPayloadFormat checks the format of the record at key (after the
// store's prefix), whose payload follows `fields` '|'-separated fields.
func checkPayloadFormat(t *testing.T, s *redisstore.Store, key string, fields int, want string) {
	t.Helper()
	v, err := s.Client().Get(ctxT(t), s.Prefix()+key).Result()
	must(t, "get "+key, err)
	parts := strings.SplitN(v, "|", fields+1)
	got := redisstore.RecordFormatV1
	if strings.HasPrefix(parts[len(parts)-1], "\x02") {
		got = redisstore.RecordFormatV2
	}
	if got != payloadFormat(want) {
		t.Errorf("%s stored in %s, want %s", key, got, payloadFormat(want))
	}
}

// fromV3 reports whether format is v3 or a later one, which writes all v3
// writes.
func fromV3(format string) bool {
	return slices.Index(redisstore.RecordFormats, format) >= slices.Index(redisstore.RecordFormats, redisstore.RecordFormatV3)
}

// fromV4 reports whether format is v4 or a later one.
func fromV4(format string) bool {
	return slices.Index(redisstore.RecordFormats, format) >= slices.Index(redisstore.RecordFormats, redisstore.RecordFormatV4)
}

// payloadFormat is the payload a store writing format writes: v3 and later
// write v2's.
func payloadFormat(format string) string {
	if fromV3(format) {
		return redisstore.RecordFormatV2
	}
	return format
}

// storedFormat is the record format of the invitation as it is in Redis.
func storedFormat(t *testing.T, s *redisstore.Store, id string) string {
	t.Helper()
	v, err := s.Client().Get(ctxT(t), s.Prefix()+"{i:"+id+"}").Result()
	must(t, "get record", err)
	parts := strings.SplitN(v, "|", 3)
	switch {
	case len(parts) == 3 && strings.HasPrefix(parts[2], "{"):
		return redisstore.RecordFormatV1
	case len(parts) == 3 && strings.HasPrefix(parts[2], "\x02"):
		return redisstore.RecordFormatV2
	}
	t.Fatalf("record %q: neither format", v)
	return ""
}

// equalInvitations compares what both formats keep (times as instants).
func equalInvitations(a, b *grants.Invitation) bool {
	return fmt.Sprint(a.ID, a.TokenHash, a.Email, a.Roles, a.Claims, a.Metadata, a.ExternalID, a.ClientID, a.EmailMatch,
		a.Inviter, a.Status, a.SendEmail, a.EmailStatus, len(a.Events)) ==
		fmt.Sprint(b.ID, b.TokenHash, b.Email, b.Roles, b.Claims, b.Metadata, b.ExternalID, b.ClientID, b.EmailMatch,
			b.Inviter, b.Status, b.SendEmail, b.EmailStatus, len(b.Events)) &&
		a.CreatedAt.Equal(b.CreatedAt) && a.ExpiresAt.Equal(b.ExpiresAt) && a.Events[0].At.Equal(b.Events[0].At)
}

// TestConformanceRecordFormats runs both suites on stores writing v2, v3,
// v4 and v5, and checks that they did write compact records (a fallback to v1
// for every record would make the run prove nothing), and login states
// from v4 on only (the suite skips its login-state cases below, where the
// store refuses them).
func TestConformanceRecordFormats(t *testing.T) {
	t.Parallel()
	for _, format := range []string{redisstore.RecordFormatV2, redisstore.RecordFormatV3, redisstore.RecordFormatV4, redisstore.RecordFormatV5} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			var v1, v2, userHashes, userRecords, loginStates atomic.Int64
			open := func(t *testing.T, clock *conformance.Clock) *redisstore.Store {
				c := redis.NewClient(&redis.Options{Addr: standalone.addr()})
				s := redisstore.New(c, redisstore.Options{Now: clock.Now, Prefix: uniquePrefix(), RecordFormat: format})
				t.Cleanup(func() { _ = s.Close() })
				t.Cleanup(func() { countFormats(t, s, &v1, &v2); countUserForms(t, s, &userHashes, &userRecords) }) // before Close
				return s
			}
			t.Run("Grants", func(t *testing.T) {
				conformance.RunGrants(t, func(t *testing.T, clock *conformance.Clock) grants.Store { return open(t, clock) })
			})
			t.Run("Sessions", func(t *testing.T) {
				conformance.RunSessions(t, func(t *testing.T, clock *conformance.Clock) sessions.Store {
					return savesCounted{open(t, clock), &loginStates}
				})
			})
			t.Logf("login states saved by the suite: %d", loginStates.Load())
			if v4 := fromV4(format); (loginStates.Load() > 0) != v4 {
				t.Errorf("a %s store saved %d login states: want some at v4, none below", format, loginStates.Load())
			}
			t.Logf("invitation records left by the suites: %d compact, %d in v1", v2.Load(), v1.Load())
			if v2.Load() == 0 || v1.Load() > v2.Load()/4 {
				t.Errorf("the suites left %d invitations compact and %d in v1: want nearly all compact", v2.Load(), v1.Load())
			}
			// Users are compact from v3 on: versions that already wrote v2
			// read users only as hashes.
			t.Logf("users left by the suites: %d compact records, %d hashes", userRecords.Load(), userHashes.Load())
			if format == redisstore.RecordFormatV2 && userRecords.Load() > 0 {
				t.Errorf("a v2 store left %d users as compact records: older v2 replicas cannot read them", userRecords.Load())
			}
			if format != redisstore.RecordFormatV2 && (userRecords.Load() == 0 || userHashes.Load() > userRecords.Load()/4) {
				t.Errorf("the suites left %d users as compact records and %d as hashes: want nearly all records", userRecords.Load(), userHashes.Load())
			}
		})
	}
}

// savesCounted counts the login states a store saved.
type savesCounted struct {
	*redisstore.Store
	saved *atomic.Int64
}

func (s savesCounted) SaveLoginState(ctx context.Context, arID, key string, ls *sessions.LoginState) error {
	err := s.Store.SaveLoginState(ctx, arID, key, ls)
	if err == nil {
		s.saved.Add(1)
	}
	return err
}

// countUserForms counts s's users by form: a hash (v1, v2) or a compact record (v3).
func countUserForms(t *testing.T, s *redisstore.Store, hashes, records *atomic.Int64) {
	ctx := context.Background()
	iter := s.Client().Scan(ctx, 0, s.Prefix()+"u:*", 100).Iterator()
	for iter.Next(ctx) {
		typ, err := s.Client().Type(ctx, iter.Val()).Result()
		must(t, "type", err)
		if typ == "string" {
			records.Add(1)
		} else {
			hashes.Add(1)
		}
	}
	must(t, "scan", iter.Err())
}

// countFormats counts s's invitation records by format.
func countFormats(t *testing.T, s *redisstore.Store, v1, v2 *atomic.Int64) {
	ctx := context.Background()
	iter := s.Client().Scan(ctx, 0, s.Prefix()+"{i:*", 100).Iterator()
	for iter.Next(ctx) {
		id := strings.TrimSuffix(strings.TrimPrefix(iter.Val(), s.Prefix()+"{i:"), "}")
		if storedFormat(t, s, id) == redisstore.RecordFormatV2 {
			v2.Add(1)
		} else {
			v1.Add(1)
		}
	}
	must(t, "scan", iter.Err())
}
