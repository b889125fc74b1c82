package redis

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
)

// --- grants ---
//
//	{prefix}{g:<user>}    hash: 'c:'<claim> → raw JSON value, 'u' → updated_at,
//	                      'r' → the roles as a JSON list (record format v2)
//	{prefix}{g:<user>}:r  list of roles, in the order first granted (v1)
//	{prefix}{g:<user>}:i  list of redeemed invitation IDs (the merge's idempotency record)
//	{prefix}{g:<user>}:p  hash invitation ID → unix ms: redemptions whose merge may not have run

func (s *Store) grantKeys(userID string) []string {
	g := s.tagged("g", userID)
	return []string{g, g + ":r", g + ":i", g + ":p"}
}

// grantRead are grantOp's arguments that read a grant, changing nothing.
var grantRead = []any{"get", "", "", 0}

// grantArgs are grantApply's arguments for op args[0] with the events of
// lines (see grantApply): the events go second.
func grantArgs(lines string, args ...any) []any {
	return append([]any{args[0], lines}, args[1:]...)
}

// grantOp runs grantApply and decodes the grant and the pending merges.
func (s *Store) grantOp(ctx context.Context, userID string, args ...any) (*grants.Grant, map[string]string, error) {
	return s.grantOpRecording(ctx, userID, nil, args...)
}

// grantOpRecording is grantOp with events stored with the change (if the op
// changes the grant); the outbox index entry is made due first, as every
// index entry is added before the record that needs it.
func (s *Store) grantOpRecording(ctx context.Context, userID string, events []grants.OutboxEvent, args ...any) (*grants.Grant, map[string]string, error) {
	var lines strings.Builder
	for _, e := range events {
		raw, err := json.Marshal(e)
		if err != nil {
			return nil, nil, err
		}
		if e.ID == "" || strings.ContainsAny(e.ID, "\t\n") {
			return nil, nil, fmt.Errorf("event id %q: %w", e.ID, ErrInvalid)
		}
		lines.WriteString(e.ID + "\t" + string(raw) + "\n") // JSON holds no raw newline
	}
	if len(events) > 0 {
		if err := s.rdb.ZAdd(ctx, s.outboxKey(), redis.Z{Score: 0, Member: grants.UserOutboxID(userID)}).Err(); err != nil {
			return nil, nil, err
		}
	}
	full := grantArgs(lines.String(), args...)
	if s.compactUsers() {
		full[0] = fmt.Sprint(full[0], "/2") // a grant without roles keeps them in its hash
	}
	if len(events) > 0 {
		// Due again after the write, as for invitations (markOutboxAgain): a
		// runner that claimed the entry between the mark above and the
		// script read no events and dropped it.
		defer func() {
			if err := s.rdb.ZAdd(context.WithoutCancel(ctx), s.outboxKey(), redis.Z{Score: 0, Member: grants.UserOutboxID(userID)}).Err(); err != nil {
				s.log.Error("redisstore: marking a grant's events due after its write", "user_id", userID, "err", err)
			}
		}()
	}
	res, err := s.runScript(ctx, grantApply, s.grantKeys(userID), full...)
	if err != nil {
		return nil, nil, err
	}
	return grantFromReply(userID, res)
}

