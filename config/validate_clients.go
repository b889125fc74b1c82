package config

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

var (
	clientIDRe   = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
	cookieNameRe = regexp.MustCompile("^[!#$%&'*+\\-.^_`|~0-9A-Za-z]+$")
	// RFC 6749 §3.3 scope-token.
	scopeRe = regexp.MustCompile(`^[\x21\x23-\x5B\x5D-\x7E]+$`)
)

func (c *Config) checkClients(p *problems) {
	seen := map[string]int{}
	for i := range c.Clients {
		cl := &c.Clients[i]
		path := fmt.Sprintf("clients[%d]", i)
		checkClientID(p, path, i, cl.ID, seen)
		switch cl.IDTokenSignedResponseAlg {
		case "RS256", "ES256", "EdDSA":
		default:
			p.add(path+".id_token_signed_response_alg", "%q must be one of RS256, ES256, EdDSA", cl.IDTokenSignedResponseAlg)
		}
		validGrants := checkGrantTypes(p, path, cl.GrantTypes)
		c.checkClientType(p, path, cl, validGrants)
		if cl.HasGrant(GrantRefreshToken) && !cl.HasGrant(GrantAuthorizationCode) {
			p.add(path+".grant_types", "refresh_token requires authorization_code")
		}
		checkClientURLs(p, path, cl)
		checkClientScopes(p, path, cl)
	}
}

// checkClientID checks clients[i].id; seen maps the IDs met so far to
// their index, to report duplicates.
func checkClientID(p *problems, path string, i int, id string, seen map[string]int) {
	switch {
	case id == "":
		p.add(path+".id", "required")
	case !clientIDRe.MatchString(id):
		p.add(path+".id", "%q may contain only letters, digits, '.', '_' and '-'", id)
	default:
		if j, dup := seen[id]; dup {
			p.add(path+".id", "%q duplicates clients[%d].id", id, j)
		} else {
			seen[id] = i
		}
	}
}

// checkGrantTypes reports whether every grant type is one usher knows.
func checkGrantTypes(p *problems, path string, grantTypes []string) bool {
	valid := true
	for j, g := range grantTypes {
		switch g {
		case GrantAuthorizationCode, GrantRefreshToken, GrantClientCredentials:
		default:
			valid = false
			p.add(fmt.Sprintf("%s.grant_types[%d]", path, j), "%q must be one of authorization_code, refresh_token, client_credentials", g)
		}
	}
	return valid
}

// checkClientType checks the client's type and what it requires: a public
// client has no secret and signs people in; a confidential one has a secret.
func (c *Config) checkClientType(p *problems, path string, cl *Client, validGrants bool) {
	switch cl.Type {
	case ClientPublic:
		if cl.SecretSHA256 != "" && cl.secretLen == 0 {
			p.add(path+".secret_sha256", "a public client must not have a secret")
		}
		if len(cl.RedirectURIs) == 0 {
			p.add(path+".redirect_uris", "a public client needs at least one redirect URI")
		}
		if cl.HasGrant(GrantClientCredentials) {
			p.add(path+".grant_types", "a public client cannot use client_credentials")
		}
	case ClientConfidential:
		c.checkConfidentialClient(p, path, cl, validGrants)
	case "":
		p.add(path+".type", "required: public or confidential")
	default:
		p.add(path+".type", "%q must be public or confidential", cl.Type)
	}
}

// checkConfidentialClient checks a confidential client's secret (or its
// hash) and, when it signs people in, its redirect URIs.
func (c *Config) checkConfidentialClient(p *problems, path string, cl *Client, validGrants bool) {
	if cl.SecretSHA256 == "" {
		p.add(path+".secret", "required for a confidential client (or secret_sha256); set %s in the environment; generate one with `openssl rand -base64 32`", ClientSecretEnv(cl.ID))
	} else if cl.secretLen == 0 {
		if b, err := hex.DecodeString(cl.SecretSHA256); err != nil || len(b) != sha256.Size {
			p.add(path+".secret_sha256", "must be the 64-character hex SHA-256 of the secret")
		}
	}
	if cl.secretLen > 0 && cl.secretLen < MinClientSecretLen && !c.Dev {
		p.add(path+".secret", "too short (%d characters, need at least %d, about 128 bits): generate one with `openssl rand -base64 32`", cl.secretLen, MinClientSecretLen)
	}
	if validGrants && cl.HasGrant(GrantAuthorizationCode) && len(cl.RedirectURIs) == 0 {
		p.add(path+".redirect_uris", "a client with the authorization_code grant needs at least one redirect URI")
	}
}

