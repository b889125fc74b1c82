package config

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// FieldError is one validation problem, named by its YAML path.
type FieldError struct {
	Path string // e.g. "clients[1].redirect_uris[0]"
	Msg  string
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Msg }

func fieldErr(path, msg string) error { return &FieldError{Path: path, Msg: msg} }

type problems []error

func (p *problems) add(path, format string, args ...any) {
	*p = append(*p, fieldErr(path, fmt.Sprintf(format, args...)))
}

// Validate normalizes the configuration and checks it, returning every
// problem (errors.Join of *FieldError), each naming its YAML path.
//
// Normalization: a client's plain secret is hashed into secret_sha256 and
// cleared; empty client grant_types get their per-type default; empty
// upstream.scopes get the default scopes.
func (c *Config) Validate() error {
	var p problems
	c.normalize(&p)

	c.checkTop(&p)
	c.checkStore(&p)
	c.checkSigning(&p)
	c.checkTokens(&p)
	c.checkSessions(&p)
	c.checkUpstream(&p)
	c.checkClients(&p)
	c.checkInvitations(&p)
	c.checkMail(&p)
	c.checkBranding(&p)
	c.checkRateLimits(&p)
	c.checkWebhooks(&p)
	c.checkEdge(&p)
	if strings.TrimSpace(c.Admin.Role) == "" {
		p.add("admin.role", "must name the role that opens the admin page (default usher:admin)")
	}
	return errors.Join(p...)
}

func (c *Config) checkRateLimits(p *problems) {
	for path, v := range map[string]int{
		"rate_limits.invite_per_minute":           c.RateLimits.InvitePerMinute,
		"rate_limits.failed_redemptions_per_hour": c.RateLimits.FailedRedemptionsPerHour,
		"rate_limits.api_per_minute":              c.RateLimits.APIPerMinute,
	} {
		if v < 1 {
			p.add(path, "must be at least 1, got %d", v)
		}
	}
}

func (c *Config) normalize(p *problems) {
	if len(c.Upstream.Scopes) == 0 {
		c.Upstream.Scopes = defaultUpstreamScopes()
	}
	for i := range c.Clients {
		cl := &c.Clients[i]
		path := fmt.Sprintf("clients[%d]", i)
		if len(cl.GrantTypes) == 0 {
			switch cl.Type {
			case ClientPublic:
				cl.GrantTypes = []string{GrantAuthorizationCode, GrantRefreshToken}
			case ClientConfidential:
				cl.GrantTypes = []string{GrantClientCredentials}
			}
		}
		if cl.IDTokenSignedResponseAlg == "" {
			cl.IDTokenSignedResponseAlg = DefaultIDTokenAlg
		}
		if cl.Secret == "" {
			cl.SecretSHA256 = strings.ToLower(strings.TrimSpace(cl.SecretSHA256))
			continue
		}
		if cl.SecretSHA256 != "" {
			p.add(path+".secret", "set either secret or secret_sha256, not both")
		}
		if cl.Type == ClientPublic {
			p.add(path+".secret", "a public client must not have a secret")
		}
		sum := sha256.Sum256([]byte(cl.Secret))
		cl.SecretSHA256 = hex.EncodeToString(sum[:])
		cl.secretLen = len(cl.Secret)
		cl.Secret = ""
	}
}

