package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/usher-oidc/usher/sessions"
	"github.com/usher-oidc/usher/store"
)

// outcome maps a script's status reply to the sentinel error it stands for.
func outcome(status string, m map[string]error) error {
	if status == "ok" {
		return nil
	}
	if err, ok := m[status]; ok {
		return err
	}
	return fmt.Errorf("unexpected script reply %q", status)
}

// --- auth requests: {prefix}ar:<id> = {e, d} ---

func (s *Store) putAuthRequest(ctx context.Context, what, mode string, ar *sessions.AuthRequest) error {
	if ar == nil {
		return fmt.Errorf("redisstore: %s: nil: %w", what, ErrInvalid)
	}
	if err := checkKeys("redisstore: "+what, ar.ID); err != nil {
		return err
	}
	call, err := s.authRequestCall(mode, ar)
	if err != nil {
		return fmt.Errorf("redisstore: %s %s: %w", what, ar.ID, err)
	}
	res, err := s.runScript(ctx, call.sc, call.keys, call.args...)
	if err == nil {
		err = outcome(str(res, 0), map[string]error{"conflict": sessions.ErrConflict, "notfound": sessions.ErrNotFound})
	}
	if err != nil {
		return fmt.Errorf("redisstore: %s %s: %w", what, ar.ID, err)
	}
	return nil
}

// authRequestCall is the putRecord call that stores ar (mode "create" or
// "update").
func (s *Store) authRequestCall(mode string, ar *sessions.AuthRequest) (scriptCall, error) {
	if ar.ExpiresAt.IsZero() {
		return scriptCall{}, fmt.Errorf("no expiry: %w", ErrInvalid)
	}
	raw, err := json.Marshal(ar)
	if err != nil {
		return scriptCall{}, err
	}
	return scriptCall{putRecord, []string{s.key("ar", ar.ID)},
		[]any{microsStr(s.now()), mode, microsStr(ar.ExpiresAt), expireAtMS(ar.ExpiresAt), raw}}, nil
}

func (s *Store) CreateAuthRequest(ctx context.Context, ar *sessions.AuthRequest) error {
	return s.putAuthRequest(ctx, "create auth request", "create", ar)
}

// UpdateAuthRequest replaces a live auth request (ErrNotFound if gone).
func (s *Store) UpdateAuthRequest(ctx context.Context, ar *sessions.AuthRequest) error {
	return s.putAuthRequest(ctx, "update auth request", "update", ar)
}

func (s *Store) GetAuthRequest(ctx context.Context, id string) (*sessions.AuthRequest, error) {
	if err := checkKeys("redisstore: get auth request", id); err != nil {
		return nil, err
	}
	raw, err := s.rdb.HGet(ctx, s.key("ar", id), "d").Result()
	return s.authRequestFrom(id, raw, err)
}

// authRequestFrom is GetAuthRequest's answer from its HGET's reply.
func (s *Store) authRequestFrom(id, raw string, err error) (*sessions.AuthRequest, error) {
	if errors.Is(err, redis.Nil) {
		err = sessions.ErrNotFound
	}
	var ar sessions.AuthRequest
	if err == nil {
		err = json.Unmarshal([]byte(raw), &ar)
	}
	if err == nil && expired(ar.ExpiresAt, s.now()) {
		err = sessions.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("redisstore: get auth request %s: %w", id, err)
	}
	return &ar, nil
}

// DeleteAuthRequest is idempotent.
func (s *Store) DeleteAuthRequest(ctx context.Context, id string) error {
	if err := checkKeys("redisstore: delete auth request", id); err != nil {
		return err
	}
	if err := s.rdb.Del(ctx, s.key("ar", id)).Err(); err != nil {
		return fmt.Errorf("redisstore: delete auth request %s: %w", id, err)
	}
	return nil
}

// --- codes: {prefix}c:<hash> = {e, u, d} ---

// SaveCode refuses to overwrite a live code (ErrConflict): overwriting would
// clear Used and let a spent code be exchanged again.
func (s *Store) SaveCode(ctx context.Context, c *sessions.Code) error {
	calls, err := s.codeCalls(c)
	if err == nil {
		var res [][]any
		res, err = s.runTogether(ctx, calls...)
		err = codeSaved(res, err)
	}
	if err != nil {
		return fmt.Errorf("redisstore: save code: %w", err)
	}
	return nil
}

