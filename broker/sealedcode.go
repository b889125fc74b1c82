package broker

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/securecookie"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/sessions"
)

// A sealed code carries the completed auth request it answers, encrypted
// and authenticated with usher's key (securecookie, as the session cookie,
// with keys of its own), so issuing it writes nothing: a login the browser
// session answers goes from /authorize to its tokens in one store trip,
// the exchange's, which spends the code (sessions.Store.SpendCode) with
// the refresh token it issues and reads the user and grant beside.
//
// What a stored code guaranteed still holds:
//   - single use: the spend is atomic; a second one is a replay, which
//     revokes what the first issued, as before;
//   - expiry: the code names its expiry, checked before the spend and
//     again by the store;
//   - unforgeable: only usher's key makes one, and it binds the code's
//     purpose (the securecookie name), so no other usher value opens as one;
//   - a store that loses its flow state (bbolt's flow file after a crash, a
//     Redis that lost its data) loses the spends, so every code names the
//     store's epoch (CodeEpoch), which changes with that loss: a code of an
//     older epoch is refused, and no spent code opens again.
//
// A request that went upstream has a record: the code's issue deletes it,
// in the round trip that saves the browser session. Stores whose replicas
// may not all read sealed codes yet say so (codeSealer).

// sealedCodePrefix starts every sealed code: securecookie's output is
// base64url, which has no '.', so no other code starts with it.
const sealedCodePrefix = "s."

// maxSealedRequest bounds the request a code carries (JSON bytes): a
// larger one (long nonce, many upstream claims) gets a stored code, so no
// code grows past ~2 KB in a redirect URL.
const maxSealedRequest = 1100

const sealedCodeName = "usher sealed code"

// codeSealer is a store that can say whether every replica exchanges
// sealed codes (Redis: record format v6 on one master; bbolt: always).
type codeSealer interface{ SealsCodes() bool }

// codeSpenderWithUser spends a sealed code and reads a user with its grant
// in one round trip (Redis).
type codeSpenderWithUser interface {
	SpendCodeWithUser(ctx context.Context, sp *sessions.CodeSpend, userID string) (grants.UserGrant, error)
}

// sealedCode is what a sealed code carries.
type sealedCode struct {
	Epoch   string         `json:"e"`
	Expires int64          `json:"x"` // unix ms
	Request *sealedRequest `json:"r"`
}

// codeSeal makes and opens sealed codes and keeps the store's epoch.
type codeSeal struct {
	codec  *securecookie.SecureCookie
	mu     sync.Mutex
	epoch  string    // "" until read from the store (and after it changed)
	readAt time.Time // when epoch was read
}

// epochRecheck is how long a replica trusts the epoch it read: a replica
// that only issues codes never sees its own refused, so after Redis lost
// its data its codes fail for at most this long (one read a minute).
const epochRecheck = time.Minute

func newCodeSeal(secret []byte, ttl time.Duration) *codeSeal {
	codec := securecookie.New(deriveKey(secret, "usher sealed code hmac"), deriveKey(secret, "usher sealed code aes"))
	codec.MaxAge(int((ttl + time.Minute).Seconds())) // the code's own expiry is exact; this bounds a stolen key's reach
	codec.MaxLength(0)                               // maxSealedRequest bounds it
	codec.SetSerializer(securecookie.NopEncoder{})
	return &codeSeal{codec: codec}
}

// currentEpoch is the store's epoch, read again after epochRecheck and
// after a spend found it changed (forgetEpoch).
func (b *Broker) currentEpoch(ctx context.Context) (string, error) {
	s := b.codeSeal
	s.mu.Lock()
	defer s.mu.Unlock()
	if now := b.now(); s.epoch == "" || now.Sub(s.readAt) >= epochRecheck {
		e, err := b.sessions.CodeEpoch(ctx)
		if err != nil {
			return "", err
		}
		s.epoch, s.readAt = e, now
	}
	return s.epoch, nil
}

func (b *Broker) forgetEpoch(stale string) {
	s := b.codeSeal
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.epoch == stale {
		s.epoch = ""
	}
}

