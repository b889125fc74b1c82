package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

var (
	sessionSecret = base64.StdEncoding.EncodeToString(make32('s'))
	funnelSecret  = "Zm9vYmFyYmF6cXV4cXV1eHF1dXpxdXV6cXV1eA=="
)

func make32(b byte) []byte {
	out := make([]byte, 32)
	for i := range out {
		out[i] = b
	}
	return out
}

func sha256hex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// doc builds a YAML document from parts, each replacing a default section.
type doc struct {
	issuer   string // full "issuer: ..." line; "-" = omit
	upstream string // full "upstream:" block; "-" = omit
	clients  string // full "clients:" block; "-" = omit
	extra    string // any further top-level sections
}

func (d doc) String() string {
	var b strings.Builder
	switch d.issuer {
	case "":
		b.WriteString("issuer: https://login.example.com/\n")
	case "-":
	default:
		b.WriteString(d.issuer + "\n")
	}
	switch d.upstream {
	case "":
		b.WriteString("upstream:\n  auth0:\n    domain: tenant.eu.auth0.com\n    client_id: abc\n")
	case "-":
	default:
		b.WriteString(d.upstream + "\n")
	}
	switch d.clients {
	case "":
		b.WriteString(`clients:
  - id: spa
    type: public
    redirect_uris: [https://app.example.com/cb, "http://127.0.0.1:3000/cb"]
  - id: funnel
    type: confidential
    secret_sha256: ` + sha256hex(funnelSecret) + "\n")
	case "-":
	default:
		b.WriteString(d.clients + "\n")
	}
	b.WriteString(d.extra)
	return b.String()
}

func baseEnv() map[string]string {
	return map[string]string{"USHER_SESSIONS_SECRET": sessionSecret}
}

func TestDefault(t *testing.T) {
	t.Parallel()
	d := Default()
	checks := []struct {
		name string
		got  any
		want any
	}{
		{"listen", d.Listen, "127.0.0.1:8080"},
		{"log.level", d.Log.Level, "info"},
		{"log.format", d.Log.Format, "json"},
		{"store.driver", d.Store.Driver, "bolt"},
		{"store.path", d.Store.Path, "usher.db"},
		{"signing.algorithm", d.Signing.Algorithm, "ES256"},
		{"signing.rotation_period", d.Signing.RotationPeriod, Duration(0)},
		{"tokens.access_token_ttl", d.Tokens.AccessTokenTTL, Duration(10 * time.Minute)},
		{"tokens.id_token_ttl", d.Tokens.IDTokenTTL, Duration(time.Hour)},
		{"upstream.auth0.management.rate_limit", d.Upstream.Auth0.Management.RateLimit, ManagementRateLimit{PerSecond: 2, Burst: 5}},
		{"tokens.refresh_token_idle_ttl", d.Tokens.RefreshTokenIdleTTL, Duration(720 * time.Hour)},
		{"tokens.refresh_token_absolute_ttl", d.Tokens.RefreshTokenAbsoluteTTL, Duration(2160 * time.Hour)},
		{"tokens.auth_request_ttl", d.Tokens.AuthRequestTTL, Duration(10 * time.Minute)},
		{"tokens.code_ttl", d.Tokens.CodeTTL, Duration(60 * time.Second)},
		{"tokens.client_credentials_ttl", d.Tokens.ClientCredentialsTTL, Duration(time.Hour)},
		{"sessions.idle_timeout", d.Sessions.IdleTimeout, Duration(30 * time.Minute)},
		{"sessions.absolute_timeout", d.Sessions.AbsoluteTimeout, Duration(24 * time.Hour)},
		{"sessions.cookie_name", d.Sessions.CookieName, "usher_session"},
		{"upstream.scopes", d.Upstream.Scopes, []string{"openid", "profile", "email"}},
		{"invitations.default_ttl", d.Invitations.DefaultTTL, Duration(168 * time.Hour)},
		{"invitations.max_ttl", d.Invitations.MaxTTL, Duration(720 * time.Hour)},
		{"invitations.email_match", d.Invitations.EmailMatch, "any"},
		{"invitations.app_name", d.Invitations.AppName, "usher"},
		{"mail.smtp.port", d.Mail.SMTP.Port, 587},
		{"mail.smtp.tls", d.Mail.SMTP.TLS, "starttls"},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}

	// Defaults alone lack exactly the required fields.
	err := Default().Validate()
	for _, want := range []string{"issuer: required", "upstream: required", "sessions.secret: required"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Default().Validate() = %v, want it to mention %q", err, want)
		}
	}
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Errorf("errors are not *FieldError: %T", err)
	}

	// Load with no file: defaults + environment.
	c, err := Load("", envOf(map[string]string{
		"USHER_ISSUER":                 "http://127.0.0.1:8080/",
		"USHER_UPSTREAM_ISSUER":        "http://localhost:9000",
		"USHER_UPSTREAM_CLIENT_ID":     "usher",
		"USHER_UPSTREAM_CLIENT_SECRET": "s",
		"USHER_SESSIONS_SECRET":        sessionSecret,
	}))
	if err != nil {
		t.Fatalf("Load(\"\"): %v", err)
	}
	if c.Listen != "127.0.0.1:8080" || c.Upstream.EffectiveIssuer() != "http://localhost:9000" || c.Upstream.EffectiveClientSecret() != "s" {
		t.Errorf("Load(\"\") = %+v", c)
	}
}

func exampleEnv() map[string]string {
	return map[string]string{
		"USHER_SESSIONS_SECRET":              sessionSecret,
		"USHER_UPSTREAM_AUTH0_CLIENT_SECRET": "auth0-client-secret",
		"USHER_CLIENT_FUNNEL_SECRET":         funnelSecret,
		"USHER_MAIL_SMTP_PASSWORD":           "smtp-password",
		"USHER_WEBHOOK_CRM_SECRETS":          "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
	}
}

const examplePath = "../deploy/usher.example.yaml"

func TestExampleLoads(t *testing.T) {
	t.Parallel()
	c, err := Load(examplePath, envOf(exampleEnv()))
	if err != nil {
		t.Fatalf("Load(%s): %v", examplePath, err)
	}
	if got := c.Upstream.EffectiveIssuer(); got != "https://example.eu.auth0.com/" {
		t.Errorf("EffectiveIssuer = %q", got)
	}
	if c.Upstream.EffectiveClientSecret() != "auth0-client-secret" || c.Mail.SMTP.Password != "smtp-password" {
		t.Errorf("secrets from env not applied: %+v %+v", c.Upstream, c.Mail)
	}
	if len(c.Clients) != 2 {
		t.Fatalf("clients = %d", len(c.Clients))
	}
	f := c.Clients[1]
	if f.Secret != "" || !f.CheckSecret(funnelSecret) || f.CheckSecret("nope") {
		t.Errorf("funnel secret not hashed/checked: %+v", f)
	}
	if got := c.Clients[0].Origins(); !slices.Equal(got, []string{"https://app.example.com"}) {
		t.Errorf("Origins = %v", got)
	}
	if c.InvitationBaseURL() != "https://login.example.com/" {
		t.Errorf("InvitationBaseURL = %q", c.InvitationBaseURL())
	}

	// Without the environment it names what is missing.
	_, err = Load(examplePath, nil)
	for _, want := range []string{"sessions.secret:", "clients[1].secret:", "USHER_CLIENT_FUNNEL_SECRET"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Load without env = %v, want mention of %q", err, want)
		}
	}
}

