// Package demo is the demonstration single-page app that `usher dev` serves on
// its own origin and that the browser end-to-end tests drive.
//
// It is plain JavaScript with no build step, embedded in the binary. It uses
// usher as its OpenID Connect issuer the way any public SPA client would:
// authorization code flow with PKCE (S256), state and nonce, refresh tokens,
// RP-initiated logout, and an initiate_login_uri (/login) through which usher
// hands over invitation links.
package demo

import (
	"embed"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// DefaultScope is the scope requested when Config.Scope is empty.
const DefaultScope = "openid profile email offline_access"

// Config configures the demo app.
type Config struct {
	// Issuer is usher's issuer URL (with or without a trailing slash).
	Issuer string
	// ClientID is the demo's client_id as registered with usher.
	ClientID string
	// Scope is the scope to request; DefaultScope when empty.
	Scope string
	// Origin, when set, is the one origin the app is registered with at usher
	// (its redirect URIs). A request for the same port on another loopback
	// name (localhost instead of 127.0.0.1, or the reverse) is redirected
	// there: usher accepts only the registered redirect URIs, and accepting
	// both names would not do either, since to a browser they are different
	// sites (cookies, silent renewal).
	Origin string
}

//go:embed static
var static embed.FS

func mustRead(name string) []byte {
	b, err := static.ReadFile("static/" + name)
	if err != nil {
		panic("demo: missing embedded file " + name + ": " + err.Error())
	}
	return b
}

// Handler serves the demo app: "/", "/callback" and "/login" (the same page),
// "/app.js", "/style.css" and "/config.json". Anything else is 404.
func Handler(cfg Config) http.Handler {
	if cfg.Scope == "" {
		cfg.Scope = DefaultScope
	}
	index := mustRead("index.html")
	appJS := mustRead("app.js")
	styleCSS := mustRead("style.css")

	file := func(contentType string, body []byte) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", contentType)
			w.Header().Set("Cache-Control", "no-cache")
			_, _ = w.Write(body)
		}
	}
	page := file("text/html; charset=utf-8", index)

	mux := http.NewServeMux()
	// GET patterns also match HEAD; other methods get 405 from the mux.
	mux.HandleFunc("GET /{$}", page)
	mux.HandleFunc("GET /callback", page)
	mux.HandleFunc("GET /login", page)
	mux.HandleFunc("GET /app.js", file("text/javascript; charset=utf-8", appJS))
	mux.HandleFunc("GET /style.css", file("text/css; charset=utf-8", styleCSS))
	mux.HandleFunc("GET /config.json", func(w http.ResponseWriter, r *http.Request) {
		origin := requestOrigin(r)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(map[string]string{
			"issuer":                   cfg.Issuer,
			"client_id":                cfg.ClientID,
			"scope":                    cfg.Scope,
			"redirect_uri":             origin + "/callback",
			"post_logout_redirect_uri": origin + "/",
		})
	})

	csp := contentSecurityPolicy(cfg.Issuer)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if to := otherLoopback(cfg.Origin, r); to != "" {
			http.Redirect(w, r, to+r.URL.RequestURI(), http.StatusFound)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		mux.ServeHTTP(w, r)
	})
}

// otherLoopback is the configured origin when r came for the same port on
// another loopback name; "" otherwise.
func otherLoopback(origin string, r *http.Request) string {
	o, err := url.Parse(origin)
	if origin == "" || err != nil || o.Host == r.Host {
		return ""
	}
	host, port, err := net.SplitHostPort(r.Host)
	if err != nil || port != o.Port() || !loopback(host) || !loopback(o.Hostname()) {
		return ""
	}
	return o.Scheme + "://" + o.Host
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// requestOrigin derives the app's origin from the request. The page itself uses
// location.origin, which is authoritative in the browser; this is for clients
// that read /config.json directly.
func requestOrigin(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// contentSecurityPolicy allows only our own script and style, and fetches to
// ourselves and to the issuer's origin (discovery, token, userinfo).
func contentSecurityPolicy(issuer string) string {
	connect := "'self'"
	if o := originOf(issuer); o != "" {
		connect += " " + o
	}
	return strings.Join([]string{
		"default-src 'none'",
		"script-src 'self'",
		"style-src 'self'",
		"img-src 'self' data:",
		"connect-src " + connect,
		"form-action 'none'",
		"base-uri 'none'",
		"frame-ancestors 'none'",
	}, "; ")
}

func originOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return ""
	}
	// A CSP source expression cannot carry anything the URL parser would not
	// have rejected in a host, but be strict anyway.
	if strings.ContainsAny(u.Host, " ;,'\"") {
		return ""
	}
	return u.Scheme + "://" + u.Host
}
