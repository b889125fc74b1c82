package config

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/url"
	"strings"
)

// Client is a relying party of usher.
type Client struct {
	ID   string `yaml:"id"`
	Name string `yaml:"name"`
	Type string `yaml:"type"` // public|confidential
	// Secret is the plain secret; Validate hashes it into SecretSHA256 and
	// clears it. Also settable as USHER_CLIENT_<ID>_SECRET.
	Secret string `yaml:"secret" usher:"secret"`
	// SecretSHA256 is the lower-case hex SHA-256 of the secret.
	SecretSHA256           string   `yaml:"secret_sha256" usher:"secret"`
	RedirectURIs           []string `yaml:"redirect_uris"`
	PostLogoutRedirectURIs []string `yaml:"post_logout_redirect_uris"`
	InitiateLoginURI       string   `yaml:"initiate_login_uri"`
	AllowedOrigins         []string `yaml:"allowed_origins"`
	GrantTypes             []string `yaml:"grant_types"`
	// Audiences: APIs this client may ask access tokens for (`audience`).
	Audiences []string `yaml:"audiences"`
	// Scopes a confidential client may request with client_credentials.
	Scopes []string `yaml:"scopes"`
	// ResourceServer: the client may introspect tokens issued to other clients.
	ResourceServer bool `yaml:"resource_server"`
	// ForwardInvitation: the redirect to initiate_login_uri carries
	// `invitation=<reference>` (short-lived, single use, never the token) for
	// apps that forward it to /authorize. Off: the browser's encrypted cookie
	// carries the invitation, and nothing lands in the app's URL.
	ForwardInvitation bool `yaml:"forward_invitation"`
	// IDTokenSignedResponseAlg signs this client's ID tokens (OpenID Connect
	// Registration's id_token_signed_response_alg): RS256 by default, which
	// every OIDC library accepts (auth0-spa-js accepts nothing else).
	IDTokenSignedResponseAlg string `yaml:"id_token_signed_response_alg"`

	// secretLen is the length of the plain secret that was hashed, kept so
	// that a later Validate still knows whether it was low-entropy.
	secretLen int
}

// IsPublic reports whether the client is a public client (no secret).
func (c Client) IsPublic() bool { return c.Type == ClientPublic }

// HasGrant reports whether the client may use the grant type.
func (c Client) HasGrant(g string) bool {
	for _, x := range c.GrantTypes {
		if x == g {
			return true
		}
	}
	return false
}

// CheckSecret compares sha256(secret) with SecretSHA256 in constant time.
func (c Client) CheckSecret(secret string) bool {
	if secret == "" {
		return false
	}
	var want []byte
	if c.SecretSHA256 != "" {
		b, err := hex.DecodeString(c.SecretSHA256)
		if err != nil || len(b) != sha256.Size {
			return false
		}
		want = b
	} else if c.Secret != "" { // not yet normalized by Validate
		h := sha256.Sum256([]byte(c.Secret))
		want = h[:]
	} else {
		return false
	}
	got := sha256.Sum256([]byte(secret))
	return subtle.ConstantTimeCompare(got[:], want) == 1
}

// Origins returns the CORS origins of the client: allowed_origins, or when
// that is empty the distinct origins of its http(s) redirect URIs.
func (c Client) Origins() []string {
	if len(c.AllowedOrigins) > 0 {
		return append([]string(nil), c.AllowedOrigins...)
	}
	var out []string
	seen := map[string]bool{}
	for _, r := range c.RedirectURIs {
		u, err := url.Parse(r)
		if err != nil || u.Host == "" {
			continue
		}
		s := strings.ToLower(u.Scheme)
		if s != "http" && s != "https" {
			continue
		}
		o := s + "://" + strings.ToLower(u.Host)
		if !seen[o] {
			seen[o] = true
			out = append(out, o)
		}
	}
	return out
}

// ClientSecretEnv is the environment variable that sets the secret of the
// client with the given ID: USHER_CLIENT_<ID>_SECRET, ID upper-cased with
// every non-alphanumeric replaced by "_".
func ClientSecretEnv(id string) string {
	var b strings.Builder
	b.WriteString("USHER_CLIENT_")
	for _, r := range id {
		switch {
		case r >= 'a' && r <= 'z':
			b.WriteRune(r - 'a' + 'A')
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	b.WriteString("_SECRET")
	return b.String()
}
