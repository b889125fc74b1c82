package redis

// Invitation transitions: redemption (three steps across two slots, see
// invitations.go), revocation, decline, a new token, and the caller's
// updates; each is a compare-and-set on the invitation's version.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/grants"
)

func (s *Store) RedeemInvitation(ctx context.Context, tokenHash string, r grants.Redemption) (*grants.Invitation, *grants.Grant, error) {
	if err := checkKeys("redisstore: redeem invitation", tokenHash, r.UserID); err != nil {
		return nil, nil, err
	}
	if r.At.IsZero() {
		r.At = s.now()
	}
	inv, g, err := s.redeem(ctx, tokenHash, r)
	if err != nil {
		// The invitation comes back with refusals so the caller can explain them.
		return inv, nil, fmt.Errorf("redisstore: redeem invitation: %w", err)
	}
	return inv, g, nil
}

// pendingEntry is the command writing the pending-merge entry of the
// invitation id into the user's key (GetGrant heals from it).
func (s *Store) pendingEntry(ctx context.Context, key, id string, claims map[string]any) ([]redis.Cmder, error) {
	pv, err := pendingValue(s.now(), claims)
	if err != nil {
		return nil, err
	}
	return []redis.Cmder{redis.NewIntCmd(ctx, "hset", key, id, pv)}, nil
}

// mergeRedeemed merges inv, just redeemed by r's user at at, into the
// user's grant; a failure leaves the merge pending (GetGrant heals it).
func (s *Store) mergeRedeemed(ctx context.Context, inv *grants.Invitation, r grants.Redemption, at time.Time) (*grants.Grant, error) {
	args, err := mergeArgs(inv, r.Claims, at)
	if err != nil {
		return nil, err
	}
	g, _, err := s.grantOp(ctx, r.UserID, args...)
	if err != nil {
		return nil, fmt.Errorf("invitation %s redeemed, grant merge pending: %w", inv.ID, err)
	}
	return g, nil
}

// mergeAgain makes sure the grant merge of inv, which r's user redeemed
// already (a retry by the winner), ran.
func (s *Store) mergeAgain(ctx context.Context, inv *grants.Invitation, r grants.Redemption) {
	at := r.At
	if inv.RedeemedAt != nil {
		at = *inv.RedeemedAt
	}
	_, _ = s.mergeRedeemed(ctx, inv, r, at) // a failure stays pending: GetGrant heals it
}

func (s *Store) redeem(ctx context.Context, tokenHash string, r grants.Redemption) (*grants.Invitation, *grants.Grant, error) {
	pendingKey := s.grantKeys(r.UserID)[3]
	pending := "" // the invitation ID whose pending-merge entry we wrote
	unpend := func() {
		if pending != "" {
			if _, _, err := s.grantOp(context.WithoutCancel(ctx), r.UserID, "unpend", "", pending, 0); err != nil {
				s.log.Warn("redisstore: clearing pending merge", "invitation_id", pending, "err", err)
			}
		}
	}
	for range casRetries {
		// The record the use case read to check it, on the first attempt:
		// the compare-and-set below refuses it if it changed since.
		inv, version, err := s.keptInvitationByHash(ctx, tokenHash)
		if err != nil {
			unpend()
			return nil, nil, err
		}
		if inv == nil {
			unpend()
			return nil, nil, grants.ErrNotFound
		}
		refusal := inv.ApplyRedemption(r)
		if errors.Is(refusal, grants.ErrInvitationRedeemed) && inv.RedeemedBy == r.UserID {
			s.mergeAgain(ctx, inv, r)
			pending = ""
		}
		if refusal != nil {
			unpend()
			return inv, nil, refusal
		}
		// The pending-merge entry goes before the redemption, confirmed
		// (with the outbox entry) before it is sent.
		var markPending []redis.Cmder
		if pending == "" {
			if markPending, err = s.pendingEntry(ctx, pendingKey, inv.ID, r.Claims); err != nil {
				return nil, nil, err
			}
		}
		at := r.At
		res, err := s.casInvitation(ctx, inv, version, grants.StatusPending, markPending...)
		if len(markPending) > 0 && markPending[0].Err() == nil {
			pending = inv.ID
		}
		if err != nil {
			// Unknown outcome: leave the pending entry, GetGrant resolves it.
			return nil, nil, err
		}
		switch res {
		case "ok":
			g, err := s.mergeRedeemed(ctx, inv, r, at)
			if err != nil {
				return nil, nil, err
			}
			return inv, g, nil
		case "notfound":
			unpend()
			return nil, nil, grants.ErrNotFound
		}
		// "status" or "retry": someone else changed it; read it again.
	}
	unpend()
	return nil, nil, fmt.Errorf("invitation contended, try again")
}

// RevokeInvitation keeps the token lookup, so presenting the token later says
// "revoked" rather than "unknown".
func (s *Store) RevokeInvitation(ctx context.Context, id string, at time.Time, events ...grants.OutboxEvent) (*grants.Invitation, error) {
	return s.transition(ctx, "revoke invitation", id, func(inv *grants.Invitation) (bool, error) {
		return inv.ApplyRevocation(at, events)
	}, nil)
}

