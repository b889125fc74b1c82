package devidp

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/md5"
	"crypto/rand"
	"crypto/rsa"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

const (
	authRequestLifetime = time.Hour
	accessTokenLifetime = 24 * time.Hour // Auth0's default for an API-less access token
	sessionLifetime     = 7 * 24 * time.Hour
	idTokenLifetime     = 10 * time.Hour // Auth0's default
)

// identity is one account of one connection, as Auth0 keeps them: the same
// email under two connections is two identities with two subjects.
type identity struct {
	sub           string
	connection    string
	email         string // database connection: lower case; social: as the provider gave it
	password      string // database connection only; plain text is fine for a dev stand-in
	name          string
	emailVerified bool
}

func (u *identity) nickname() string {
	local, _, _ := strings.Cut(u.email, "@")
	return local
}

// picture mimics Auth0's gravatar URL: any stable URL will do.
func (u *identity) picture() string {
	sum := md5.Sum([]byte(u.email))
	return "https://s.gravatar.com/avatar/" + hex.EncodeToString(sum[:]) + "?s=480&r=pg&d=identicon"
}

// browserSession is what the devidp session cookie points at.
type browserSession struct {
	sub        string
	connection string
	authTime   time.Time
	amr        []string
	expires    time.Time
}

type accessToken struct {
	clientID string
	sub      string
	scopes   []string
	expires  time.Time
}

// store implements op.Storage in memory, plus the users and browser
// sessions of the login UI. One mutex guards everything: a dev stand-in
// does not need finer locking.
type store struct {
	mu           sync.Mutex
	clients      map[string]*client
	users        map[string]*identity // by sub
	logins       map[string]string    // connection + "\x00" + email → sub
	authRequests map[string]*authRequest
	codes        map[string]string // code → auth request ID
	tokens       map[string]*accessToken
	sessions     map[string]*browserSession
	lastPurge    time.Time
	misbehavior  Misbehavior
	actionClaims map[string]any // SetIDTokenClaims
	orgs         []Organization
	orgNames     bool // Config.OrganizationNames

	keyID string
	alg   jose.SignatureAlgorithm // RS256 (Auth0's) unless Config.SigningAlg says ES256
	key   crypto.Signer
	// rogueKey signs ID tokens under Misbehavior.BadSignature: same key ID
	// as the published key, different key material, so verifiers find "the"
	// key and the signature check itself fails. Generated on first use.
	rogueOnce sync.Once
	rogueKey  crypto.Signer
	rogueErr  error
}

var (
	_ op.Storage                   = (*store)(nil)
	_ op.CanSetUserinfoFromRequest = (*store)(nil)
)

func newStore(clients []Client, alg jose.SignatureAlgorithm) (*store, error) {
	key, err := generateSigningKey(alg)
	if err != nil {
		return nil, fmt.Errorf("devidp: generate signing key: %w", err)
	}
	s := &store{
		clients:      make(map[string]*client, len(clients)),
		users:        make(map[string]*identity),
		logins:       make(map[string]string),
		authRequests: make(map[string]*authRequest),
		codes:        make(map[string]string),
		tokens:       make(map[string]*accessToken),
		sessions:     make(map[string]*browserSession),
		keyID:        rand.Text(),
		alg:          alg,
		key:          key,
	}
	for i, c := range clients {
		switch {
		case c.ID == "":
			return nil, fmt.Errorf("devidp: Clients[%d].ID is empty", i)
		case c.Secret == "":
			return nil, fmt.Errorf("devidp: Clients[%d].Secret is empty (clients are confidential)", i)
		case len(c.RedirectURIs) == 0:
			return nil, fmt.Errorf("devidp: Clients[%d].RedirectURIs is empty", i)
		}
		if _, dup := s.clients[c.ID]; dup {
			return nil, fmt.Errorf("devidp: Clients[%d].ID %q is a duplicate", i, c.ID)
		}
		s.clients[c.ID] = &client{
			id:                     c.ID,
			secret:                 c.Secret,
			redirectURIs:           slices.Clone(c.RedirectURIs),
			postLogoutRedirectURIs: slices.Clone(c.PostLogoutRedirectURIs),
		}
	}
	return s, nil
}

func (s *store) setMisbehavior(m Misbehavior) {
	s.mu.Lock()
	s.misbehavior = m
	s.mu.Unlock()
}

func (s *store) getMisbehavior() Misbehavior {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.misbehavior
}

// --- browser sessions ---

func (s *store) newSession(sess browserSession) string {
	id := rand.Text()
	sess.expires = time.Now().Add(sessionLifetime)
	s.mu.Lock()
	s.sessions[id] = &sess
	s.mu.Unlock()
	return id
}

