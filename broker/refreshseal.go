package broker

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/gorilla/securecookie"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/sessions"
)

// A sealed refresh token also carries what its family never changes — the
// client, subject, scopes, audience, amr, auth_time, the family's absolute
// expiry and creation, its browser session, the upstream's claims —
// encrypted and authenticated with usher's key (securecookie, keys of its
// own), as the token's last part: "rt_<family>.<subject>.<secret>.<seal>".
// A refresh then knows what its next token and its answer hold before it
// reads the store, checks the client and the scopes asked for against it,
// and rotates with one store trip that also reads the user and grant
// (refreshRotatorWithUser: Redis), where it took two (the token read, then
// the rotation).
//
// The store still holds every token's full record and still decides: the
// rotation script finds the token by the hash of its whole value, seal
// included, and refuses one unknown, expired, revoked or already rotated
// (reuse revokes the family) exactly as before, so a seal changed or moved
// to another token is a hash nobody holds. What the seal lets usher check
// early (client, scopes) is refused before anything is written, as before;
// what only the store knows is checked by the rotation; a user signed out
// everywhere or erased since is refused after it, and the family revoked.
//
// Any other token — issued unsealed (before this, on a store that cannot
// rotate with a user read, with a seal too large to carry), or whose seal
// no longer opens (the session secret rotated) — is read first, as before.
// A version that predates seals reads sealed tokens too: its family and
// subject are the first two parts, and the hash is of the whole value.

const refreshSealName = "usher refresh family"

// maxSealedFamily bounds the family data a token carries (JSON bytes): a
// family with more (many upstream claims) gets unsealed tokens, so no
// refresh token grows past ~1.6 KB.
const maxSealedFamily = 900

// refreshRotatorWithUser is a store that rotates a refresh token and reads
// a user with its grant in one round trip (Redis).
type refreshRotatorWithUser interface {
	RotateRefreshTokenWithUser(ctx context.Context, oldHash string, next *sessions.RefreshToken, userID string) (grants.UserGrant, error)
}

// sealedFamily is what a sealed refresh token carries, under short names,
// times as unix nanoseconds.
type sealedFamily struct {
	Family          string             `json:"f"`
	Subject         string             `json:"u"`
	ClientID        string             `json:"c"`
	Scopes          []string           `json:"s,omitempty"`
	Audience        []string           `json:"a,omitempty"`
	AMR             []string           `json:"amr,omitempty"`
	AuthTime        int64              `json:"at,omitempty"`
	FamilyExpiresAt int64              `json:"fe,omitempty"`
	FamilyCreatedAt int64              `json:"fc,omitempty"`
	SessionID       string             `json:"sid,omitempty"`
	Upstream        *sessions.Upstream `json:"up,omitempty"`
}

func newRefreshSeal(secret []byte, absolute time.Duration) *securecookie.SecureCookie {
	codec := securecookie.New(deriveKey(secret, "usher refresh seal hmac"), deriveKey(secret, "usher refresh seal aes"))
	codec.MaxAge(int((absolute + 24*time.Hour).Seconds())) // the family's own expiry is exact; this bounds a stolen key's reach
	codec.MaxLength(0)                                     // maxSealedFamily bounds it
	codec.SetSerializer(securecookie.NopEncoder{})
	return codec
}

// issueRefresh is the value of the refresh token rec records (complete but
// for its hash, which it sets): sealed when the store rotates with a user
// read and the family's data fits.
func (b *Broker) issueRefresh(rec *sessions.RefreshToken) string {
	token := newRefreshToken(rec.FamilyID, rec.Subject)
	if _, can := b.sessions.(refreshRotatorWithUser); can && strings.Count(token, ".") == 2 {
		if seal, ok := b.sealFamily(rec); ok {
			token += "." + seal
		}
	}
	rec.Hash = hashToken(token)
	return token
}

// sealFamily is the seal of rec's family data; false when it is too large
// to carry.
func (b *Broker) sealFamily(rec *sessions.RefreshToken) (string, bool) {
	plain, err := json.Marshal(sealedFamily{
		Family: rec.FamilyID, Subject: rec.Subject, ClientID: rec.ClientID,
		Scopes: rec.Scopes, Audience: rec.Audience, AMR: rec.AMR, AuthTime: unixNanos(rec.AuthTime),
		FamilyExpiresAt: unixNanos(rec.FamilyExpiresAt), FamilyCreatedAt: unixNanos(rec.FamilyCreatedAt),
		SessionID: rec.SessionID, Upstream: rec.Upstream,
	})
	if err != nil || len(plain) > maxSealedFamily {
		return "", false
	}
	seal, err := b.refreshSeal.Encode(refreshSealName, plain)
	return seal, err == nil
}

// openSealedRefresh is the refresh grant's request for a sealed token, from
// its seal alone (nothing read: rotateSealed checks it with the store);
// nil for a token that is not sealed, whose seal does not open, or names
// another family or subject than the token, or when the store cannot
// rotate with a user read.
func (b *Broker) openSealedRefresh(token string) *refreshRequest {
	if _, can := b.sessions.(refreshRotatorWithUser); !can {
		return nil
	}
	rest, ok := strings.CutPrefix(token, refreshTokenPrefix)
	parts := strings.Split(rest, ".")
	if !ok || len(parts) != 4 || parts[2] == "" {
		return nil
	}
	var plain []byte
	var f sealedFamily
	if b.refreshSeal.Decode(refreshSealName, parts[3], &plain) != nil || json.Unmarshal(plain, &f) != nil ||
		f.Family == "" || f.Family != parts[0] || f.Subject == "" || f.Subject != parts[1] {
		return nil
	}
	rt := &sessions.RefreshToken{
		Hash: hashToken(token), FamilyID: f.Family, Subject: f.Subject, ClientID: f.ClientID,
		Scopes: f.Scopes, Audience: f.Audience, AMR: f.AMR, AuthTime: fromUnixNanos(f.AuthTime),
		FamilyExpiresAt: fromUnixNanos(f.FamilyExpiresAt), FamilyCreatedAt: fromUnixNanos(f.FamilyCreatedAt),
		SessionID: f.SessionID, Upstream: f.Upstream,
	}
	return &refreshRequest{rt: rt, scopes: rt.Scopes, sealed: true}
}

// rotateSealed rotates the sealed token of r, checked by the client and
// scopes already, in one store trip that reads the subject's user and grant
// too, then checks what readClaimsFirst checks: a refusal then revokes the
// family (its successor was just stored).
func (b *Broker) rotateSealed(ctx context.Context, r *refreshRequest) (jti, refresh string, exp time.Time, err error) {
	now := b.now()
	next := b.nextLink(r, now)
	refresh = b.issueRefresh(next)
	ug, err := b.sessions.(refreshRotatorWithUser).RotateRefreshTokenWithUser(ctx, r.rt.Hash, next, r.rt.Subject)
	if err := b.rotationRefused(ctx, next, err); err != nil {
		return "", "", time.Time{}, err
	}
	keepUserRead(ctx, ug)
	if err := b.claimsAfterWrite(ctx, r.rt.Subject, issuedAt(r), next.FamilyID, "a refused refresh"); err != nil {
		return "", "", time.Time{}, err
	}
	return accessTokenID(next.FamilyID, now), refresh, now.Add(b.opts.Tokens.Access), nil
}