// sealing is the Crypto that seals ar's code, or nil when ar gets a stored
// code: its store cannot take sealed codes yet, or it is too large to
// carry.
func (b *Broker) sealing(ctx context.Context, ar *sessions.AuthRequest) op.Crypto {
	if sealer, ok := b.sessions.(codeSealer); !ok || !sealer.SealsCodes() || !ar.Done || ar.Purpose != "" {
		return nil
	}
	epoch, err := b.currentEpoch(ctx)
	if err != nil {
		b.log.WarnContext(ctx, "reading the code epoch; issuing a stored code", "err", err)
		return nil
	}
	c, err := b.sealCrypto(ar, epoch)
	if err != nil {
		return nil // too large to carry: a stored code
	}
	return c
}

// sealCrypto is the Crypto sealing ar with epoch, an error when ar is too
// large to carry.
func (b *Broker) sealCrypto(ar *sessions.AuthRequest, epoch string) (sealCrypto, error) {
	plain, err := json.Marshal(sealedCode{Epoch: epoch, Expires: b.now().Add(b.opts.Tokens.Code).UnixMilli(), Request: sealRequest(ar)})
	if err == nil && len(plain) > maxSealedRequest {
		err = errors.New("sealed code: the request is too large to carry")
	}
	return sealCrypto{seal: b.codeSeal, id: ar.ID, plain: plain}, err
}

// sealCrypto is the library's Crypto for one sealed code: Encrypt is
// called with the request's ID and returns the code.
type sealCrypto struct {
	seal  *codeSeal
	id    string
	plain []byte
}

func (c sealCrypto) Encrypt(id string) (string, error) {
	if id != c.id {
		return "", errors.New("sealed code: asked for another auth request")
	}
	v, err := c.seal.codec.Encode(sealedCodeName, c.plain)
	return sealedCodePrefix + v, err
}

func (c sealCrypto) Decrypt(string) (string, error) {
	return "", errors.New("sealed code: not for decrypting")
}

func isSealedCode(code string) bool { return strings.HasPrefix(code, sealedCodePrefix) }

// openSealedCode is the request a sealed code carries and its spend (not
// made yet): invalid_grant for a code usher did not make or that expired.
func (b *Broker) openSealedCode(code string) (*sessions.AuthRequest, *sessions.CodeSpend, error) {
	var plain []byte
	var sc sealedCode
	invalid := oidc.ErrInvalidGrant().WithDescription("authorization code invalid or expired")
	if err := b.codeSeal.codec.Decode(sealedCodeName, strings.TrimPrefix(code, sealedCodePrefix), &plain); err != nil {
		return nil, nil, invalid
	}
	if err := json.Unmarshal(plain, &sc); err != nil || sc.Request == nil || sc.Request.ID == "" || sc.Epoch == "" {
		return nil, nil, invalid
	}
	expires := time.UnixMilli(sc.Expires)
	if !b.now().Before(expires) {
		return nil, nil, invalid
	}
	return sc.Request.authRequest(), &sessions.CodeSpend{Hash: sealedSpendKey(sc.Request.ID), Epoch: sc.Epoch, ExpiresAt: expires}, nil
}

// sealedSpendKey names a sealed code's spend by the request it answers,
// not by the code's text: a request gets one code, and the same code
// written otherwise (securecookie's base64 decoding skips line breaks, so
// many texts open to one code) must not spend as another.
func sealedSpendKey(requestID string) string { return hashToken("sealed code\n" + requestID) }

// ctxCodeSpend carries a sealed code's spend from CodeExchange to
// tokenResponse, which makes it with the refresh token.
type ctxCodeSpend struct{}