// session returns a live session whose identity still exists.
func (s *store) session(id string) (browserSession, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.sessions[id]
	if !ok {
		return browserSession{}, false
	}
	if time.Now().After(sess.expires) {
		delete(s.sessions, id)
		return browserSession{}, false
	}
	if _, ok := s.users[sess.sub]; !ok {
		return browserSession{}, false
	}
	return *sess, true
}

func (s *store) deleteSession(id string) {
	s.mu.Lock()
	delete(s.sessions, id)
	s.mu.Unlock()
}

// --- auth requests ---

// purgeLocked drops expired state at most once a minute, so an
// always-running `usher dev` does not grow without bound.
func (s *store) purgeLocked(now time.Time) {
	if now.Sub(s.lastPurge) < time.Minute {
		return
	}
	s.lastPurge = now
	for id, r := range s.authRequests {
		if now.Sub(r.created) > authRequestLifetime {
			delete(s.authRequests, id)
		}
	}
	for code, id := range s.codes {
		if _, ok := s.authRequests[id]; !ok {
			delete(s.codes, code)
		}
	}
	for id, t := range s.tokens {
		if now.After(t.expires) {
			delete(s.tokens, id)
		}
	}
	for id, sess := range s.sessions {
		if now.After(sess.expires) {
			delete(s.sessions, id)
		}
	}
}

// authorizeExtras carries the Auth0 parameters that oidc.AuthRequest does
// not decode, from the /authorize handler to CreateAuthRequest.
type authorizeExtras struct {
	connection   string
	screenHint   string
	organization string
}

type authorizeExtrasKey struct{}

func (s *store) CreateAuthRequest(ctx context.Context, req *oidc.AuthRequest, _ string) (op.AuthRequest, error) {
	// The library accepts PKCE "plain"; Auth0 (and usher) only use S256.
	if req.CodeChallenge != "" && req.CodeChallengeMethod != oidc.CodeChallengeMethodS256 {
		return nil, oidc.ErrInvalidRequest().WithDescription("code_challenge_method must be S256")
	}
	extras, _ := ctx.Value(authorizeExtrasKey{}).(authorizeExtras)
	var org *Organization
	if extras.organization != "" {
		o, err := s.findOrganization(extras.organization)
		if err != nil {
			return nil, err
		}
		org = o
	}
	ar := &authRequest{
		id:           rand.Text(),
		created:      time.Now(),
		clientID:     req.ClientID,
		redirectURI:  req.RedirectURI,
		state:        req.State,
		nonce:        req.Nonce,
		scopes:       slices.Clone([]string(req.Scopes)),
		responseType: req.ResponseType,
		responseMode: req.ResponseMode,
		prompt:       slices.Clone([]string(req.Prompt)),
		loginHint:    req.LoginHint,
		uiLocales:    req.UILocales,
		connection:   extras.connection,
		screenHint:   extras.screenHint,
		org:          org,
	}
	if req.CodeChallenge != "" {
		ar.codeChallenge = &oidc.CodeChallenge{Challenge: req.CodeChallenge, Method: req.CodeChallengeMethod}
	}
	if req.MaxAge != nil {
		d := time.Duration(*req.MaxAge) * time.Second
		ar.maxAge = &d
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.purgeLocked(ar.created)
	s.authRequests[ar.id] = ar
	return ar.snapshot(), nil
}

// authRequest returns a copy: the library reads requests without our lock,
// so it never gets a pointer that the login UI might write to.
func (s *store) authRequest(id string) (*authRequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ar, ok := s.authRequests[id]
	if !ok || time.Since(ar.created) > authRequestLifetime {
		return nil, errUnknownRequest
	}
	return ar.snapshot(), nil
}

// finishAuthRequest records who signed in; the library issues the code.
func (s *store) finishAuthRequest(id string, sess browserSession) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ar, ok := s.authRequests[id]
	if !ok || time.Since(ar.created) > authRequestLifetime {
		return errUnknownRequest
	}
	ar.sub = sess.sub
	ar.authTime = sess.authTime.Add(-s.misbehavior.StaleAuthTime)
	ar.amr = slices.Clone(sess.amr)
	ar.done = true
	return nil
}

func (s *store) AuthRequestByID(_ context.Context, id string) (op.AuthRequest, error) {
	return s.authRequest(id)
}

func (s *store) AuthRequestByCode(_ context.Context, code string) (op.AuthRequest, error) {
	s.mu.Lock()
	id, ok := s.codes[code]
	s.mu.Unlock()
	if !ok {
		return nil, errors.New("code invalid or expired")
	}
	return s.authRequest(id)
}

