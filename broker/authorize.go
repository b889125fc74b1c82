package broker

import (
	"context"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// handleAuthorize reads the parameters the op decoder drops (Auth0's
// connection and screen_hint) into the context CreateAuthRequest sees.
func (b *Broker) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "malformed request", http.StatusBadRequest)
		return
	}
	if !b.authorizeWithinLimits(w, r) {
		return
	}
	// An unknown client has no redirect URI to trust: answer on a page.
	c, ok := b.clients[r.Form.Get("client_id")]
	if !ok {
		b.renderPage(w, r, http.StatusBadRequest, page{Title: "Unknown application",
			Message: "This sign-in link names an application usher does not know (client_id). Check the application's configuration." +
				b.loopbackHint(r.Form.Get("redirect_uri"))})
		return
	}
	// A redirect URI the client did not register: the library would refuse
	// it too, but in words only a developer reads. Say which origin is allowed
	// (typically: the app was opened on localhost, configured on 127.0.0.1).
	if ru := r.Form.Get("redirect_uri"); ru != "" && !slices.Contains(c.RedirectURIs, ru) {
		msg := "This application asked usher to send the browser back to " + clip(ru, 200) +
			", which is not one of its registered redirect URIs, so usher cannot sign you in there."
		if hint := b.loopbackHint(ru); hint != "" {
			msg += hint
		} else if origins := clientOrigins(c); len(origins) > 0 {
			msg += " This application is configured for " + strings.Join(origins, ", ") + "."
		}
		b.renderPage(w, r, http.StatusBadRequest, page{Title: "Application address not configured", Message: msg})
		return
	}
	// {issuer}/authorize?client_id=…&invitation=… (or token=inv_…) alone is an invitation link.
	if tok := linkToken(r.Form); tok != "" && r.Form.Get("response_type") == "" && r.Form.Get("redirect_uri") == "" {
		b.limitInvites(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b.serveInvitation(w, r, tok, r.Form.Get("client_id"))
		})).ServeHTTP(w, r)
		return
	}
	ex := authorizeExtras{
		connection:   clip(r.Form.Get("connection"), 100),
		screenHint:   clip(r.Form.Get("screen_hint"), 20),
		audience:     r.Form.Get("audience"),
		organization: r.Form.Get("organization"),
	}
	if inv := r.Form.Get("invitation"); inv != "" && !isUsherInvitation(inv) && ex.organization != "" {
		// An Auth0 organization invitation: the upstream's, not usher's.
		ex.upstreamInvitation = inv
		r.Form.Del("invitation")
	}
	b.authorizeInvitation(r, &ex)
	ex.sessionID, ex.sessionCookie = b.browser.cookieSession(r, b.cookie)
	ctx := context.WithValue(r.Context(), ctxAuthorizeExtras, ex)
	b.serveAuthorize(w, r.WithContext(ctx))
}

// loopbackHint: when redirectURI is a registered redirect URI of some
// client but for the other loopback name (localhost vs 127.0.0.1 vs [::1]),
// the origin to open the app on instead. The two are different sites to a
// browser (cookies, silent renewal), so usher accepts only the configured one.
func (b *Broker) loopbackHint(redirectURI string) string {
	u, err := url.Parse(redirectURI)
	if err != nil || u.Scheme != "http" || !isLoopback(u.Hostname()) {
		return ""
	}
	for _, id := range slices.Sorted(maps.Keys(b.clients)) {
		for _, reg := range b.clients[id].RedirectURIs {
			p, err := url.Parse(reg)
			if err != nil || p.Scheme != "http" || !isLoopback(p.Hostname()) || p.Hostname() == u.Hostname() ||
				p.Port() != u.Port() || p.Path != u.Path {
				continue
			}
			return " Open the application at " + originOf(reg) + " instead of " + originOf(redirectURI) +
				": usher is configured for that address only (to a browser the two are different sites)."
		}
	}
	return ""
}

// clientOrigins are the origins of c's redirect URIs.
func clientOrigins(c *Client) []string {
	var out []string
	for _, u := range c.RedirectURIs {
		if o := originOf(u); o != "" && !slices.Contains(out, o) {
			out = append(out, o)
		}
	}
	return out
}