func (c *Config) checkTop(p *problems) {
	if c.Issuer == "" {
		p.add("issuer", "required: the public URL of usher, e.g. https://login.example.com/ (or set USHER_ISSUER)")
	} else {
		checkBaseURL(p, "issuer", c.Issuer)
	}
	if c.Listen == "" {
		p.add("listen", "required: host:port to listen on, e.g. 127.0.0.1:8080")
	} else if msg := checkHostPort(c.Listen, true); msg != "" {
		p.add("listen", "%q %s", c.Listen, msg)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		p.add("log.level", "%q must be one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "text":
	default:
		p.add("log.format", "%q must be one of json, text", c.Log.Format)
	}
}

func (c *Config) checkStore(p *problems) {
	s := c.Store
	switch s.Driver {
	case StoreBolt:
		if s.Path == "" {
			p.add("store.path", "required when store.driver is bolt")
		}
	case StoreRedis:
		r := s.Redis
		switch {
		case r.URL == "" && len(r.Addrs) == 0:
			p.add("store.redis.url", "required when store.driver is redis (or set store.redis.addrs)")
		case r.URL != "" && len(r.Addrs) > 0:
			p.add("store.redis.url", "set either store.redis.url or store.redis.addrs, not both")
		case r.URL != "":
			u, err := url.Parse(r.URL)
			if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix") {
				p.add("store.redis.url", "must be a redis://, rediss:// or unix:// URL")
			}
			if r.MasterName != "" {
				p.add("store.redis.master_name", "use with store.redis.addrs (Sentinel), not with store.redis.url")
			}
		}
		for i, a := range r.Addrs {
			if msg := checkHostPort(a, false); msg != "" {
				p.add(fmt.Sprintf("store.redis.addrs[%d]", i), "%q %s", a, msg)
			}
		}
		if r.DB < 0 {
			p.add("store.redis.db", "must not be negative")
		}
		if r.PoolSize < 0 {
			p.add("store.redis.pool_size", "must not be negative (0 is the default: 32 connections per CPU)")
		}
	default:
		p.add("store.driver", "%q must be one of bolt, redis", s.Driver)
	}
	if s.RecordFormat != "" && !slices.Contains(RecordFormats, s.RecordFormat) {
		p.add("store.record_format", "%q must be one of %s (set a newer one only once every replica runs a version that reads it)",
			s.RecordFormat, strings.Join(RecordFormats, ", "))
	}
	if s.KeyEncryptionKey != "" {
		if _, err := s.KeyEncryptionKeyBytes(); err != nil {
			p.add("store.key_encryption_key", "%v: must be base64 of exactly 32 random bytes (`openssl rand -base64 32`; set USHER_STORE_KEY_ENCRYPTION_KEY)", err)
		}
	}
}

func (c *Config) checkSigning(p *problems) {
	s := c.Signing
	switch s.Algorithm {
	case "ES256", "RS256", "EdDSA":
	default:
		p.add("signing.algorithm", "%q must be one of ES256, RS256, EdDSA", s.Algorithm)
	}
	for i, f := range s.KeyFiles {
		path := fmt.Sprintf("signing.key_files[%d]", i)
		if f == "" {
			p.add(path, "must not be empty")
			continue
		}
		b, err := readKeyFile(f)
		if err != nil {
			p.add(path, "cannot read %q: %v", f, unwrapPathErr(err))
			continue
		}
		blk, _ := pem.Decode(b)
		if blk == nil || !strings.Contains(blk.Type, "PRIVATE KEY") {
			p.add(path, "%q is not a PEM private key", f)
		}
	}
	if s.RotationPeriod < 0 {
		p.add("signing.rotation_period", "must not be negative (0 turns rotation off)")
	}
}

// readKeyFile reads a regular file of at most 1 MiB (never blocks on a
// device or a FIFO).
func readKeyFile(name string) ([]byte, error) {
	st, err := os.Stat(name)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	if st.Size() > 1<<20 {
		return nil, errors.New("larger than 1 MiB")
	}
	return os.ReadFile(name)
}

func unwrapPathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func (c *Config) checkTokens(p *problems) {
	t := c.Tokens
	for _, d := range []struct {
		path string
		v    Duration
	}{
		{"tokens.access_token_ttl", t.AccessTokenTTL},
		{"tokens.id_token_ttl", t.IDTokenTTL},
		{"tokens.refresh_token_idle_ttl", t.RefreshTokenIdleTTL},
		{"tokens.refresh_token_absolute_ttl", t.RefreshTokenAbsoluteTTL},
		{"tokens.auth_request_ttl", t.AuthRequestTTL},
		{"tokens.code_ttl", t.CodeTTL},
		{"tokens.client_credentials_ttl", t.ClientCredentialsTTL},
	} {
		if d.v <= 0 {
			p.add(d.path, "must be a positive duration, got %s", d.v)
		}
	}
	if t.CodeTTL > Duration(MaxCodeTTL) {
		p.add("tokens.code_ttl", "%s exceeds the maximum of %s", t.CodeTTL, Duration(MaxCodeTTL))
	}
	if t.RefreshTokenIdleTTL > 0 && t.RefreshTokenAbsoluteTTL > 0 && t.RefreshTokenIdleTTL > t.RefreshTokenAbsoluteTTL {
		p.add("tokens.refresh_token_idle_ttl", "%s must not exceed tokens.refresh_token_absolute_ttl (%s)", t.RefreshTokenIdleTTL, t.RefreshTokenAbsoluteTTL)
	}
}

