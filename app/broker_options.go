package app

import (
	"crypto/rand"
	"fmt"
	"os"
	"time"

	"github.com/usher-oidc/usher/broker"
	"github.com/usher-oidc/usher/config"
)

// BrokerOptions maps the config onto broker.Options (stores, clock, logger
// and the upstream, see NewUpstream, are the caller's).
func BrokerOptions(cfg *config.Config) (broker.Options, error) {
	secret, err := sessionSecret(cfg)
	if err != nil {
		return broker.Options{}, err
	}
	pems, err := signingKeyPEMs(cfg.Signing.KeyFiles)
	if err != nil {
		return broker.Options{}, err
	}
	kek, err := cfg.Store.KeyEncryptionKeyBytes()
	if err != nil {
		return broker.Options{}, fmt.Errorf("store.key_encryption_key: %w", err)
	}
	clientIP, err := clientIPOptions(cfg.Server)
	if err != nil {
		return broker.Options{}, err
	}
	br, err := loadBranding(cfg)
	if err != nil {
		return broker.Options{}, err
	}
	return broker.Options{
		RedemptionHook: redemptionHook(cfg.Invitations.RedemptionHook),
		Issuer:         cfg.Issuer,
		Clients:        brokerClients(cfg.Clients),
		// The upstream itself is NewUpstream's.
		LinkByVerifiedEmail: cfg.Upstream.LinkByVerifiedEmail,
		SigningAlgorithm:    cfg.Signing.Algorithm,
		SigningKeyPEMs:      pems,
		KeyEncryptionKey:    kek,
		KeyRotationPeriod:   time.Duration(cfg.Signing.RotationPeriod),
		Tokens:              tokenLifetimes(cfg.Tokens),
		SessionSecret:       secret,
		SessionIdle:         time.Duration(cfg.Sessions.IdleTimeout),
		SessionAbsolute:     time.Duration(cfg.Sessions.AbsoluteTimeout),
		CookieName:          cfg.Sessions.CookieName,
		ClaimsNamespace:     cfg.Invitations.ClaimsNamespace,
		DefaultRoles:        cfg.Invitations.DefaultRoles,

		InvitationDefaultTTL: time.Duration(cfg.Invitations.DefaultTTL),
		InvitationMaxTTL:     time.Duration(cfg.Invitations.MaxTTL),
		InvitationEmailMatch: cfg.Invitations.EmailMatch,
		RoleCatalog:          cfg.Invitations.Roles,
		InvitationBaseURL:    cfg.InvitationBaseURL(),
		AdminRole:            cfg.Admin.Role,
		PrivilegedRoles:      cfg.Invitations.PrivilegedRoles,
		AppName:              cfg.Invitations.AppName,
		Branding:             br,
		AdminEmails:          cfg.Admin.Emails,
		RateLimits: broker.RateLimits{InvitePerMinute: cfg.RateLimits.InvitePerMinute,
			FailedRedemptionsPerHour: cfg.RateLimits.FailedRedemptionsPerHour, APIPerMinute: cfg.RateLimits.APIPerMinute,
			AuthorizePerMinute: cfg.RateLimits.AuthorizePerMinute},
		ClientIP: clientIP,
	}, nil
}

// sessionSecret is sessions.secret or, in dev mode when none is set, a
// random one.
func sessionSecret(cfg *config.Config) ([]byte, error) {
	secret, err := cfg.Sessions.SecretBytes()
	if err != nil {
		return nil, fmt.Errorf("sessions.secret: %w", err)
	}
	if len(secret) == 0 && cfg.Dev {
		secret = make([]byte, 32)
		_, _ = rand.Read(secret)
	}
	return secret, nil
}

// signingKeyPEMs reads signing.key_files.
func signingKeyPEMs(files []string) ([][]byte, error) {
	var pems [][]byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("signing.key_files: %w", err)
		}
		pems = append(pems, b)
	}
	return pems, nil
}

// brokerClients maps the configured clients onto the broker's.
func brokerClients(cfgClients []config.Client) []broker.Client {
	clients := make([]broker.Client, 0, len(cfgClients))
	for _, c := range cfgClients {
		clients = append(clients, broker.Client{
			ID: c.ID, Name: c.Name, Public: c.IsPublic(), SecretSHA256: c.SecretSHA256,
			RedirectURIs: c.RedirectURIs, PostLogoutRedirectURIs: c.PostLogoutRedirectURIs,
			InitiateLoginURI: c.InitiateLoginURI, AllowedOrigins: c.Origins(),
			GrantTypes: c.GrantTypes, Scopes: c.Scopes, Audiences: c.Audiences,
			ResourceServer: c.ResourceServer, ForwardInvitation: c.ForwardInvitation,
			IDTokenSigningAlg: c.IDTokenSignedResponseAlg,
		})
	}
	return clients
}

// tokenLifetimes maps the tokens section.
func tokenLifetimes(t config.Tokens) broker.TokenLifetimes {
	return broker.TokenLifetimes{
		Access: time.Duration(t.AccessTokenTTL), IDToken: time.Duration(t.IDTokenTTL),
		RefreshIdle: time.Duration(t.RefreshTokenIdleTTL), RefreshAbsolute: time.Duration(t.RefreshTokenAbsoluteTTL),
		AuthRequest: time.Duration(t.AuthRequestTTL), Code: time.Duration(t.CodeTTL),
		ClientCredentials: time.Duration(t.ClientCredentialsTTL),
	}
}

// redemptionHook maps invitations.redemption_hook; nil when it has no URL.
func redemptionHook(h config.RedemptionHook) *broker.RedemptionHook {
	if h.URL == "" {
		return nil
	}
	return &broker.RedemptionHook{URL: h.URL, Timeout: time.Duration(h.Timeout), FailOpen: h.Policy == "fail_open", Secret: []byte(h.Secret)}
}

// clientIPOptions maps server.trusted_proxies and server.client_ip_header.
func clientIPOptions(s config.Server) (broker.ClientIP, error) {
	out := broker.ClientIP{Header: s.ClientIPHeader}
	for _, raw := range s.TrustedProxies {
		p, err := config.ParseProxy(raw)
		if err != nil {
			return broker.ClientIP{}, fmt.Errorf("server.trusted_proxies: %w", err)
		}
		out.TrustedProxies = append(out.TrustedProxies, p)
	}
	return out, nil
}