// codeCalls are the scripts that save c: the auth request it completes
// (when it carries it), then the code.
func (s *Store) codeCalls(c *sessions.Code) ([]scriptCall, error) {
	if err := store.CheckCode("code", c, checkKeys); err != nil {
		return nil, err
	}
	stored := *c
	stored.Used = false // Used lives in its own field, set by ConsumeCode
	raw, err := json.Marshal(&stored)
	if err != nil {
		return nil, err
	}
	calls := []scriptCall{{putRecord, []string{s.key("c", c.Hash)},
		[]any{microsStr(s.now()), "create", microsStr(c.ExpiresAt), expireAtMS(c.ExpiresAt), raw}}}
	// Versions before v3 may predate codes carrying their request: for
	// them, a request never stored gets its record with the code.
	if ar := c.AuthRequest; ar != nil && !(c.AuthRequestNeverStored && s.formatV3()) {
		// The auth request the code completes, in the same round trip (other
		// slots: an update that finds the request gone fails the save, and
		// the code, never handed out, expires unused).
		if err := checkKeys("its auth request", ar.ID); err != nil {
			return nil, err
		}
		mode := "update"
		if c.AuthRequestNeverStored {
			mode = "create"
		}
		call, err := s.authRequestCall(mode, c.StoredAuthRequest())
		if err != nil {
			return nil, fmt.Errorf("its auth request: %w", errors.Join(err, ErrInvalid))
		}
		calls = append([]scriptCall{call}, calls...)
	}
	return calls, nil
}

// codeSaved is the save's outcome from its scripts' replies.
func codeSaved(res [][]any, err error) error {
	for i := 0; err == nil && i < len(res); i++ {
		err = outcome(str(res[i], 0), map[string]error{"conflict": sessions.ErrConflict, "notfound": sessions.ErrNotFound})
	}
	return err
}

func (s *Store) ConsumeCode(ctx context.Context, hash string) (*sessions.Code, error) {
	if err := checkKeys("redisstore: consume code", hash); err != nil {
		return nil, err
	}
	res, err := s.runScript(ctx, consumeCode, []string{s.key("c", hash)}, microsStr(s.now()))
	return codeConsumed(res, err)
}

// consumeCodeCall is ConsumeCode's script call.
func (s *Store) consumeCodeCall(hash string) scriptCall {
	return scriptCall{consumeCode, []string{s.key("c", hash)}, []any{microsStr(s.now())}}
}

// codeConsumed is ConsumeCode's answer from its script's reply.
func codeConsumed(res []any, err error) (*sessions.Code, error) {
	if err != nil {
		return nil, fmt.Errorf("redisstore: consume code: %w", err)
	}
	status := str(res, 0)
	if status == "notfound" {
		return nil, fmt.Errorf("redisstore: consume code: %w", sessions.ErrNotFound)
	}
	var c sessions.Code
	if err := json.Unmarshal([]byte(str(res, 1)), &c); err != nil {
		return nil, fmt.Errorf("redisstore: consume code: decode: %w", err)
	}
	c.Used = true
	switch status {
	case "ok":
		return &c, nil
	case "replayed":
		return &c, fmt.Errorf("redisstore: consume code: %w", sessions.ErrCodeReplayed)
	}
	return nil, fmt.Errorf("redisstore: consume code: unexpected script reply %q", status)
}

// --- browser sessions: {prefix}bs:<id> = payload (recordformat_sessions.go) ---

func (s *Store) GetBrowserSession(ctx context.Context, id string) (*sessions.BrowserSession, error) {
	if err := checkKeys("redisstore: get browser session", id); err != nil {
		return nil, err
	}
	raw, err := s.rdb.Get(ctx, s.key("bs", id)).Bytes()
	return s.browserSessionFrom(id, raw, err)
}

// browserSessionFrom is GetBrowserSession's answer from its GET's reply.
func (s *Store) browserSessionFrom(id string, raw []byte, err error) (*sessions.BrowserSession, error) {
	if errors.Is(err, redis.Nil) {
		err = sessions.ErrNotFound
	}
	var bs *sessions.BrowserSession
	if err == nil {
		bs, err = decodeBrowserSession(id, raw)
	}
	if err == nil && expired(bs.ExpiresAt, s.now()) {
		err = sessions.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("redisstore: get browser session: %w", err)
	}
	return bs, nil
}