// TestExampleDocumentsEveryKey: every key of Config appears in the example,
// with a comment, and the example has no key Config lacks.
func TestExampleDocumentsEveryKey(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		t.Fatal(err)
	}
	var walk func(n *yaml.Node, typ reflect.Type, path string)
	walk = func(n *yaml.Node, typ reflect.Type, path string) {
		if typ.Kind() == reflect.Slice && typ.Elem().Kind() == reflect.Struct {
			if n.Kind != yaml.SequenceNode || len(n.Content) == 0 {
				t.Errorf("%s: want a non-empty list", path)
				return
			}
			walk(n.Content[0], typ.Elem(), path+"[0]")
			return
		}
		if n.Kind != yaml.MappingNode {
			t.Errorf("%s: want a mapping", path)
			return
		}
		keys := map[string]*yaml.Node{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			keys[k.Value] = n.Content[i+1]
			commented := k.HeadComment != "" || k.LineComment != "" || n.Content[i+1].LineComment != "" ||
				(i == 0 && (n.HeadComment != "" || path == ""))
			if !commented {
				t.Errorf("%s: no comment", joinPath(path, k.Value))
			}
		}
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			name := yamlName(f)
			if name == "" {
				continue
			}
			v, ok := keys[name]
			if !ok {
				t.Errorf("%s: missing from the example", joinPath(path, name))
				continue
			}
			if (f.Type.Kind() == reflect.Struct && f.Type != durationType) ||
				(f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct) {
				walk(v, f.Type, joinPath(path, name))
			}
		}
	}
	walk(root.Content[0], configType, "")
}

func TestEnvOverrides(t *testing.T) {
	t.Parallel()
	y := doc{clients: `clients:
  - id: my.app-1
    type: confidential
    secret_sha256: ` + sha256hex("will be replaced") + `
  - id: spa
    type: public
    redirect_uris: [https://app.example.com/cb]`,
		extra: "store:\n  driver: redis\n  redis:\n    addrs: [\"r1:6379\"]\n"}.String()
	env := baseEnv()
	for k, v := range map[string]string{
		"USHER_LISTEN":                                          ":9090",
		"USHER_LOG_LEVEL":                                       "debug",
		"USHER_STORE_REDIS_PASSWORD":                            "redis-pw",
		"USHER_STORE_REDIS_DB":                                  "3",
		"USHER_STORE_REDIS_POOL_SIZE":                           "48",
		"USHER_STORE_REDIS_ADDRS":                               "a:1, b:2,,",
		"USHER_STORE_KEY_ENCRYPTION_KEY":                        base64.RawURLEncoding.EncodeToString(make32('k')),
		"USHER_TOKENS_CODE_TTL":                                 "30",
		"USHER_TOKENS_ACCESS_TOKEN_TTL":                         "5m",
		"USHER_UPSTREAM_SCOPES":                                 "openid,email",
		"USHER_UPSTREAM_LINK_BY_VERIFIED_EMAIL":                 "true",
		"USHER_UPSTREAM_AUTH0_CLIENT_SECRET":                    "a0",
		"USHER_UPSTREAM_AUTH0_MANAGEMENT_CLIENT_ID":             "mgmt",
		"USHER_UPSTREAM_AUTH0_MANAGEMENT_CLIENT_SECRET":         "mgmt-secret",
		"USHER_UPSTREAM_AUTH0_MANAGEMENT_CREATE_ROLES":          "1",
		"USHER_UPSTREAM_AUTH0_MANAGEMENT_RATE_LIMIT_PER_SECOND": "0.5",
		"USHER_UPSTREAM_AUTH0_MANAGEMENT_RATE_LIMIT_BURST":      "3",
		"USHER_MAIL_SMTP_PASSWORD":                              "smtp-pw",
		"USHER_MAIL_SMTP_PORT":                                  "465",
		"USHER_INVITATIONS_DEFAULT_TTL":                         "48h",
		"USHER_CLIENT_MY_APP_1_SECRET":                          funnelSecret,
	} {
		env[k] = v
	}
	c, err := Parse([]byte(y), envOf(env))
	if err != nil {
		t.Fatal(err)
	}
	got := []struct {
		name string
		got  any
		want any
	}{
		{"listen", c.Listen, ":9090"},
		{"log.level", c.Log.Level, "debug"},
		{"store.redis.password", c.Store.Redis.Password, "redis-pw"},
		{"store.redis.db", c.Store.Redis.DB, 3},
		{"store.redis.pool_size", c.Store.Redis.PoolSize, 48},
		{"store.redis.addrs", c.Store.Redis.Addrs, []string{"a:1", "b:2"}},
		{"tokens.code_ttl", c.Tokens.CodeTTL, Duration(30 * time.Second)},
		{"tokens.access_token_ttl", c.Tokens.AccessTokenTTL, Duration(5 * time.Minute)},
		{"upstream.scopes", c.Upstream.Scopes, []string{"openid", "email"}},
		{"upstream.link_by_verified_email", c.Upstream.LinkByVerifiedEmail, true},
		{"upstream.auth0.client_secret", c.Upstream.EffectiveClientSecret(), "a0"},
		{"upstream.auth0.management.client_secret", c.Upstream.Auth0.Management.ClientSecret, "mgmt-secret"},
		{"upstream.auth0.management.create_roles", c.Upstream.Auth0.Management.CreateRoles, true},
		{"upstream.auth0.management.rate_limit", c.Upstream.Auth0.Management.RateLimit, ManagementRateLimit{PerSecond: 0.5, Burst: 3}},
		{"mail.smtp.password", c.Mail.SMTP.Password, "smtp-pw"},
		{"mail.smtp.port", c.Mail.SMTP.Port, 465},
		{"invitations.default_ttl", c.Invitations.DefaultTTL, Duration(48 * time.Hour)},
		{"sessions.secret", c.Sessions.Secret, sessionSecret},
		{"client secret", c.Clients[0].CheckSecret(funnelSecret), true},
	}
	for _, g := range got {
		if !reflect.DeepEqual(g.got, g.want) {
			t.Errorf("%s = %#v, want %#v", g.name, g.got, g.want)
		}
	}
	if k, err := c.Store.KeyEncryptionKeyBytes(); err != nil || len(k) != 32 {
		t.Errorf("KeyEncryptionKeyBytes = %d bytes, %v", len(k), err)
	}

	names := EnvNames()
	for _, want := range []string{"USHER_ISSUER", "USHER_UPSTREAM_CLIENT_SECRET", "USHER_UPSTREAM_AUTH0_MANAGEMENT_CLIENT_SECRET",
		"USHER_STORE_REDIS_PASSWORD", "USHER_SESSIONS_SECRET", "USHER_MAIL_SMTP_PASSWORD", "USHER_STORE_KEY_ENCRYPTION_KEY",
		"USHER_SIGNING_KEY_FILES", "USHER_TOKENS_REFRESH_TOKEN_ABSOLUTE_TTL"} {
		if !slices.Contains(names, want) {
			t.Errorf("EnvNames lacks %s", want)
		}
	}
	if slices.Contains(names, "USHER_DEV") || slices.ContainsFunc(names, func(s string) bool { return strings.HasPrefix(s, "USHER_CLIENTS") }) {
		t.Errorf("EnvNames has unexpected entries: %v", names)
	}
}