func (s *store) SaveAuthCode(_ context.Context, id, code string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.authRequests[id]; !ok {
		return errUnknownRequest
	}
	s.codes[code] = id
	return nil
}

func (s *store) DeleteAuthRequest(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.authRequests, id)
	for code, reqID := range s.codes {
		if reqID == id {
			delete(s.codes, code)
		}
	}
	return nil
}

// --- tokens ---

func (s *store) CreateAccessToken(_ context.Context, req op.TokenRequest) (string, time.Time, error) {
	var clientID string
	if c, ok := req.(interface{ GetClientID() string }); ok {
		clientID = c.GetClientID()
	}
	id := rand.Text()
	exp := time.Now().Add(accessTokenLifetime)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[id] = &accessToken{clientID: clientID, sub: req.GetSubject(), scopes: slices.Clone(req.GetScopes()), expires: exp}
	return id, exp, nil
}

// Refresh tokens are not offered (clients are not given the grant type), so
// the library never calls these two for a code flow.
func (s *store) CreateAccessAndRefreshTokens(context.Context, op.TokenRequest, string) (string, string, time.Time, error) {
	return "", "", time.Time{}, oidc.ErrUnsupportedGrantType().WithDescription("devidp does not issue refresh tokens")
}

func (s *store) TokenRequestByRefreshToken(context.Context, string) (op.RefreshTokenRequest, error) {
	return nil, op.ErrInvalidRefreshToken
}

func (s *store) GetRefreshTokenInfo(context.Context, string, string) (string, string, error) {
	return "", "", op.ErrInvalidRefreshToken
}

func (s *store) TerminateSession(_ context.Context, userID, clientID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, t := range s.tokens {
		if t.sub == userID && t.clientID == clientID {
			delete(s.tokens, id)
		}
	}
	return nil
}

func (s *store) RevokeToken(_ context.Context, tokenID, _, clientID string) *oidc.Error {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tokens[tokenID]
	if !ok {
		return nil // unknown tokens count as revoked (RFC 7009)
	}
	if t.clientID != clientID {
		return oidc.ErrInvalidClient().WithDescription("token was not issued to this client")
	}
	delete(s.tokens, tokenID)
	return nil
}

// --- keys ---

// generateSigningKey makes a key for alg: RS256 (a 2048-bit RSA key, as
// Auth0's) or ES256 (P-256).
func generateSigningKey(alg jose.SignatureAlgorithm) (crypto.Signer, error) {
	switch alg {
	case jose.RS256:
		return rsa.GenerateKey(rand.Reader, 2048)
	case jose.ES256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	return nil, fmt.Errorf("devidp: signing algorithm %q: want RS256 or ES256", alg)
}

type signingKey struct {
	id  string
	alg jose.SignatureAlgorithm
	key crypto.Signer
}

func (k signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return k.alg }
func (k signingKey) Key() any                                    { return k.key }
func (k signingKey) ID() string                                  { return k.id }

type publicKey struct {
	id  string
	alg jose.SignatureAlgorithm
	key crypto.PublicKey
}

func (k publicKey) ID() string                         { return k.id }
func (k publicKey) Algorithm() jose.SignatureAlgorithm { return k.alg }
func (k publicKey) Use() string                        { return "sig" }
func (k publicKey) Key() any                           { return k.key }

// SigningKey is what the library signs with; KeySet is what it publishes.
// Under Misbehavior.BadSignature the two differ.
func (s *store) SigningKey(context.Context) (op.SigningKey, error) {
	if !s.getMisbehavior().BadSignature {
		return signingKey{id: s.keyID, alg: s.alg, key: s.key}, nil
	}
	s.rogueOnce.Do(func() {
		s.rogueKey, s.rogueErr = generateSigningKey(s.alg)
	})
	if s.rogueErr != nil {
		return nil, s.rogueErr
	}
	return signingKey{id: s.keyID, alg: s.alg, key: s.rogueKey}, nil
}

func (s *store) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{s.alg}, nil
}

func (s *store) KeySet(context.Context) ([]op.Key, error) {
	return []op.Key{publicKey{id: s.keyID, alg: s.alg, key: s.key.Public()}}, nil
}

// --- clients ---

func (s *store) GetClientByClientID(_ context.Context, clientID string) (op.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.clients[clientID]
	if !ok {
		return nil, fmt.Errorf("unknown client %q", clientID)
	}
	return c, nil
}

func (s *store) AuthorizeClientIDSecret(_ context.Context, clientID, secret string) error {
	s.mu.Lock()
	c, ok := s.clients[clientID]
	s.mu.Unlock()
	if !ok || subtle.ConstantTimeCompare([]byte(c.secret), []byte(secret)) != 1 {
		return errors.New("invalid client credentials")
	}
	return nil
}