func (c *Config) checkSessions(p *problems) {
	s := c.Sessions
	if s.Secret == "" {
		if !c.Dev {
			p.add("sessions.secret", "required: base64 of at least 32 random bytes (`openssl rand -base64 32`); set USHER_SESSIONS_SECRET in the environment")
		}
	} else if b, err := s.SecretBytes(); err != nil {
		p.add("sessions.secret", "%v: must be base64 of at least 32 random bytes (`openssl rand -base64 32`)", err)
	} else if len(b) < 32 {
		p.add("sessions.secret", "decodes to %d bytes, need at least 32 (`openssl rand -base64 32`)", len(b))
	}
	if s.IdleTimeout <= 0 {
		p.add("sessions.idle_timeout", "must be a positive duration, got %s", s.IdleTimeout)
	}
	if s.AbsoluteTimeout <= 0 {
		p.add("sessions.absolute_timeout", "must be a positive duration, got %s", s.AbsoluteTimeout)
	}
	if s.IdleTimeout > 0 && s.AbsoluteTimeout > 0 && s.IdleTimeout > s.AbsoluteTimeout {
		p.add("sessions.idle_timeout", "%s must not exceed sessions.absolute_timeout (%s)", s.IdleTimeout, s.AbsoluteTimeout)
	}
	if !cookieNameRe.MatchString(s.CookieName) {
		p.add("sessions.cookie_name", "%q is not a valid cookie name", s.CookieName)
	}
}

func (c *Config) checkInvitations(p *problems) {
	inv := c.Invitations
	if h := inv.RedemptionHook; h.URL != "" {
		checkClientURL(p, "invitations.redemption_hook.url", h.URL)
		if h.Timeout <= 0 || time.Duration(h.Timeout) > 30*time.Second {
			p.add("invitations.redemption_hook.timeout", "must be between 1ms and 30s (a person is waiting), got %s", h.Timeout)
		}
		if h.Policy != "fail_closed" && h.Policy != "fail_open" {
			p.add("invitations.redemption_hook.policy", "must be fail_closed or fail_open, got %q", h.Policy)
		}
	}
	if inv.DefaultTTL <= 0 {
		p.add("invitations.default_ttl", "must be a positive duration, got %s", inv.DefaultTTL)
	}
	if inv.MaxTTL <= 0 {
		p.add("invitations.max_ttl", "must be a positive duration, got %s", inv.MaxTTL)
	}
	if inv.DefaultTTL > 0 && inv.MaxTTL > 0 && inv.DefaultTTL > inv.MaxTTL {
		p.add("invitations.default_ttl", "%s must not exceed invitations.max_ttl (%s)", inv.DefaultTTL, inv.MaxTTL)
	}
	switch inv.EmailMatch {
	case EmailMatchAny, EmailMatchExact, EmailMatchDomain:
	default:
		p.add("invitations.email_match", "%q must be one of any, exact, domain", inv.EmailMatch)
	}
	catalog := map[string]bool{}
	for i, r := range inv.Roles {
		path := fmt.Sprintf("invitations.roles[%d]", i)
		switch {
		case strings.TrimSpace(r) == "":
			p.add(path, "must not be empty")
		case catalog[r]:
			p.add(path, "%q is listed twice", r)
		}
		catalog[r] = true
	}
	for i, r := range inv.DefaultRoles {
		path := fmt.Sprintf("invitations.default_roles[%d]", i)
		if strings.TrimSpace(r) == "" {
			p.add(path, "must not be empty")
		} else if len(inv.Roles) > 0 && !catalog[r] {
			p.add(path, "%q is not in invitations.roles", r)
		}
	}
	// Claim names in tokens are printable ASCII (grants.ValidateClaimName
	// checks each one with the namespace in front); config stays a leaf.
	if ns := inv.ClaimsNamespace; len(ns) > 200 || strings.IndexFunc(ns, func(r rune) bool { return r < 0x21 || r > 0x7E }) >= 0 {
		p.add("invitations.claims_namespace", "%q must be at most 200 printable ASCII characters without spaces", ns)
	}
	for i, r := range inv.PrivilegedRoles {
		if strings.TrimSpace(r) == "" {
			p.add(fmt.Sprintf("invitations.privileged_roles[%d]", i), "must not be empty")
		}
	}
	if strings.TrimSpace(inv.AppName) == "" {
		p.add("invitations.app_name", "must not be empty")
	}
	if inv.BaseURL != "" {
		checkBaseURL(p, "invitations.base_url", inv.BaseURL)
	}
}