// spendCode spends a sealed code, with the refresh token the response
// issues (when it issues one) and the subject's user and grant read in the
// same trip where the store can, then checks what readClaimsFirst checks:
// a refusal then revokes what the spend created.
func (b *Broker) spendCode(ctx context.Context, req authRequest, sp *sessions.CodeSpend, wantsRefresh bool) (jti, refresh string, exp time.Time, err error) {
	now := b.now()
	if wantsRefresh {
		sp.Refresh = b.newRefreshRecord(req, now)
		b.firstOfFamily(sp.Refresh, req, now)
		refresh = b.issueRefresh(sp.Refresh)
	}
	if taker, ok := b.sessions.(codeSpenderWithUser); ok {
		var ug grants.UserGrant
		if ug, err = taker.SpendCodeWithUser(ctx, sp, req.Subject); err == nil {
			keepUserRead(ctx, ug)
		}
	} else {
		err = b.sessions.SpendCode(ctx, sp)
	}
	if err != nil {
		return "", "", time.Time{}, b.codeSpendRefused(ctx, req, sp, err)
	}
	family := "" // the spend wrote no refresh token
	if sp.Refresh != nil {
		family = req.ID
	}
	if err := b.claimsAfterWrite(ctx, req.Subject, issuedAt(req), family, "a refused code exchange"); err != nil {
		return "", "", time.Time{}, err
	}
	return accessTokenID(req.ID, now), refresh, now.Add(b.opts.Tokens.Access), nil
}

// claimsAfterWrite checks what the tokens will carry (readClaimsFirst)
// after a write that stored a refresh token of family ("" for none): a
// refusal revokes that family, which nobody may use.
func (b *Broker) claimsAfterWrite(ctx context.Context, subject string, issued time.Time, family, why string) error {
	err := b.readClaimsFirst(ctx, subject, issued)
	if err != nil && family != "" {
		b.revokeFamily(ctx, family, why)
	}
	return err
}

// codeSpendRefused is the token error for a spend the store refused.
func (b *Broker) codeSpendRefused(ctx context.Context, req authRequest, sp *sessions.CodeSpend, err error) error {
	switch {
	case errors.Is(err, sessions.ErrCodeReplayed):
		return b.codeReplayed(ctx, req.ID)
	case errors.Is(err, sessions.ErrNotFound):
		// The store's epoch changed (it lost its flow state): codes made
		// from now on name the new one.
		b.forgetEpoch(sp.Epoch)
		return oidc.ErrInvalidGrant().WithDescription("authorization code invalid or expired")
	}
	return storeError("spending the authorization code", err)
}

// codeReplayed revokes every token issued from the code of family, stored
// or sealed, that was presented again (RFC 9700 §4.5.3.1), and is the
// client's answer.
func (b *Broker) codeReplayed(ctx context.Context, family string) error {
	b.revokeFamily(ctx, family, "a replayed code")
	b.log.WarnContext(ctx, "authorization code replayed; tokens issued from it revoked", "family", family)
	return oidc.ErrInvalidGrant().WithDescription("authorization code already used")
}

func (b *Broker) revokeFamily(ctx context.Context, family, why string) {
	if err := b.sessions.RevokeFamily(ctx, family, b.now().Add(b.opts.Tokens.RefreshAbsolute)); err != nil {
		b.log.ErrorContext(ctx, "revoking the tokens of "+why, "err", err)
	}
}

// sealedCodeIssued is SaveAuthCode for a sealed code: nothing of the code is
// stored. The browser session save left for the code's write is written
// before the code goes out, as a stored code's save writes it (the code's
// tokens name the session), and with it, in the same round trip, the
// deletion of the request's record when it has one: the code carries the
// request from now on, and no second code can be had for it.
func (b *Broker) sealedCodeIssued(ctx context.Context, id string) error {
	t := sessions.Together{}
	if !unstored(ctx, id) {
		t.DeleteAuthRequest = id
	}
	if later, _ := ctx.Value(ctxSessionWrite{}).(*sessionWrite); later != nil && !later.taken {
		later.taken = true
		t.SaveSession, t.ReplacesSession = later.rec, later.replaces
	}
	if t.SaveSession != nil || t.DeleteAuthRequest != "" {
		if _, err := sessions.RunTogether(ctx, b.sessions, t); err != nil {
			return storeError("saving the browser session with the code's request", err)
		}
	}
	keptByCode(ctx, id)
	return nil
}

// spendRefused spends a sealed code whose exchange was refused (refusal):
// a replay still revokes what the first exchange issued.
func (b *Broker) spendRefused(ctx context.Context, req authRequest, sp *sessions.CodeSpend, refusal error) error {
	if err := b.sessions.SpendCode(ctx, sp); errors.Is(err, sessions.ErrCodeReplayed) {
		return b.codeSpendRefused(ctx, req, sp, err)
	}
	return refusal
}
