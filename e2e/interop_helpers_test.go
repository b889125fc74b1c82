package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/usher-oidc/usher/config"
)

// The interop tests run OIDC clients nobody here wrote against usher: npm
// packages pinned in e2e/interop/package.json (installed by `make test` with
// `npm ci --prefix e2e/interop`), loaded by small pages in headless Chromium or
// run by Node, and zitadel/oidc's example OpenID Provider as an upstream.

const interopDir = "interop"

// requireInteropModules fails (never skips) when the npm packages are not
// installed: the matrix is part of `make test`.
func requireInteropModules(t *testing.T, pkgs ...string) {
	t.Helper()
	for _, p := range pkgs {
		if _, err := os.Stat(filepath.Join(interopDir, "node_modules", p, "package.json")); err != nil {
			t.Fatalf("npm package %s is not installed: run `npm ci --prefix e2e/interop` (make test does): %v", p, err)
		}
	}
}

// freeLoopbackAddr returns a 127.0.0.1 address with a port free right now,
// for servers whose URL must be known before they start (issuers).
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// interopPages serves e2e/interop/pages at /pages/, the installed npm
// packages at /node_modules/ (no CDN) and /config.js, which tells a page its
// issuer and client.
type interopPages struct {
	URL string // origin, http://127.0.0.1:PORT
	mu  sync.Mutex
	cfg map[string]string
}

func startInteropPages(t *testing.T) *interopPages {
	t.Helper()
	p := &interopPages{}
	mux := http.NewServeMux()
	mux.Handle("GET /pages/", http.StripPrefix("/pages/", http.FileServer(http.Dir(filepath.Join(interopDir, "pages")))))
	mux.Handle("GET /node_modules/", http.StripPrefix("/node_modules/", http.FileServer(http.Dir(filepath.Join(interopDir, "node_modules")))))
	mux.HandleFunc("GET /config.js", func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		js, _ := json.Marshal(p.cfg)
		p.mu.Unlock()
		w.Header().Set("Content-Type", "text/javascript")
		fmt.Fprintf(w, "window.interopConfig = %s;\n", js)
	})
	noStore := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		mux.ServeHTTP(w, r)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: noStore, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	p.URL = "http://" + ln.Addr().String()
	return p
}

// page is the URL of one page, which is also its client's redirect URI.
func (p *interopPages) page(name string) string { return p.URL + "/pages/" + name }

func (p *interopPages) configure(cfg map[string]string) {
	p.mu.Lock()
	p.cfg = cfg
	p.mu.Unlock()
}

// spaClient registers a page as a public client of usher: redirect URI,
// post-logout redirect URI and initiate_login_uri are the page itself. It
// receives invitation references (forward_invitation) to pass to
// /authorize, as Auth0 apps pass `invitation`; a page set not to forward
// them exercises the cookie path.
func spaClient(id, pageURL string) config.Client {
	return config.Client{ID: id, Name: id, Type: config.ClientPublic, ForwardInvitation: true,
		RedirectURIs: []string{pageURL}, PostLogoutRedirectURIs: []string{pageURL}, InitiateLoginURI: pageURL}
}

// interopState is what the pages expose in window.interopState.
type interopState struct {
	Loaded    bool           `json:"loaded"`
	SignedIn  bool           `json:"signedIn"`
	Error     string         `json:"error"`
	Profile   map[string]any `json:"profile"`
	User      map[string]any `json:"user"`
	IDClaims  map[string]any `json:"idClaims"`
	ATClaims  map[string]any `json:"atClaims"`
	RT        string         `json:"refreshToken"`
	Refreshed *interopState  `json:"refreshed"`
	Current   *interopState  `json:"current"` // oidc-client-ts: the user the SDK holds now
}

// pageState waits until the page has rendered a state matching the JS
// condition `cond` on `s` (window.interopState), or fails on a page error.
func pageState(t *testing.T, bctx context.Context, what, cond string) interopState {
	t.Helper()
	raw := pollJS(t, bctx, what, 30*time.Second, `(() => { const s = window.interopState;
		if (!s || !document.body || document.body.dataset.ready !== "1") return "";
		if (s.error || (`+cond+`)) return JSON.stringify(s);
		return ""; })()`)
	var s interopState
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		t.Fatalf("%s: decoding page state: %v", what, err)
	}
	if s.Error != "" {
		failWithPage(t, bctx, what, fmt.Errorf("the page reports: %s", s.Error))
	}
	return s
}

// setPageSettings stores settings the page reads on load (localStorage is
// per origin, so the page's origin is opened first).
func setPageSettings(t *testing.T, bctx context.Context, pageURL string, kv map[string]string) {
	t.Helper()
	do(t, bctx, "opening the page", chromedp.Navigate(pageURL))
	pageState(t, bctx, "waiting for the page to load", "s.loaded")
	for k, v := range kv {
		js, _ := json.Marshal(v)
		if _, err := chromedp.Run(bctx, chromedp.Evaluate[any](fmt.Sprintf(`localStorage.setItem("interop.%s", %s)`, k, js))); err != nil {
			t.Fatalf("setting %s: %v", k, err)
		}
	}
}

// callPage starts an async page function (doRefresh, doLogout, doLogin).
func callPage(t *testing.T, bctx context.Context, fn string) {
	t.Helper()
	if _, err := chromedp.Run(bctx, chromedp.Evaluate[any](`(window.`+fn+`(), true)`)); err != nil {
		failWithPage(t, bctx, "calling "+fn, err)
	}
}

// audHas reports whether a token's aud (a string or an array) names client.
func audHas(claims map[string]any, client string) bool {
	switch a := claims["aud"].(type) {
	case string:
		return a == client
	case []any:
		for _, x := range a {
			if x == client {
				return true
			}
		}
	}
	return false
}