// SaveBrowserSession creates or replaces the session.
func (s *Store) SaveBrowserSession(ctx context.Context, bs *sessions.BrowserSession) error {
	if err := checkBrowserSession("redisstore: save browser session", bs); err != nil {
		return err
	}
	if err := s.saveBrowserSession(ctx, s.rdb, bs); err != nil {
		return fmt.Errorf("redisstore: save browser session: %w", err)
	}
	return nil
}

func checkBrowserSession(op string, bs *sessions.BrowserSession) error {
	return store.CheckBrowserSession(op, bs, checkKeys)
}

func (s *Store) saveBrowserSession(ctx context.Context, c redis.Cmdable, bs *sessions.BrowserSession) error {
	raw, err := s.encodeBrowserSession(bs)
	if err != nil {
		return err
	}
	return c.SetArgs(ctx, s.key("bs", bs.ID), raw, redis.SetArgs{ExpireAt: time.UnixMilli(expireAtMS(bs.ExpiresAt))}).Err()
}

// ReplaceBrowserSession: the new session's SET and the old one's DEL in one
// pipeline (other slots on a cluster, so not one transaction: should the
// DEL fail, the error says so and the old session expires on its own).
func (s *Store) ReplaceBrowserSession(ctx context.Context, bs *sessions.BrowserSession, oldID string) error {
	if err := checkBrowserSession("redisstore: replace browser session", bs); err != nil {
		return err
	}
	if err := checkKeys("redisstore: replace browser session", oldID); err != nil {
		return err
	}
	var save error
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		save = s.saveBrowserSession(ctx, p, bs)
		p.Del(ctx, s.key("bs", oldID))
		return nil
	})
	if err = errors.Join(save, err); err != nil {
		return fmt.Errorf("redisstore: replace browser session: %w", err)
	}
	return nil
}

// DeleteBrowserSession is idempotent.
func (s *Store) DeleteBrowserSession(ctx context.Context, id string) error {
	if err := checkKeys("redisstore: delete browser session", id); err != nil {
		return err
	}
	if err := s.rdb.Del(ctx, s.key("bs", id)).Err(); err != nil {
		return fmt.Errorf("redisstore: delete browser session: %w", err)
	}
	return nil
}

// --- signing keys: {prefix}keys = hash id → JSON (one key: onlyIfNone is one script) ---

func (s *Store) SigningKeys(ctx context.Context) ([]sessions.SigningKey, error) {
	all, err := s.rdb.HGetAll(ctx, s.prefix+"keys").Result()
	if err != nil {
		return nil, fmt.Errorf("redisstore: signing keys: %w", err)
	}
	keys := make([]sessions.SigningKey, 0, len(all))
	for id, raw := range all {
		var k sessions.SigningKey
		if err := json.Unmarshal([]byte(raw), &k); err != nil {
			return nil, fmt.Errorf("redisstore: signing keys: decode %s: %w", id, err)
		}
		keys = append(keys, k)
	}
	slices.SortStableFunc(keys, func(a, b sessions.SigningKey) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return keys, nil
}

func (s *Store) AddSigningKey(ctx context.Context, k *sessions.SigningKey, onlyIfNone bool) error {
	if k == nil {
		return fmt.Errorf("redisstore: add signing key: nil: %w", ErrInvalid)
	}
	if err := checkKeys("redisstore: add signing key", k.ID); err != nil {
		return err
	}
	raw, err := json.Marshal(k)
	if err != nil {
		return fmt.Errorf("redisstore: add signing key %s: %w", k.ID, err)
	}
	only := "0"
	if onlyIfNone {
		only = "1"
	}
	res, err := s.runScript(ctx, addSigningKey, []string{s.prefix + "keys"}, k.ID, raw, only, k.Algorithm)
	if err == nil {
		err = outcome(str(res, 0), map[string]error{"conflict": sessions.ErrConflict})
	}
	if err != nil {
		return fmt.Errorf("redisstore: add signing key %s: %w", k.ID, err)
	}
	return nil
}

// DeleteSigningKey is idempotent.
func (s *Store) DeleteSigningKey(ctx context.Context, id string) error {
	if err := checkKeys("redisstore: delete signing key", id); err != nil {
		return err
	}
	if err := s.rdb.HDel(ctx, s.prefix+"keys", id).Err(); err != nil {
		return fmt.Errorf("redisstore: delete signing key %s: %w", id, err)
	}
	return nil
}