// checkClientURLs checks the client's redirect URIs, post-logout redirect
// URIs, initiate_login_uri and CORS origins.
func checkClientURLs(p *problems, path string, cl *Client) {
	for j, r := range cl.RedirectURIs {
		checkClientURL(p, fmt.Sprintf("%s.redirect_uris[%d]", path, j), r)
	}
	for j, r := range cl.PostLogoutRedirectURIs {
		checkClientURL(p, fmt.Sprintf("%s.post_logout_redirect_uris[%d]", path, j), r)
	}
	if cl.InitiateLoginURI != "" {
		checkClientURL(p, path+".initiate_login_uri", cl.InitiateLoginURI)
	}
	for j, o := range cl.AllowedOrigins {
		checkOrigin(p, fmt.Sprintf("%s.allowed_origins[%d]", path, j), o)
	}
}

// checkClientScopes checks the scopes the client may ask for (and that no
// client signing people in may ask for the admin API's) and its audiences.
func checkClientScopes(p *problems, path string, cl *Client) {
	for j, s := range cl.Scopes {
		if !scopeRe.MatchString(s) {
			p.add(fmt.Sprintf("%s.scopes[%d]", path, j), "%q is not a valid scope", s)
		}
	}
	checkAdminScopes(p, path, cl)
	for j, a := range cl.Audiences {
		if a == "" || strings.ContainsAny(a, " \t\n") || len(a) > 200 {
			p.add(fmt.Sprintf("%s.audiences[%d]", path, j), "%q must be an API identifier such as https://api.example.com/ (no spaces)", a)
		}
	}
}

// checkClientURL checks a redirect-like URI: absolute, no fragment, no
// wildcard, https unless the host is loopback.
func checkClientURL(p *problems, path, raw string) {
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" || u.Hostname() == "" || strings.Contains(raw, "#") {
		p.add(path, "%q must be an absolute URL without a fragment", raw)
		return
	}
	if strings.Contains(raw, "*") {
		p.add(path, "%q must not contain wildcards (\"*\"): redirect URIs are matched exactly", raw)
		return
	}
	if u.User != nil {
		p.add(path, "%q must not contain credentials", raw)
		return
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
	case "http":
		if !isLoopback(u.Hostname()) {
			p.add(path, "%q must use https: %s", raw, loopbackNote)
		}
	default:
		p.add(path, "%q must use https (or http on a loopback host)", raw)
	}
}

// checkOrigin checks a CORS origin: scheme://host[:port] and nothing else.
func checkOrigin(p *problems, path, raw string) {
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" || u.Hostname() == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || strings.ContainsAny(raw, "?#*") {
		p.add(path, "%q must be an origin such as https://app.example.com (scheme, host and optional port only)", raw)
		return
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
	case "http":
		if !isLoopback(u.Hostname()) {
			p.add(path, "%q must use https: %s", raw, loopbackNote)
		}
	default:
		p.add(path, "%q must be an http(s) origin", raw)
	}
}

// checkAdminScopes: the admin API's scopes (invitations:*, store:*) belong
// to machine clients only. A client that signs people in and may ask for
// them would hand a person a token the admin API's scope check accepts
// (issue 10).
func checkAdminScopes(p *problems, path string, cl *Client) {
	interactive := cl.IsPublic() || cl.HasGrant(GrantAuthorizationCode) || cl.HasGrant(GrantRefreshToken)
	if !interactive {
		return
	}
	for j, s := range cl.Scopes {
		if strings.HasPrefix(s, "invitations:") || strings.HasPrefix(s, "store:") {
			p.add(fmt.Sprintf("%s.scopes[%d]", path, j), "%q is for the admin API: give it to a separate confidential client with only the client_credentials grant, not to a client that signs people in", s)
		}
	}
}
