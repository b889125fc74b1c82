package broker

import (
	"context"
	"errors"
	"time"

	"github.com/usher-oidc/usher/broker/upstream"
	"github.com/usher-oidc/usher/sessions"
)

// The upstream is an upstream.Upstream (Options.Upstream); what it can do
// beyond a sign-in is found once, by type assertion, in New
// (upstreamCapabilities). Without a capability the feature is off: no
// sign-up screen for invitees (AccountFinder), no grant mirror
// (GrantMirror), no organizations (Organizations), no upstream logout
// (LogoutRedirector).

// upstreamCapabilities are the optional interfaces the upstream implements.
type upstreamCapabilities struct {
	accounts upstream.AccountFinder      // nil: nobody knows who has an account
	mirror   upstream.GrantMirror        // nil: grants are not mirrored
	orgs     upstream.Organizations      // nil: organization requests are refused
	logout   upstream.LogoutRedirector   // nil: no upstream logout
	conns    upstream.ConnectionResolver // nil: the ID token's connection stands
	verify   upstream.EmailVerification  // nil: a new upstream round trip tells whether an email is verified
}

func capabilitiesOf(u upstream.Upstream) upstreamCapabilities {
	var c upstreamCapabilities
	c.accounts, _ = u.(upstream.AccountFinder)
	c.mirror, _ = u.(upstream.GrantMirror)
	c.orgs, _ = u.(upstream.Organizations)
	c.logout, _ = u.(upstream.LogoutRedirector)
	c.conns, _ = u.(upstream.ConnectionResolver)
	c.verify, _ = u.(upstream.EmailVerification)
	return c
}

// pendingLogin is what the browser session remembers about one upstream
// round trip, keyed by its state: state is bound to this browser.
type pendingLogin struct {
	AuthRequestID string    `json:"ar,omitempty"`
	Purpose       string    `json:"p,omitempty"` // "" (an SPA's authorization) or "admin"
	Nonce         string    `json:"n"`
	Verifier      string    `json:"v"`
	Expires       time.Time `json:"e"`
	// requestEnded: the take deleted the auth request with its state (the
	// upstream answered with an error, which ends the request).
	requestEnded bool
}

const pendingPrefix = "up:"

// resolveConnection names id's connection through the upstream
// (ConnectionResolver) when its sub leaves it ambiguous; on any failure the
// connection Exchange derived from the sub stays.
func (b *Broker) resolveConnection(ctx context.Context, id *upstream.Identity) {
	if b.caps.conns != nil && id.Subject != "" {
		name, err := b.caps.conns.Connection(ctx, id.Subject)
		switch {
		case err == nil && name != "":
			id.Connection, id.ConnectionSource = name, upstream.ConnectionFromAPI
		case err != nil && !errors.Is(err, upstream.ErrConnectionKnown):
			b.log.WarnContext(ctx, "connection lookup failed; using the sub prefix", "connection", id.Connection, "err", err)
		}
	}
	if id.ConnectionSource != "" {
		b.metrics.connectionSources.WithLabelValues(id.ConnectionSource).Inc()
	}
}

// loginHints steer the upstream beyond what the app asked for.
type loginHints struct {
	loginHint string // used when the app sent none
	signup    bool   // the person has no upstream account: the sign-up screen
}

// callbackURL is usher's redirect URI at the upstream.
func (b *Broker) callbackURL() string { return b.url("/callback") }

// upstreamLoginURL is the upstream authorize URL for ar with fresh state,
// nonce and PKCE, and the parameters ar carries.
func (b *Broker) upstreamLoginURL(ar *sessions.AuthRequest, state, nonce, verifier string, h loginHints) string {
	r := upstream.LoginRequest{RedirectURL: b.callbackURL(), State: state, Nonce: nonce, CodeVerifier: verifier,
		LoginHint: ar.LoginHint, Prompt: ar.Prompt, UILocales: ar.UILocales, MaxAge: ar.MaxAge,
		Connection: ar.Connection, ScreenHint: ar.ScreenHint,
		Organization: ar.Organization, Invitation: ar.UpstreamInvitation, Signup: h.signup}
	if r.LoginHint == "" {
		r.LoginHint = h.loginHint
	}
	return b.upstream.LoginURL(r)
}

// upstreamLogoutURL is the upstream's logout returning to /logout/done with
// state, or "" without one.
func (b *Broker) upstreamLogoutURL(ctx context.Context, state, sid string) string {
	if b.caps.logout == nil {
		return ""
	}
	return b.caps.logout.LogoutURL(ctx, upstream.LogoutRequest{Done: b.url("/logout/done"), State: state, SessionID: sid})
}