func (c *Config) checkMail(p *problems) {
	m := c.Mail
	if m.SMTP.Host != "" {
		if m.From == "" {
			p.add("mail.from", "required when mail.smtp.host is set")
		}
		if m.SMTP.Port < 1 || m.SMTP.Port > 65535 {
			p.add("mail.smtp.port", "%d must be between 1 and 65535", m.SMTP.Port)
		}
	}
	if m.From != "" {
		if _, err := mail.ParseAddress(m.From); err != nil {
			p.add("mail.from", "%q is not a valid address (e.g. \"Example <no-reply@example.com>\")", m.From)
		}
	}
	switch m.SMTP.TLS {
	case TLSStartTLS, TLSImplicit, TLSNone:
	default:
		p.add("mail.smtp.tls", "%q must be one of starttls, tls, none", m.SMTP.TLS)
	}
	if m.TemplatesDir != "" {
		if st, err := os.Stat(m.TemplatesDir); err != nil {
			p.add("mail.templates_dir", "cannot read %q: %v", m.TemplatesDir, unwrapPathErr(err))
		} else if !st.IsDir() {
			p.add("mail.templates_dir", "%q is not a directory", m.TemplatesDir)
		}
	}
}

// isLoopback reports whether host is localhost or a loopback IP address.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

const loopbackNote = "plain http is allowed only for loopback hosts (127.0.0.1, ::1, localhost)"

// checkBaseURL checks an issuer-like URL: a client URL (below) that also
// has no query.
func checkBaseURL(p *problems, path, raw string) {
	if u, err := url.Parse(raw); err != nil || !u.IsAbs() || u.Host == "" || u.Opaque != "" || strings.ContainsAny(raw, "?#") {
		p.add(path, "%q must be an absolute http(s) URL without query or fragment", raw)
		return
	}
	checkClientURL(p, path, raw)
}

// checkHostPort checks host:port; the host may be empty when allowEmptyHost.
func checkHostPort(s string, allowEmptyHost bool) string {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "must be host:port"
	}
	if host == "" && !allowEmptyHost {
		return "must be host:port"
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return "has an invalid port"
	}
	return ""
}

// checkWebhooks checks what config can; webhooks.NewWebhooks checks the
// secrets' encoding and the event names when usher starts.
func (c *Config) checkWebhooks(p *problems) {
	seen := map[string]bool{}
	for i, w := range c.Webhooks {
		path := fmt.Sprintf("webhooks[%d]", i)
		if w.ID == "" {
			p.add(path+".id", "is required")
		} else if seen[w.ID] {
			p.add(path+".id", "%q is used twice", w.ID)
		}
		seen[w.ID] = true
		checkClientURL(p, path+".url", w.URL)
		if len(w.Secrets) == 0 || len(w.Secrets) > 2 {
			p.add(path+".secrets", "needs one whsec_ secret (two while rotating); set %s", WebhookSecretsEnv(w.ID))
		}
		for j, sec := range w.Secrets {
			if !strings.HasPrefix(sec, "whsec_") {
				p.add(fmt.Sprintf("%s.secrets[%d]", path, j), "must start with whsec_ (Standard Webhooks)")
			}
		}
	}
}