func TestClientSecretEnv(t *testing.T) {
	t.Parallel()
	for id, want := range map[string]string{
		"funnel":   "USHER_CLIENT_FUNNEL_SECRET",
		"my.app-1": "USHER_CLIENT_MY_APP_1_SECRET",
		"A_b":      "USHER_CLIENT_A_B_SECRET",
	} {
		if got := ClientSecretEnv(id); got != want {
			t.Errorf("ClientSecretEnv(%q) = %q, want %q", id, got, want)
		}
	}
}

func writeKey(t *testing.T) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestValidBase(t *testing.T) {
	t.Parallel()
	key := writeKey(t)
	c, err := Parse([]byte(doc{extra: "signing:\n  key_files: [" + key + "]\n"}.String()), envOf(baseEnv()))
	if err != nil {
		t.Fatal(err)
	}
	// OpenID Connect Registration: without id_token_signed_response_alg, RS256.
	if c.Clients[0].IDTokenSignedResponseAlg != "RS256" {
		t.Errorf("default id_token_signed_response_alg = %q, want RS256", c.Clients[0].IDTokenSignedResponseAlg)
	}
	if !slices.Equal(c.Clients[0].GrantTypes, []string{"authorization_code", "refresh_token"}) ||
		!slices.Equal(c.Clients[1].GrantTypes, []string{"client_credentials"}) {
		t.Errorf("default grant types: %v %v", c.Clients[0].GrantTypes, c.Clients[1].GrantTypes)
	}
	if got := c.Clients[0].Origins(); !slices.Equal(got, []string{"https://app.example.com", "http://127.0.0.1:3000"}) {
		t.Errorf("Origins = %v", got)
	}
	if !c.Clients[1].CheckSecret(funnelSecret) {
		t.Error("CheckSecret with secret_sha256 failed")
	}
}