// grantFromReply decodes grantApply's reply: the grant and its pending
// merges (invitation ID → entry).
func grantFromReply(userID string, res []any) (*grants.Grant, map[string]string, error) {
	var err error
	if len(res) != 4 {
		return nil, nil, fmt.Errorf("unexpected grant reply %v", res)
	}
	h, _ := res[0].([]any)
	fields := pairs(h)
	g := &grants.Grant{UserID: userID, Roles: strs(res[1]), Claims: map[string]any{}, Invitations: strs(res[2])}
	for k, v := range fields {
		switch {
		case k == "u":
			if g.UpdatedAt, err = parseTime(v); err != nil {
				return nil, nil, fmt.Errorf("decode grant updated_at: %w", err)
			}
		case k == "so":
			t, err := parseTime(v)
			if err != nil {
				return nil, nil, fmt.Errorf("decode grant signed_out_at: %w", err)
			}
			g.SignedOutAt = &t
		case strings.HasPrefix(k, "c:"):
			var x any
			if err := json.Unmarshal([]byte(v), &x); err != nil {
				return nil, nil, fmt.Errorf("decode claim %s: %w", k[2:], err)
			}
			g.Claims[k[2:]] = x
		case strings.HasPrefix(k, "o:"):
			var e grants.OutboxEvent
			if err := json.Unmarshal([]byte(v), &e); err != nil {
				return nil, nil, fmt.Errorf("decode grant event %s: %w", k[2:], err)
			}
			g.Outbox = append(g.Outbox, e)
		}
	}
	// A hash has no order: events go in the order they happened.
	slices.SortStableFunc(g.Outbox, func(a, b grants.OutboxEvent) int {
		if c := a.At.Compare(b.At); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	p, _ := res[3].([]any)
	return g, pairs(p), nil
}

// mergeArgs are grantApply's arguments for merging inv into a grant: its
// roles, then the claims the redemption offers (grants.RedemptionClaims);
// the script adds a claim only when the grant does not hold it (HSETNX),
// which is grants.Grant.MergeRedemption's rule.
func mergeArgs(inv *grants.Invitation, extra map[string]any, at time.Time) ([]any, error) {
	args := []any{"merge", fmtTime(at), inv.ID, len(inv.Roles)}
	for _, r := range inv.Roles {
		args = append(args, r)
	}
	claims := grants.RedemptionClaims(inv, extra)
	for _, k := range slices.Sorted(maps.Keys(claims)) {
		raw, err := json.Marshal(claims[k])
		if err != nil {
			return nil, fmt.Errorf("encode claim %s: %w", k, err)
		}
		args = append(args, k, raw)
	}
	return args, nil
}

// pendingValue is a pending-merge entry: when it was written and the
// redemption's own claims, which exist nowhere else until the merge ran.
func pendingValue(at time.Time, extra map[string]any) (string, error) {
	v := strconv.FormatInt(at.UnixMilli(), 10)
	if len(extra) == 0 {
		return v, nil
	}
	raw, err := json.Marshal(extra)
	if err != nil {
		return "", fmt.Errorf("encode redemption claims: %w", err)
	}
	return v + "|" + string(raw), nil
}

func parsePending(v string) (time.Time, map[string]any) {
	ms, rest, _ := strings.Cut(v, "|")
	n, _ := strconv.ParseInt(ms, 10, 64)
	var extra map[string]any
	if rest != "" {
		_ = json.Unmarshal([]byte(rest), &extra)
	}
	return time.UnixMilli(n), extra
}

// pendingMergeAge is how long GetGrant leaves a pending merge of a still
// pending invitation alone (the redemption may be in flight).
const pendingMergeAge = 10 * time.Minute

// GetGrant returns an empty grant (not ErrNotFound) for a user with none. It
// also finishes redemptions whose grant merge did not run (see RedeemInvitation).
func (s *Store) GetGrant(ctx context.Context, userID string) (*grants.Grant, error) {
	if err := checkKeys("redisstore: get grant", userID); err != nil {
		return nil, err
	}
	g, pending, err := s.grantOp(ctx, userID, grantRead...)
	if err == nil && len(pending) > 0 {
		g, err = s.healGrant(ctx, userID, g, pending)
	}
	if err != nil {
		return nil, fmt.Errorf("redisstore: get grant of %s: %w", userID, err)
	}
	return g, nil
}

// healGrant applies the merge of every pending invitation this user
// redeemed, and forgets pending entries of redemptions that did not happen.
func (s *Store) healGrant(ctx context.Context, userID string, g *grants.Grant, pending map[string]string) (*grants.Grant, error) {
	for invID, v := range pending {
		since, extra := parsePending(v)
		inv, _, err := s.loadInvitation(ctx, invID)
		if err != nil {
			return nil, err
		}
		switch {
		case inv != nil && inv.Status == grants.StatusRedeemed && inv.RedeemedBy == userID:
			at := s.now()
			if inv.RedeemedAt != nil {
				at = *inv.RedeemedAt
			}
			args, err := mergeArgs(inv, extra, at)
			if err != nil {
				return nil, err
			}
			if g, _, err = s.grantOp(ctx, userID, args...); err != nil {
				return nil, err
			}
			s.log.Info("redisstore: applied an unfinished redemption's grant", "invitation_id", invID, "user_id", userID)
		case inv != nil && inv.Status == grants.StatusPending && s.now().Before(since.Add(pendingMergeAge)):
			// Possibly in flight: leave it.
		default:
			if g, _, err = s.grantOp(ctx, userID, "unpend", "", invID, 0); err != nil {
				return nil, err
			}
		}
	}
	return g, nil
}

func (s *Store) changeGrant(ctx context.Context, what, userID string, events []grants.OutboxEvent, args ...any) (*grants.Grant, error) {
	if err := checkKeys("redisstore: "+what, userID); err != nil {
		return nil, err
	}
	g, _, err := s.grantOpRecording(ctx, userID, events, args...)
	if err != nil {
		return nil, fmt.Errorf("redisstore: %s of %s: %w", what, userID, err)
	}
	return g, nil
}

func (s *Store) AddRoles(ctx context.Context, userID string, roles []string, now time.Time, events ...grants.OutboxEvent) (*grants.Grant, error) {
	args := []any{"add", fmtTime(now), "", len(roles)}
	for _, r := range roles {
		args = append(args, r)
	}
	return s.changeGrant(ctx, "add roles", userID, events, args...)
}

func (s *Store) RemoveGrantRole(ctx context.Context, userID, role string, now time.Time, events ...grants.OutboxEvent) (*grants.Grant, error) {
	if role == "" {
		return nil, fmt.Errorf("redisstore: remove grant role: empty role: %w", ErrInvalid)
	}
	return s.changeGrant(ctx, "remove grant role", userID, events, "rmrole", fmtTime(now), role, 0)
}

func (s *Store) RemoveGrantClaim(ctx context.Context, userID, key string, now time.Time, events ...grants.OutboxEvent) (*grants.Grant, error) {
	if key == "" {
		return nil, fmt.Errorf("redisstore: remove grant claim: empty key: %w", ErrInvalid)
	}
	return s.changeGrant(ctx, "remove grant claim", userID, events, "rmclaim", fmtTime(now), key, 0)
}

func (s *Store) SetGrantClaim(ctx context.Context, userID, key string, value any, now time.Time, events ...grants.OutboxEvent) (*grants.Grant, error) {
	if key == "" {
		return nil, fmt.Errorf("redisstore: set grant claim: empty key: %w", ErrInvalid)
	}
	raw, err := json.Marshal(value)
	if err != nil {
		return nil, fmt.Errorf("redisstore: set grant claim %s: %w", key, err)
	}
	return s.changeGrant(ctx, "set grant claim", userID, events, "setclaim", fmtTime(now), key, 0, key, raw)
}

// requireUser is ErrNotFound unless the user exists.