// DeclineInvitation keeps the token lookup too, so the link later says
// "declined".
func (s *Store) DeclineInvitation(ctx context.Context, id, userID string, at time.Time, events ...grants.OutboxEvent) (*grants.Invitation, error) {
	return s.transition(ctx, "decline invitation", id, func(inv *grants.Invitation) (bool, error) {
		return inv.ApplyDecline(userID, at, events)
	}, nil)
}

// ReplaceInvitationToken claims the new token's lookup first, then swaps the
// hash with a CAS; the old lookup is removed after, and the new one again if
// the swap was refused.
func (s *Store) ReplaceInvitationToken(ctx context.Context, id, newHash string, expiresAt, at time.Time, events ...grants.OutboxEvent) (*grants.Invitation, error) {
	if err := checkKeys("redisstore: replace invitation token", newHash); err != nil {
		return nil, err
	}
	var oldHash string
	return s.transition(ctx, "replace invitation token", id, func(inv *grants.Invitation) (bool, error) {
		oldHash = inv.TokenHash
		return true, inv.ApplyNewToken(newHash, expiresAt, at, events)
	}, &tokenSwap{newHash: newHash, oldHash: &oldHash})
}

type tokenSwap struct {
	newHash string
	oldHash *string
}

// transition applies change to the stored invitation with a CAS, retrying
// from a fresh read when another writer got there first; change returns
// whether to store it and a refusal, which is returned with the invitation.
func (s *Store) transition(ctx context.Context, what, id string, change func(inv *grants.Invitation) (bool, error), swap *tokenSwap) (*grants.Invitation, error) {
	if err := checkKeys("redisstore: "+what, id); err != nil {
		return nil, err
	}
	inv, err := func() (*grants.Invitation, error) {
		var claimed *lookupEntry
		defer func() {
			if claimed != nil {
				s.releaseEntry(ctx, *claimed, id)
			}
		}()
		for range casRetries {
			inv, version, err := s.loadInvitation(ctx, id)
			if err != nil {
				return nil, err
			}
			if inv == nil {
				return nil, grants.ErrNotFound
			}
			write, refusal := change(inv)
			if refusal != nil {
				return inv, refusal
			}
			if !write {
				return inv, nil
			}
			if swap != nil && claimed == nil && *swap.oldHash != swap.newHash {
				created, err := s.claimToken(ctx, swap.newHash, id)
				if err != nil {
					return nil, err
				}
				claimed = created
			}
			res, err := s.casInvitation(ctx, inv, version, "")
			if err != nil {
				return nil, err
			}
			switch res {
			case "ok":
				claimed = nil // the new lookup is the invitation's now
				if swap != nil && *swap.oldHash != swap.newHash {
					s.releaseToken(ctx, *swap.oldHash, swap.newHash, id)
				}
				return inv, nil
			case "notfound":
				return nil, grants.ErrNotFound
			}
		}
		return nil, errors.New("invitation contended, try again")
	}()
	if err != nil {
		return inv, fmt.Errorf("redisstore: %s %s: %w", what, id, err)
	}
	return inv, nil
}

// UpdateInvitation applies fn with a compare-and-set; when another writer
// changed the invitation in between, fn runs again on the fresh copy, so fn
// must only edit the invitation (the callers' functions do).
func (s *Store) UpdateInvitation(ctx context.Context, id string, fn func(*grants.Invitation) error) (*grants.Invitation, error) {
	if err := checkKeys("redisstore: update invitation", id); err != nil {
		return nil, err
	}
	if fn == nil {
		return nil, fmt.Errorf("redisstore: update invitation %s: nil fn: %w", id, ErrInvalid)
	}
	inv, err := func() (*grants.Invitation, error) {
		for range casRetries {
			inv, version, err := s.loadInvitation(ctx, id)
			if err != nil {
				return nil, err
			}
			if inv == nil {
				return nil, grants.ErrNotFound
			}
			old, _, err := s.loadInvitationCopy(inv)
			if err != nil {
				return nil, err
			}
			if err := fn(inv); err != nil {
				return nil, err
			}
			if inv.ID != old.ID || inv.TokenHash != old.TokenHash || inv.Status != old.Status {
				return nil, fmt.Errorf("fn changed id, token hash or status: %w", ErrInvalid)
			}
			staged, err := s.stageIndexes(ctx, old, inv)
			if err != nil {
				return nil, err
			}
			res, err := s.casInvitation(ctx, inv, version, "")
			if err != nil {
				return nil, err // written or not: keep the entries
			}
			switch res {
			case "ok":
				s.dropIndexesLeft(ctx, old, inv)
				return inv, nil
			case "notfound":
				staged.undo(ctx, s, id)
				return nil, grants.ErrNotFound
			}
			staged.undo(ctx, s, id)
		}
		return nil, errors.New("invitation contended, try again")
	}()
	if err != nil {
		return nil, fmt.Errorf("redisstore: update invitation %s: %w", id, err)
	}
	return inv, nil
}