func TestInvalid(t *testing.T) {
	t.Parallel()
	shortSecretClients := `clients:
  - id: funnel
    type: confidential
    secret: tooshort`
	cases := []struct {
		name string
		yaml string
		env  map[string]string // added to baseEnv
		want []string          // substrings of the error
	}{
		{"bad issuer", doc{issuer: "issuer: not a url"}.String(), nil,
			[]string{`issuer: "not a url" must be an absolute http(s) URL`}},
		{"issuer with query", doc{issuer: "issuer: https://x.example/?a=b"}.String(), nil, []string{"issuer: "}},
		{"http non-loopback issuer", doc{issuer: "issuer: http://login.example.com/"}.String(), nil,
			[]string{`issuer: "http://login.example.com/" must use https`}},
		{"missing issuer", doc{issuer: "-"}.String(), nil, []string{"issuer: required"}},
		{"missing upstream", doc{upstream: "-"}.String(), nil, []string{"upstream: required"}},
		{"both upstreams", doc{upstream: "upstream:\n  issuer: https://idp.example.com\n  client_id: x\n  auth0:\n    domain: t.auth0.com\n    client_id: y"}.String(), nil,
			[]string{"upstream.auth0.domain: set either"}},
		{"generic upstream without client_id", doc{upstream: "upstream:\n  issuer: https://idp.example.com"}.String(), nil,
			[]string{"upstream.client_id: required"}},
		{"auth0 without client_id", doc{upstream: "upstream:\n  auth0:\n    domain: t.auth0.com"}.String(), nil,
			[]string{"upstream.auth0.client_id: required"}},
		{"auth0 domain with path", doc{upstream: "upstream:\n  auth0:\n    domain: t.auth0.com/x\n    client_id: y"}.String(), nil,
			[]string{"upstream.auth0.domain: "}},
		{"upstream scopes without openid", doc{extra: ""}.String() + "", map[string]string{"USHER_UPSTREAM_SCOPES": "email"},
			[]string{"upstream.scopes: must include openid"}},
		{"management domain with path", doc{upstream: "upstream:\n  auth0:\n    domain: login.example.com\n    client_id: y\n    management:\n      domain: t.eu.auth0.com/api/v2"}.String(), nil,
			[]string{"upstream.auth0.management.domain: "}},
		{"management domain without auth0", doc{upstream: "upstream:\n  issuer: https://idp.example.com\n  client_id: x\n  auth0:\n    management:\n      domain: t.eu.auth0.com"}.String(), nil,
			[]string{"upstream.auth0.management.domain: only applies"}},
		{"issuer alias not a URL", doc{upstream: "upstream:\n  auth0:\n    domain: login.example.com\n    client_id: y\n  issuer_aliases: [old-tenant]"}.String(), nil,
			[]string{"upstream.issuer_aliases[0]: "}},
		{"management rate limit out of range", doc{upstream: "upstream:\n  auth0:\n    domain: t.eu.auth0.com\n    client_id: y\n    management:\n      rate_limit: {per_second: -1, burst: 5000}"}.String(), nil,
			[]string{"upstream.auth0.management.rate_limit.per_second: must be more than 0", "upstream.auth0.management.rate_limit.burst: must be between 1 and 1000"}},
		{"management rate limit not a number", doc{}.String(), map[string]string{"USHER_UPSTREAM_AUTH0_MANAGEMENT_RATE_LIMIT_PER_SECOND": "fast"},
			[]string{"USHER_UPSTREAM_AUTH0_MANAGEMENT_RATE_LIMIT_PER_SECOND: invalid number"}},
		{"management secret without id", doc{}.String(), map[string]string{"USHER_UPSTREAM_AUTH0_MANAGEMENT_CLIENT_SECRET": "x"},
			[]string{"upstream.auth0.management.client_id: required"}},
		{"duplicate client id", doc{clients: "clients:\n  - {id: a, type: public, redirect_uris: [https://a.example/cb]}\n  - {id: a, type: public, redirect_uris: [https://a.example/cb]}"}.String(), nil,
			[]string{`clients[1].id: "a" duplicates clients[0].id`}},
		{"bad client id", doc{clients: "clients:\n  - {id: 'a b', type: public, redirect_uris: [https://a.example/cb]}"}.String(), nil,
			[]string{"clients[0].id: "}},
		{"missing client id", doc{clients: "clients:\n  - {type: public, redirect_uris: [https://a.example/cb]}"}.String(), nil,
			[]string{"clients[0].id: required"}},
		{"missing client type", doc{clients: "clients:\n  - {id: a, redirect_uris: [https://a.example/cb]}"}.String(), nil,
			[]string{"clients[0].type: required"}},
		{"public client with secret", doc{clients: "clients:\n  - {id: a, type: public, secret: " + funnelSecret + ", redirect_uris: [https://a.example/cb]}"}.String(), nil,
			[]string{"clients[0].secret: a public client must not have a secret"}},
		{"public client with secret from env", doc{clients: "clients:\n  - {id: a, type: public, redirect_uris: [https://a.example/cb]}"}.String(),
			map[string]string{"USHER_CLIENT_A_SECRET": funnelSecret},
			[]string{"clients[0].secret: a public client must not have a secret"}},
		{"public client with secret_sha256", doc{clients: "clients:\n  - {id: a, type: public, secret_sha256: " + sha256hex("x") + ", redirect_uris: [https://a.example/cb]}"}.String(), nil,
			[]string{"clients[0].secret_sha256: a public client must not have a secret"}},
		{"public client without redirect", doc{clients: "clients:\n  - {id: a, type: public}"}.String(), nil,
			[]string{"clients[0].redirect_uris: a public client needs"}},
		{"public client with client_credentials", doc{clients: "clients:\n  - {id: a, type: public, grant_types: [authorization_code, client_credentials], redirect_uris: [https://a.example/cb]}"}.String(), nil,
			[]string{"clients[0].grant_types: a public client cannot use client_credentials"}},
		{"person's client with an admin API scope", doc{clients: "clients:\n  - {id: a, type: public, scopes: [invitations:read], redirect_uris: [https://a.example/cb]}"}.String(), nil,
			[]string{"clients[0].scopes[0]: \"invitations:read\" is for the admin API"}},
		{"confidential client with code grant and admin scope", doc{clients: "clients:\n  - {id: a, type: confidential, secret_sha256: " + strings.Repeat("ab", 32) + ", grant_types: [authorization_code, client_credentials], scopes: [openid, invitations:write], redirect_uris: [https://a.example/cb]}"}.String(), nil,
			[]string{"clients[0].scopes[1]: \"invitations:write\" is for the admin API"}},
		{"person's client with the backup scope", doc{clients: "clients:\n  - {id: a, type: public, scopes: [store:backup], redirect_uris: [https://a.example/cb]}"}.String(), nil,
			[]string{"clients[0].scopes[0]: \"store:backup\" is for the admin API"}},
		{"confidential client with refresh grant and the backup scope", doc{clients: "clients:\n  - {id: a, type: confidential, secret_sha256: " + strings.Repeat("ab", 32) + ", grant_types: [authorization_code, refresh_token, client_credentials], scopes: [openid, store:backup], redirect_uris: [https://a.example/cb]}"}.String(), nil,
			[]string{"clients[0].scopes[1]: \"store:backup\" is for the admin API"}},
		{"unknown grant type", doc{clients: "clients:\n  - {id: a, type: public, grant_types: [implicit], redirect_uris: [https://a.example/cb]}"}.String(), nil,
			[]string{`clients[0].grant_types[0]: "implicit"`}},
		{"confidential without secret", doc{clients: "clients:\n  - {id: funnel, type: confidential}"}.String(), nil,
			[]string{"clients[0].secret: required", "USHER_CLIENT_FUNNEL_SECRET"}},
		{"confidential with bad sha256", doc{clients: "clients:\n  - {id: funnel, type: confidential, secret_sha256: abc}"}.String(), nil,
			[]string{"clients[0].secret_sha256: must be the 64-character hex"}},
		{"secret and sha256", doc{clients: "clients:\n  - {id: funnel, type: confidential, secret: " + funnelSecret + ", secret_sha256: " + sha256hex("x") + "}"}.String(), nil,
			[]string{"clients[0].secret: set either secret or secret_sha256"}},
		{"short secret non-dev", doc{clients: shortSecretClients}.String(), nil,
			[]string{"clients[0].secret: too short", "openssl rand -base64 32"}},
		{"short secret from env non-dev", doc{clients: "clients:\n  - {id: funnel, type: confidential}"}.String(),
			map[string]string{"USHER_CLIENT_FUNNEL_SECRET": "abc"},
			[]string{"clients[0].secret: too short"}},
		{"wildcard redirect", doc{clients: "clients:\n  - {id: a, type: public, redirect_uris: ['https://*.example.com/cb']}"}.String(), nil,
			[]string{`clients[0].redirect_uris[0]: "https://*.example.com/cb" must not contain wildcards`}},
		{"fragment redirect", doc{clients: "clients:\n  - {id: a, type: public, redirect_uris: ['https://a.example/cb', 'http://x/#a']}"}.String(), nil,
			[]string{`clients[0].redirect_uris[1]: "http://x/#a" must be an absolute URL without a fragment`}},
		{"relative redirect", doc{clients: "clients:\n  - {id: a, type: public, redirect_uris: ['/cb']}"}.String(), nil,
			[]string{`clients[0].redirect_uris[0]: "/cb" must be an absolute URL`}},
		{"http non-loopback redirect", doc{clients: "clients:\n  - {id: a, type: public, redirect_uris: ['http://app.example.com/cb']}"}.String(), nil,
			[]string{`clients[0].redirect_uris[0]: "http://app.example.com/cb" must use https`}},
		{"bad post-logout", doc{clients: "clients:\n  - {id: a, type: public, redirect_uris: ['https://a.example/cb'], post_logout_redirect_uris: ['https://a.example/#x']}"}.String(), nil,
			[]string{"clients[0].post_logout_redirect_uris[0]: "}},
		{"bad initiate_login_uri", doc{clients: "clients:\n  - {id: a, type: public, redirect_uris: ['https://a.example/cb'], initiate_login_uri: 'http://a.example/login'}"}.String(), nil,
			[]string{"clients[0].initiate_login_uri: "}},
		{"bad origin", doc{clients: "clients:\n  - {id: a, type: public, redirect_uris: ['https://a.example/cb'], allowed_origins: ['https://a.example/path']}"}.String(), nil,
			[]string{"clients[0].allowed_origins[0]: "}},
		{"code_ttl 2m", doc{extra: "tokens:\n  code_ttl: 2m\n"}.String(), nil,
			[]string{"tokens.code_ttl: 2m0s exceeds the maximum of 1m0s"}},
		{"zero ttl", doc{extra: "tokens:\n  id_token_ttl: 0\n"}.String(), nil,
			[]string{"tokens.id_token_ttl: must be a positive duration"}},
		{"idle > absolute", doc{extra: "tokens:\n  refresh_token_idle_ttl: 100h\n  refresh_token_absolute_ttl: 10h\n"}.String(), nil,
			[]string{"tokens.refresh_token_idle_ttl: 100h0m0s must not exceed tokens.refresh_token_absolute_ttl"}},
		{"session idle > absolute", doc{extra: "sessions:\n  idle_timeout: 2h\n  absolute_timeout: 1h\n"}.String(), nil,
			[]string{"sessions.idle_timeout: "}},
		{"default_ttl > max_ttl", doc{extra: "invitations:\n  default_ttl: 800h\n"}.String(), nil,
			[]string{"invitations.default_ttl: 800h0m0s must not exceed invitations.max_ttl"}},
		{"bad email_match", doc{extra: "invitations:\n  email_match: fuzzy\n"}.String(), nil,
			[]string{`invitations.email_match: "fuzzy" must be one of any, exact, domain`}},
		{"default role not in catalog", doc{extra: "invitations:\n  roles: [a]\n  default_roles: [b]\n"}.String(), nil,
			[]string{`invitations.default_roles[0]: "b" is not in invitations.roles`}},
		{"unknown yaml key", doc{extra: "log:\n  levle: debug\n"}.String(), nil,
			[]string{"log.levle: line ", "unknown key"}},
		{"unknown top-level key", doc{extra: "issuers: x\n"}.String(), nil, []string{"issuers: line "}},
		{"unknown client key", doc{clients: "clients:\n  - {id: a, type: public, redirect_uri: [https://a.example/cb]}"}.String(), nil,
			[]string{"clients[0].redirect_uri: line "}},
		{"yaml type error", doc{extra: "mail:\n  smtp:\n    port: many\n"}.String(), nil, []string{"mail.smtp.port: line "}},
		{"yaml bad duration", doc{extra: "tokens:\n  code_ttl: soon\n"}.String(), nil,
			[]string{`tokens.code_ttl: line `, `invalid duration "soon"`}},
		{"clients not a list", doc{clients: "clients: {id: a}"}.String(), nil, []string{"clients: line "}},
		{"section not a mapping", doc{extra: "log: loud\n"}.String(), nil, []string{"log: line "}},
		{"bad env duration", doc{}.String(), map[string]string{"USHER_TOKENS_CODE_TTL": "abc"},
			[]string{`USHER_TOKENS_CODE_TTL: invalid duration "abc"`}},
		{"bad env int", doc{}.String(), map[string]string{"USHER_MAIL_SMTP_PORT": "x"}, []string{"USHER_MAIL_SMTP_PORT: "}},
		{"bad env bool", doc{}.String(), map[string]string{"USHER_UPSTREAM_LINK_BY_VERIFIED_EMAIL": "yes please"},
			[]string{"USHER_UPSTREAM_LINK_BY_VERIFIED_EMAIL: "}},
		{"redis without url", doc{extra: "store:\n  driver: redis\n"}.String(), nil,
			[]string{"store.redis.url: required when store.driver is redis"}},
		{"redis bad url", doc{extra: "store:\n  driver: redis\n  redis:\n    url: http://r:6379\n"}.String(), nil,
			[]string{"store.redis.url: must be a redis://"}},
		{"redis negative pool size", doc{extra: "store:\n  driver: redis\n  redis:\n    url: redis://r:6379\n    pool_size: -1\n"}.String(), nil,
			[]string{"store.redis.pool_size: must not be negative"}},
		{"bad driver", doc{extra: "store:\n  driver: sqlite\n"}.String(), nil, []string{"store.driver: "}},
		{"unknown record format", doc{extra: "store:\n  record_format: v7\n"}.String(), nil,
			[]string{`store.record_format: "v7" must be one of v1, v2, v3, v4, v5, v6`}},
		{"unknown record format from env", doc{}.String(), map[string]string{"USHER_STORE_RECORD_FORMAT": "V2"},
			[]string{`store.record_format: "V2" must be one of v1, v2, v3, v4`}},
		{"bad key_encryption_key length", doc{}.String(),
			map[string]string{"USHER_STORE_KEY_ENCRYPTION_KEY": base64.StdEncoding.EncodeToString(make([]byte, 16))},
			[]string{"store.key_encryption_key: decodes to 16 bytes, want exactly 32"}},
		{"key_encryption_key not base64", doc{}.String(), map[string]string{"USHER_STORE_KEY_ENCRYPTION_KEY": "!!!"},
			[]string{"store.key_encryption_key: is not valid base64"}},
		{"missing sessions secret", doc{}.String(), map[string]string{"USHER_SESSIONS_SECRET": ""},
			[]string{"sessions.secret: required", "USHER_SESSIONS_SECRET"}},
		{"short sessions secret", doc{}.String(), map[string]string{"USHER_SESSIONS_SECRET": base64.StdEncoding.EncodeToString([]byte("short"))},
			[]string{"sessions.secret: decodes to 5 bytes"}},
		{"bad cookie name", doc{extra: "sessions:\n  cookie_name: 'a b'\n"}.String(), nil, []string{"sessions.cookie_name: "}},
		{"bad log level", doc{extra: "log:\n  level: loud\n"}.String(), nil, []string{"log.level: "}},
		{"bad listen", doc{extra: "listen: 8080\n"}.String(), nil, []string{`listen: "8080" must be host:port`}},
		{"bad trusted proxy", doc{extra: "server:\n  trusted_proxies: [10.0.0.0/33, proxy.local]\n  client_ip_header: X-Forwarded-For\n"}.String(), nil,
			[]string{`server.trusted_proxies[0]: "10.0.0.0/33"`, `server.trusted_proxies[1]: "proxy.local"`}},
		{"trusted proxies without header", doc{extra: "server:\n  trusted_proxies: [10.0.0.0/8]\n"}.String(), nil,
			[]string{"server.client_ip_header: required with server.trusted_proxies"}},
		{"two client IP headers", doc{extra: "server:\n  trusted_proxies: [10.0.0.0/8]\n  client_ip_header: X-Forwarded-For, Forwarded\n"}.String(), nil,
			[]string{"server.client_ip_header: \"X-Forwarded-For, Forwarded\" must be X-Forwarded-For or Forwarded"}},
		{"header without trusted proxies", doc{extra: "server:\n  client_ip_header: Forwarded\n"}.String(), nil,
			[]string{"server.trusted_proxies: required with server.client_ip_header"}},
		{"metrics on the public listener", doc{extra: "listen: 0.0.0.0:8080\nmetrics:\n  listen: 0.0.0.0:8080\n"}.String(), nil,
			[]string{`metrics.listen: "0.0.0.0:8080" must differ from listen`}},
		{"bad metrics listen", doc{extra: "metrics:\n  listen: ''\n"}.String(), nil, []string{"metrics.listen: required"}},
		{"negative authorize limit", doc{extra: "rate_limits:\n  authorize_per_minute: -1\n"}.String(), nil,
			[]string{"rate_limits.authorize_per_minute: must be at least 1"}},
		{"http redemption hook outside dev", doc{extra: "invitations:\n  redemption_hook:\n    url: http://127.0.0.1:9000/hook\n"}.String(), nil,
			[]string{`invitations.redemption_hook.url: "http://127.0.0.1:9000/hook" must use https outside usher dev`}},
		{"http webhook outside dev", doc{extra: "webhooks:\n  - id: crm\n    url: http://localhost:9000/wh\n    secrets: [whsec_abc]\n"}.String(), nil,
			[]string{`webhooks[0].url: "http://localhost:9000/wh" must use https outside usher dev`}},
		{"bad algorithm", doc{extra: "signing:\n  algorithm: HS256\n"}.String(), nil, []string{"signing.algorithm: "}},
		{"bad client ID token algorithm", doc{clients: "clients:\n  - id: spa\n    type: public\n    redirect_uris: [https://app.example.com/cb]\n    id_token_signed_response_alg: HS256"}.String(), nil,
			[]string{`clients[0].id_token_signed_response_alg: "HS256" must be one of RS256, ES256, EdDSA`}},
		{"missing key file", doc{extra: "signing:\n  key_files: [/nonexistent/key.pem]\n"}.String(), nil,
			[]string{`signing.key_files[0]: cannot read "/nonexistent/key.pem"`}},
		{"key file is a directory", doc{extra: "signing:\n  key_files: [.]\n"}.String(), nil,
			[]string{`signing.key_files[0]: cannot read ".": not a regular file`}},
		{"smtp without from", doc{extra: "mail:\n  smtp:\n    host: smtp.example.com\n"}.String(), nil,
			[]string{"mail.from: required when mail.smtp.host is set"}},
		{"bad smtp tls", doc{extra: "mail:\n  smtp:\n    tls: maybe\n"}.String(), nil, []string{"mail.smtp.tls: "}},
		{"bad base_url", doc{extra: "invitations:\n  base_url: http://invite.example.com\n"}.String(), nil,
			[]string{"invitations.base_url: "}},
		{"two documents", doc{}.String() + "---\nlisten: x\n", nil, []string{"only one YAML document"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := baseEnv()
			for k, v := range tc.env {
				env[k] = v
			}
			c, err := Parse([]byte(tc.yaml), envOf(env))
			if err == nil {
				t.Fatalf("Parse succeeded (%+v), want error mentioning %q\n%s", c, tc.want, tc.yaml)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
		})
	}
}

// TestRecordFormat: store.record_format takes v1, v2, v3 and v4, from YAML or the
// environment, and is empty (v1) when unset.
func TestRecordFormat(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ yaml, env, want string }{
		{"", "", ""},
		{"store:\n  record_format: v2\n", "", "v2"},
		{"store:\n  record_format: v1\n", "", "v1"},
		{"store:\n  record_format: v1\n", "v2", "v2"},
		{"store:\n  record_format: v3\n", "", "v3"},
		{"store:\n  record_format: v2\n", "v3", "v3"},
		{"store:\n  record_format: v4\n", "", "v4"},
		{"store:\n  record_format: v3\n", "v4", "v4"},
		{"store:\n  record_format: v5\n", "", "v5"},
		{"store:\n  record_format: v4\n", "v5", "v5"},
	} {
		env := baseEnv()
		if tc.env != "" {
			env["USHER_STORE_RECORD_FORMAT"] = tc.env
		}
		c, err := Parse([]byte(doc{extra: tc.yaml}.String()), envOf(env))
		if err != nil {
			t.Fatalf("%q, env %q: %v", tc.yaml, tc.env, err)
		}
		if c.Store.RecordFormat != tc.want {
			t.Errorf("%q, env %q: record_format %q, want %q", tc.yaml, tc.env, c.Store.RecordFormat, tc.want)
		}
	}
}

