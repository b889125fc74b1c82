package devidp

// The tenant's accounts: database users with passwords, social sign-ins,
// and the subjects Auth0 gives them.

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// Connection names, as Auth0 spells them. They are the prefix of the
// identities' subjects too ("auth0|…" for the database connection).
const (
	ConnectionPassword = "Username-Password-Authentication"
	ConnectionGoogle   = "google-oauth2"
	ConnectionFacebook = "facebook"
)

var (
	errUserExists     = errors.New("user already exists")
	errWrongPassword  = errors.New("wrong email or password")
	errUnknownRequest = errors.New("unknown or expired login request")
)

func normalizeEmail(email string) string {
	return strings.ToLower(strings.TrimSpace(email))
}

func loginKey(connection, email string) string {
	return connection + "\x00" + email
}

func validEmail(email string) bool {
	local, domain, ok := strings.Cut(email, "@")
	return ok && local != "" && domain != "" && !strings.ContainsAny(email, " \t\r\n")
}

// socialSub derives a subject from the email so the same email gets the same
// subject on every sign-in (and in every devidp instance), like a real
// Google or Facebook account ID would.
func socialSub(connection, email string, digits int) string {
	sum := sha256.Sum256([]byte(connection + "|" + email))
	n := new(big.Int).SetBytes(sum[:])
	n.Mod(n, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(digits-1)), nil))
	// A leading 1 keeps the width fixed, as real IDs have no leading zero.
	return fmt.Sprintf("%s|1%0*s", connection, digits-1, n.String())
}

// addPasswordUser creates a database-connection identity.
func (s *store) addPasswordUser(u User) (string, error) {
	email := normalizeEmail(u.Email)
	if !validEmail(email) {
		return "", fmt.Errorf("devidp: invalid email %q", u.Email)
	}
	if u.Password == "" {
		return "", errors.New("devidp: password is required")
	}
	name := strings.TrimSpace(u.Name)
	if name == "" {
		name = email // Auth0 defaults a database user's name to the email
	}
	conn := strings.TrimSpace(u.Connection)
	if conn == "" {
		conn = ConnectionPassword
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.logins[loginKey(conn, email)]; ok {
		return "", errUserExists
	}
	b := make([]byte, 12)
	rand.Read(b)
	id := &identity{
		sub:           "auth0|" + hex.EncodeToString(b),
		connection:    conn,
		email:         email,
		password:      u.Password,
		name:          name,
		emailVerified: u.EmailVerified,
	}
	s.users[id.sub] = id
	s.logins[loginKey(conn, email)] = id.sub
	return id.sub, nil
}

// checkPassword returns the subject of the database user with that email and password.
func (s *store) checkPassword(email, password string) (string, error) {
	email = normalizeEmail(email)
	s.mu.Lock()
	defer s.mu.Unlock()
	sub, ok := s.logins[loginKey(ConnectionPassword, email)]
	if !ok {
		// Another database connection's user (devidp has one login form).
		for _, u := range s.users {
			if u.password != "" && u.email == email {
				sub, ok = u.sub, true
				break
			}
		}
	}
	if !ok {
		return "", errWrongPassword
	}
	if subtle.ConstantTimeCompare([]byte(s.users[sub].password), []byte(password)) != 1 {
		return "", errWrongPassword
	}
	return sub, nil
}

// socialSignIn creates or refreshes a simulated social identity. The
// verified flag belongs to this sign-in (some Facebook accounts have an
// unverified email), so it overwrites what an earlier sign-in said.
//
// Auth0 lowercases the emails of its database connection only; a social or
// enterprise identity keeps its email as the provider gave it ("In cases
// where Auth0 is not the idP, the email is stored based on the rules of
// idP", https://auth0.com/docs/api/management/v2/users-by-email/get-users-by-email).
func (s *store) socialSignIn(connection, given, name string, verified bool) (string, error) {
	given = strings.TrimSpace(given)
	email := normalizeEmail(given)
	if !validEmail(email) {
		return "", fmt.Errorf("invalid email %q", email)
	}
	var sub string
	switch connection {
	case ConnectionGoogle:
		sub = socialSub(connection, email, 21)
	case ConnectionFacebook:
		sub = socialSub(connection, email, 16)
	default:
		return "", fmt.Errorf("unknown connection %q", connection)
	}
	name = strings.TrimSpace(name)
	s.mu.Lock()
	defer s.mu.Unlock()
	id, ok := s.users[sub]
	if !ok {
		id = &identity{sub: sub, connection: connection, email: given, name: given}
		s.users[sub] = id
		s.logins[loginKey(connection, email)] = sub
	}
	if name != "" {
		id.name = name
	}
	id.emailVerified = verified
	return sub, nil
}

func (s *store) userSub(connection, email string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sub, ok := s.logins[loginKey(connection, normalizeEmail(email))]
	return sub, ok
}

func (s *store) user(sub string) (identity, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.users[sub]
	if !ok {
		return identity{}, false
	}
	return *u, true
}
