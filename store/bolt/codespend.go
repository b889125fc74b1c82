package bolt

import (
	"context"
	"crypto/rand"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/usher-oidc/usher/sessions"
	"github.com/usher-oidc/usher/store"
)

var flowEpochKey = []byte("code_epoch")

// flowEpoch is the flow file's code epoch, made when the file is: a flow
// file discarded after a crash takes its epoch with it, as it takes the
// spends of sealed codes, so no code spent before the crash opens again.
func flowEpoch(flow *bolt.DB) (string, error) {
	var epoch string
	err := flow.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bFlowMeta)
		if v := b.Get(flowEpochKey); v != nil {
			epoch = string(v)
			return nil
		}
		epoch = rand.Text()
		return b.Put(flowEpochKey, []byte(epoch))
	})
	return epoch, err
}

// openFlowWithEpoch is openFlow, with the file's code epoch.
func openFlowWithEpoch(path string) (*bolt.DB, string, error) {
	flow, err := openFlow(path)
	if err != nil {
		return nil, "", err
	}
	epoch, err := flowEpoch(flow)
	if err != nil {
		_ = flow.Close()
		return nil, "", fmt.Errorf("code epoch: %w", err)
	}
	return flow, epoch, nil
}

// CodeEpoch is the flow file's epoch (flowEpoch); it changes only when the
// file is started anew.
func (s *Store) CodeEpoch(context.Context) (string, error) { return s.epoch, nil }

// SpendCode records the spend in the flow file, beside the codes (the
// sweeper drops it once the code expires), then creates the refresh token
// durably, as ConsumeCode and CreateRefreshToken do one after the other:
// the spend costs no disk wait, and a failed creation leaves the code
// spent, never a token without its spend.
func (s *Store) SpendCode(ctx context.Context, sp *sessions.CodeSpend) error {
	if err := store.CheckCodeSpend("boltstore: spend code", sp, checkKeys); err != nil {
		return err
	}
	if sp.Refresh != nil {
		if err := checkRefresh("boltstore: spend code: its refresh token", sp.Refresh); err != nil {
			return err
		}
	}
	if sp.Epoch != s.epoch || expired(sp.ExpiresAt, s.now()) {
		return fmt.Errorf("boltstore: spend code: expired or of an earlier flow file: %w", sessions.ErrNotFound)
	}
	err := s.flowUpdate(func(tx *bolt.Tx) (error, error) {
		b := tx.Bucket(bCodes)
		var old sessions.Code
		found, err := getJSON(b, []byte(sp.Hash), &old)
		if err != nil {
			return nil, err
		}
		if found && !expired(old.ExpiresAt, s.now()) {
			return sessions.ErrCodeReplayed, nil
		}
		return nil, putJSON(b, []byte(sp.Hash), &sessions.Code{Hash: sp.Hash, ExpiresAt: sp.ExpiresAt, Used: true})
	})
	if err != nil {
		return fmt.Errorf("boltstore: spend code: %w", err)
	}
	if sp.Refresh == nil {
		return nil
	}
	return s.CreateRefreshToken(ctx, sp.Refresh)
}

// SealsCodes: one process owns a bbolt file, so it always reads the sealed
// codes it issues.
func (s *Store) SealsCodes() bool { return true }