func TestAllProblemsReported(t *testing.T) {
	t.Parallel()
	y := doc{issuer: "issuer: ftp://x", extra: "tokens:\n  code_ttl: 2m\ninvitations:\n  email_match: x\n"}.String()
	_, err := Parse([]byte(y), nil)
	for _, w := range []string{"issuer:", "tokens.code_ttl:", "invitations.email_match:", "sessions.secret:"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error does not mention %q: %v", w, err)
		}
	}
}

// TestUnknownKeysDoNotHideOtherProblems: an unknown key or a badly typed
// value used to stop the run before validation; now one run lists them all,
// with a suggestion for a near miss, and nothing twice.
func TestUnknownKeysDoNotHideOtherProblems(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		yaml   string
		want   []string
		absent []string
	}{
		{
			name: "unknown keys and validation problems together",
			yaml: doc{issuer: "issuer: ftp://x", clients: "clients:\n  - {id: a, type: public, redirect_uri: [https://a.example/cb]}",
				extra: "log:\n  levle: debug\ntokens:\n  code_ttl: 2m\n"}.String(),
			want: []string{
				`clients[0].redirect_uri: line 7: unknown key; did you mean "redirect_uris"?`,
				`log.levle: line 9: unknown key; did you mean "level"?`,
				"issuer: ", "tokens.code_ttl: 2m0s exceeds", "sessions.secret:",
				"clients[0].redirect_uris: a public client needs",
			},
		},
		{
			name:   "a bad value is reported once, not again by validation",
			yaml:   doc{extra: "tokens:\n  code_ttl: soon\ninvitations:\n  email_match: x\n"}.String(),
			want:   []string{`tokens.code_ttl: line `, "invitations.email_match:"},
			absent: []string{"tokens.code_ttl: must"},
		},
		{
			name:   "no suggestion for a far-off key",
			yaml:   doc{extra: "banana: 1\n"}.String(),
			want:   []string{"banana: line "},
			absent: []string{"did you mean"},
		},
		{
			name: "a top-level near miss",
			yaml: doc{extra: "webhook: []\n"}.String(),
			want: []string{`did you mean "webhooks"?`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml), nil)
			if err == nil {
				t.Fatal("want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			for _, a := range tt.absent {
				if strings.Contains(err.Error(), a) {
					t.Errorf("error has %q:\n%v", a, err)
				}
			}
		})
	}
}

func TestEditDistance(t *testing.T) {
	t.Parallel()
	tests := []struct {
		a, b string
		want int
	}{{"", "", 0}, {"abc", "", 3}, {"redirect_uri", "redirect_uris", 1}, {"levle", "level", 1}, {"abcd", "acbd", 1}, {"kitten", "sitting", 3}}
	for _, tt := range tests {
		if got := editDistance(tt.a, tt.b); got != tt.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestDevRelaxations(t *testing.T) {
	t.Parallel()
	y := []byte(doc{clients: "clients:\n  - {id: funnel, type: confidential, secret: dev}"}.String())
	c, err := ParseDev(y, nil) // no sessions.secret either
	if err != nil {
		t.Fatalf("ParseDev: %v", err)
	}
	if !c.Dev || c.Clients[0].Secret != "" || !c.Clients[0].CheckSecret("dev") {
		t.Errorf("dev client: %+v", c.Clients[0])
	}
	// Validate stays idempotent, and remembers the secret was short.
	if err := c.Validate(); err != nil {
		t.Errorf("second Validate: %v", err)
	}
	c.Dev = false
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "clients[0].secret: too short") {
		t.Errorf("non-dev Validate = %v", err)
	}
	if _, err := Parse(y, envOf(baseEnv())); err == nil {
		t.Error("Parse accepted a short secret outside dev")
	}

	// LoadDev with a file.
	p := filepath.Join(t.TempDir(), "usher.yaml")
	if err := os.WriteFile(p, y, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadDev(p, nil); err != nil {
		t.Errorf("LoadDev: %v", err)
	}
	if _, err := Load(p, nil); err == nil || !strings.Contains(err.Error(), "too short") {
		t.Errorf("Load = %v", err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml"), nil); err == nil {
		t.Error("Load of a missing file succeeded")
	}

	// A programmatically built dev config validates without YAML.
	d := Default()
	d.Dev = true
	d.Issuer = "http://localhost:8080/"
	d.Upstream.Auth0.Domain = "http://127.0.0.1:9999"
	d.Upstream.Auth0.ClientID = "usher"
	d.Clients = []Client{{ID: "demo", Type: ClientPublic, RedirectURIs: []string{"http://localhost:8081/"}}}
	if err := d.Validate(); err != nil {
		t.Errorf("dev config: %v", err)
	}
	// usher dev may call loopback http hooks and webhooks; serve may not.
	d.Invitations.RedemptionHook.URL = "http://127.0.0.1:9000/hook"
	d.Webhooks = []Webhook{{ID: "crm", URL: "http://127.0.0.1:9000/wh", Secrets: []string{"whsec_abc"}}}
	if err := d.Validate(); err != nil {
		t.Errorf("dev config with loopback http hooks: %v", err)
	}
}

func TestServerEdge(t *testing.T) {
	t.Parallel()
	y := doc{extra: "server:\n  trusted_proxies: [10.0.0.0/8, 192.168.1.7, 'fd00::/8']\n  client_ip_header: Forwarded\nmetrics:\n  listen: 0.0.0.0:9100\n"}.String()
	c, err := Parse([]byte(y), envOf(baseEnv()))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Server.TrustedProxies, []string{"10.0.0.0/8", "192.168.1.7", "fd00::/8"}) ||
		c.Server.ClientIPHeader != HeaderForwarded || c.Metrics.Listen != "0.0.0.0:9100" {
		t.Errorf("server/metrics = %+v %+v", c.Server, c.Metrics)
	}
	env := baseEnv()
	env["USHER_SERVER_TRUSTED_PROXIES"] = "10.1.0.0/16, 10.2.0.0/16"
	env["USHER_SERVER_CLIENT_IP_HEADER"] = "X-Forwarded-For"
	env["USHER_METRICS_LISTEN"] = "127.0.0.1:9191"
	c, err = Parse([]byte(doc{}.String()), envOf(env))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Server.TrustedProxies, []string{"10.1.0.0/16", "10.2.0.0/16"}) || c.Server.ClientIPHeader != HeaderXForwardedFor || c.Metrics.Listen != "127.0.0.1:9191" {
		t.Errorf("env overrides: %+v %+v", c.Server, c.Metrics)
	}
	for _, tc := range []struct{ in, want string }{{"10.0.0.0/8", "10.0.0.0/8"}, {"10.1.2.3/8", "10.0.0.0/8"}, {"192.168.1.7", "192.168.1.7/32"}, {"::1", "::1/128"}} {
		got, err := ParseProxy(tc.in)
		if err != nil || got.String() != tc.want {
			t.Errorf("ParseProxy(%q) = %v, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

// With a custom domain, the Management API goes to the canonical domain and
// identities stay keyed by the canonical issuer (or the first alias).
func TestCustomDomainUpstream(t *testing.T) {
	t.Parallel()
	u := Upstream{Auth0: Auth0{Domain: "login.example.com"}}
	if u.ManagementDomain() != "login.example.com" || u.IdentityIssuer() != "https://login.example.com/" {
		t.Errorf("no management.domain: %q %q", u.ManagementDomain(), u.IdentityIssuer())
	}
	u.Auth0.Management.Domain = "tenant.eu.auth0.com"
	if u.ManagementDomain() != "tenant.eu.auth0.com" || u.IdentityIssuer() != "https://tenant.eu.auth0.com/" ||
		u.EffectiveIssuer() != "https://login.example.com/" {
		t.Errorf("management.domain: %q %q %q", u.ManagementDomain(), u.IdentityIssuer(), u.EffectiveIssuer())
	}
	u.IssuerAliases = []string{"https://old.example.com/", "https://older.example.com/"}
	if u.IdentityIssuer() != "https://old.example.com/" {
		t.Errorf("issuer_aliases: %q", u.IdentityIssuer())
	}
	g := Upstream{Issuer: "https://idp.example.com/"}
	if g.IdentityIssuer() != "https://idp.example.com/" {
		t.Errorf("generic: %q", g.IdentityIssuer())
	}
	c, err := Parse([]byte(doc{upstream: "upstream:\n  auth0:\n    domain: login.example.com\n    client_id: y\n    management:\n      domain: tenant.eu.auth0.com\n  issuer_aliases: [https://tenant.eu.auth0.com/]"}.String()), envOf(baseEnv()))
	if err != nil {
		t.Fatal(err)
	}
	if c.Upstream.Auth0.Management.Domain != "tenant.eu.auth0.com" || c.Upstream.IdentityIssuer() != "https://tenant.eu.auth0.com/" {
		t.Errorf("parsed: %+v", c.Upstream)
	}
}

func TestEffectiveUpstream(t *testing.T) {
	t.Parallel()
	cases := []struct {
		u    Upstream
		want string
	}{
		{Upstream{Auth0: Auth0{Domain: "tenant.eu.auth0.com"}}, "https://tenant.eu.auth0.com/"},
		{Upstream{Auth0: Auth0{Domain: "tenant.eu.auth0.com/"}}, "https://tenant.eu.auth0.com/"},
		{Upstream{Auth0: Auth0{Domain: "https://login.example.com"}}, "https://login.example.com/"},
		{Upstream{Auth0: Auth0{Domain: "https://login.example.com//"}}, "https://login.example.com/"},
		{Upstream{Auth0: Auth0{Domain: "http://127.0.0.1:4567"}}, "http://127.0.0.1:4567/"},
		{Upstream{Auth0: Auth0{Domain: "http://127.0.0.1:4567/"}}, "http://127.0.0.1:4567/"},
		{Upstream{Issuer: "https://idp.example.com"}, "https://idp.example.com"},
		{Upstream{Issuer: "https://idp.example.com/"}, "https://idp.example.com/"},
	}
	for _, c := range cases {
		if got := c.u.EffectiveIssuer(); got != c.want {
			t.Errorf("EffectiveIssuer(%+v) = %q, want %q", c.u, got, c.want)
		}
	}
	a := Upstream{ClientID: "g", ClientSecret: "gs", Auth0: Auth0{Domain: "t", ClientID: "a", ClientSecret: "as"}}
	if a.EffectiveClientID() != "a" || a.EffectiveClientSecret() != "as" {
		t.Errorf("auth0 effective client: %q %q", a.EffectiveClientID(), a.EffectiveClientSecret())
	}
	a.Auth0.Domain = ""
	if a.EffectiveClientID() != "g" || a.EffectiveClientSecret() != "gs" {
		t.Errorf("generic effective client: %q %q", a.EffectiveClientID(), a.EffectiveClientSecret())
	}

	// An http auth0 domain is loopback-only.
	y := doc{upstream: "upstream:\n  auth0:\n    domain: http://tenant.example.com\n    client_id: x"}.String()
	if _, err := Parse([]byte(y), envOf(baseEnv())); err == nil || !strings.Contains(err.Error(), "upstream.auth0.domain: ") {
		t.Errorf("http non-loopback auth0 domain: %v", err)
	}
}

func TestCheckSecret(t *testing.T) {
	t.Parallel()
	c := Client{SecretSHA256: sha256hex("s3cret")}
	cases := []struct {
		c      Client
		secret string
		want   bool
	}{
		{c, "s3cret", true},
		{c, "s3cret ", false},
		{c, "", false},
		{Client{SecretSHA256: strings.ToUpper(sha256hex("s3cret"))}, "s3cret", true},
		{Client{SecretSHA256: "zz"}, "s3cret", false},
		{Client{}, "", false},
		{Client{}, "x", false},
		{Client{Secret: "plain"}, "plain", true},
		{Client{Secret: "plain"}, "other", false},
	}
	for i, tc := range cases {
		if got := tc.c.CheckSecret(tc.secret); got != tc.want {
			t.Errorf("%d: CheckSecret(%q) = %v, want %v", i, tc.secret, got, tc.want)
		}
	}
}

func TestDuration(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]time.Duration{
		"60": time.Minute, "15m": 15 * time.Minute, "168h": 168 * time.Hour, "1h30m": 90 * time.Minute, " 5 ": 5 * time.Second, "0": 0,
	} {
		got, err := ParseDuration(in)
		if err != nil || got.D() != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "abc", "1.5", "99999999999999999", "-", "5 m"} {
		if _, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) succeeded", in)
		}
	}
	var v struct {
		A Duration `yaml:"a"`
		B Duration `yaml:"b"`
	}
	if err := yaml.Unmarshal([]byte("a: 90\nb: 2h\n"), &v); err != nil || v.A != Duration(90*time.Second) || v.B != Duration(2*time.Hour) {
		t.Fatalf("yaml: %+v %v", v, err)
	}
	out, err := yaml.Marshal(v)
	if err != nil || string(out) != "a: 1m30s\nb: 2h0m0s\n" {
		t.Errorf("Marshal = %q, %v", out, err)
	}
}

func TestRedacted(t *testing.T) {
	t.Parallel()
	c, err := Load(examplePath, envOf(exampleEnv()))
	if err != nil {
		t.Fatal(err)
	}
	c.Store.Redis.URL = "redis://user:redis-url-pw@r:6379/0"
	c.Store.Redis.Password = "redis-pw"
	c.Store.KeyEncryptionKey = base64.StdEncoding.EncodeToString(make32('k'))
	c.Upstream.ClientSecret = "generic-secret"
	c.Upstream.Auth0.Management.ClientSecret = "mgmt-secret"
	c.Clients[0].Secret = "plain-secret"
	orig := c.Clone()

	r := c.Redacted()
	out, err := yaml.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	for _, secret := range []string{"redis-url-pw", "redis-pw", c.Store.KeyEncryptionKey, "generic-secret", "mgmt-secret",
		"auth0-client-secret", "smtp-password", sessionSecret, "plain-secret", sha256hex(funnelSecret)} {
		if strings.Contains(s, secret) {
			t.Errorf("Redacted output contains %q:\n%s", secret, s)
		}
	}
	if !strings.Contains(r.Store.Redis.URL, "user:REDACTED@r:6379") {
		t.Errorf("redis url = %q", r.Store.Redis.URL)
	}
	if r.Sessions.Secret != Redaction || r.Clients[1].SecretSHA256 != Redaction || r.Mail.SMTP.Password != Redaction {
		t.Errorf("not redacted: %+v", r)
	}
	if r.Upstream.Auth0.Management.ClientID != "" || r.Mail.SMTP.Username != "usher@example.com" {
		t.Errorf("redaction touched non-secrets: %+v", r)
	}
	if !reflect.DeepEqual(c, orig) {
		t.Error("Redacted modified the original")
	}
	r.Clients[0].RedirectURIs[0] = "changed"
	if c.Clients[0].RedirectURIs[0] == "changed" {
		t.Error("Redacted shares slices with the original")
	}

	// Every field that looks like a secret is tagged as one.
	var check func(t2 reflect.Type, path string)
	check = func(t2 reflect.Type, path string) {
		for i := 0; i < t2.NumField(); i++ {
			f := t2.Field(i)
			name := yamlName(f)
			if name == "" {
				continue
			}
			if f.Type.Kind() == reflect.Struct && f.Type != durationType {
				check(f.Type, joinPath(path, name))
				continue
			}
			if f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct {
				check(f.Type.Elem(), joinPath(path, name))
				continue
			}
			looks := (f.Type.Kind() == reflect.String || f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.String) &&
				(strings.Contains(name, "secret") || strings.Contains(name, "password") || strings.HasSuffix(name, "_key"))
			if looks != (f.Tag.Get("usher") == "secret") {
				t.Errorf("%s: secret tag = %q, name suggests secret = %v", joinPath(path, name), f.Tag.Get("usher"), looks)
			}
		}
	}
	check(configType, "")
}

func TestEmptyAndNullDocuments(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"USHER_ISSUER": "https://x.example/", "USHER_UPSTREAM_ISSUER": "https://idp.example/",
		"USHER_UPSTREAM_CLIENT_ID": "c", "USHER_SESSIONS_SECRET": sessionSecret,
	}
	for _, in := range []string{"", "\n", "# only a comment\n", "---\n", "~\n", "null\n"} {
		if _, err := Parse([]byte(in), envOf(env)); err != nil {
			t.Errorf("Parse(%q): %v", in, err)
		}
	}
	for _, in := range []string{"[1, 2]", "just a string", "{issuer: [x]}", "clients: [[1]]", "a: &a [*a]", "log: &l {<<: *l}"} {
		if _, err := Parse([]byte(in), envOf(env)); err == nil {
			t.Errorf("Parse(%q) succeeded", in)
		}
	}
	// Merge keys work.
	y := doc{clients: `clients:
  - &base {id: a, type: public, redirect_uris: [https://a.example/cb]}
  - {<<: *base, id: b}`}.String()
	c, err := Parse([]byte(y), envOf(baseEnv()))
	if err != nil || len(c.Clients) != 2 || c.Clients[1].ID != "b" || c.Clients[1].RedirectURIs[0] != "https://a.example/cb" {
		t.Errorf("merge: %+v %v", c, err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(doc{}.String()))
	f.Add([]byte("issuer: x\nclients: [{id: a}]\n"))
	f.Add([]byte("tokens: {code_ttl: 1e9}\n"))
	if data, err := os.ReadFile(examplePath); err == nil {
		f.Add(data)
	}
	env := envOf(map[string]string{"USHER_SESSIONS_SECRET": sessionSecret, "USHER_CLIENT_FUNNEL_SECRET": funnelSecret})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, env)
		if err != nil {
			if c != nil {
				t.Fatal("config returned with an error")
			}
			return
		}
		r := c.Redacted()
		if _, err := yaml.Marshal(r); err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		for _, cl := range c.Clients {
			if cl.Secret != "" {
				t.Fatal("plain secret kept after Parse")
			}
			_ = cl.Origins()
		}
	})
}

// TestBackupScopeOnMachineClient: a confidential client with only the
// client_credentials grant may hold store:backup (no client has it unless
// listed).
func TestBackupScopeOnMachineClient(t *testing.T) {
	var p problems
	checkAdminScopes(&p, "clients[0]", &Client{ID: "ops", Type: ClientConfidential, GrantTypes: []string{GrantClientCredentials},
		Scopes: []string{"store:backup", "invitations:read"}})
	if len(p) != 0 {
		t.Fatalf("a machine client with store:backup: %v", p)
	}
}
