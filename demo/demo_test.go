package demo

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func testHandler() http.Handler {
	return Handler(Config{Issuer: "http://127.0.0.1:8081/", ClientID: "demo-spa"})
}

func get(t *testing.T, h http.Handler, method, target, host string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	if host != "" {
		req.Host = host
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func checkSecurityHeaders(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	csp := rec.Header().Get("Content-Security-Policy")
	for _, want := range []string{
		"script-src 'self'",
		"connect-src 'self' http://127.0.0.1:8081",
		"style-src 'self'",
		"frame-ancestors 'none'",
	} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-eval") || strings.Contains(csp, "script-src 'self' 'unsafe-inline'") {
		t.Errorf("CSP %q allows unsafe script", csp)
	}
	if got := rec.Header().Get("X-Content-Type-Options"); got != "nosniff" {
		t.Errorf("X-Content-Type-Options = %q", got)
	}
	if got := rec.Header().Get("Referrer-Policy"); got != "no-referrer" {
		t.Errorf("Referrer-Policy = %q", got)
	}
}

func TestPages(t *testing.T) {
	h := testHandler()
	for _, path := range []string{"/", "/callback", "/callback?code=x&state=y", "/login?iss=http%3A%2F%2F127.0.0.1%3A8081%2F&login_hint=a%40b.c&invitation=inv_x"} {
		rec := get(t, h, http.MethodGet, path, "")
		if rec.Code != http.StatusOK {
			t.Fatalf("GET %s: status %d", path, rec.Code)
		}
		if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
			t.Errorf("GET %s: Content-Type %q", path, ct)
		}
		body := rec.Body.String()
		for _, id := range []string{`id="signin"`, `id="signup"`, `id="signout"`, `id="refresh"`, `id="connection"`,
			`id="status"`, `id="error"`, `id="id-claims"`, `id="at-claims"`, `id="userinfo"`, `id="refresh-status"`,
			`src="/app.js"`} {
			if !strings.Contains(body, id) {
				t.Errorf("GET %s: page lacks %s", path, id)
			}
		}
		if strings.Contains(body, "<script>") || strings.Contains(body, "<style>") || strings.Contains(body, " style=") {
			t.Errorf("GET %s: inline script or style would violate the CSP", path)
		}
		checkSecurityHeaders(t, rec)
	}
}

func TestAssets(t *testing.T) {
	h := testHandler()
	for path, ct := range map[string]string{"/app.js": "text/javascript", "/style.css": "text/css"} {
		rec := get(t, h, http.MethodGet, path, "")
		if rec.Code != http.StatusOK {
			t.Fatalf("GET %s: status %d", path, rec.Code)
		}
		if got := rec.Header().Get("Content-Type"); !strings.HasPrefix(got, ct) {
			t.Errorf("GET %s: Content-Type %q, want %s", path, got, ct)
		}
		if rec.Body.Len() == 0 {
			t.Errorf("GET %s: empty body", path)
		}
		checkSecurityHeaders(t, rec)
	}
	js := get(t, h, http.MethodGet, "/app.js", "").Body.String()
	for _, want := range []string{"innerHTML", "eval(", "response_type: 'token"} {
		if strings.Contains(js, want) {
			t.Errorf("app.js contains %q", want)
		}
	}
	for _, want := range []string{"code_challenge_method: 'S256'", "sessionStorage", "demoState", "dataset.ready", "screen_hint: 'signup'"} {
		if !strings.Contains(js, want) {
			t.Errorf("app.js lacks %q", want)
		}
	}
}

func TestConfigJSON(t *testing.T) {
	h := testHandler()
	rec := get(t, h, http.MethodGet, "/config.json", "127.0.0.1:8082")
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d", rec.Code)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	checkSecurityHeaders(t, rec)
	var got map[string]string
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"issuer":                   "http://127.0.0.1:8081/",
		"client_id":                "demo-spa",
		"scope":                    DefaultScope,
		"redirect_uri":             "http://127.0.0.1:8082/callback",
		"post_logout_redirect_uri": "http://127.0.0.1:8082/",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}

	// A configured scope wins; the origin follows the Host header.
	h = Handler(Config{Issuer: "https://id.example.com", ClientID: "c", Scope: "openid"})
	rec = get(t, h, http.MethodGet, "/config.json", "localhost:9999")
	got = nil
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got["scope"] != "openid" || got["redirect_uri"] != "http://localhost:9999/callback" || got["post_logout_redirect_uri"] != "http://localhost:9999/" {
		t.Errorf("config = %v", got)
	}
	if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "connect-src 'self' https://id.example.com;") {
		t.Errorf("CSP %q", csp)
	}
}

func TestNotFound(t *testing.T) {
	h := testHandler()
	for _, path := range []string{"/nope", "/callback/x", "/static/app.js", "/index.html", "/favicon.ico"} {
		rec := get(t, h, http.MethodGet, path, "")
		if rec.Code != http.StatusNotFound {
			t.Errorf("GET %s: status %d, want 404", path, rec.Code)
		}
		checkSecurityHeaders(t, rec)
	}
	if rec := get(t, h, http.MethodPost, "/", ""); rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /: status %d, want 405", rec.Code)
	}
	if rec := get(t, h, http.MethodHead, "/", ""); rec.Code != http.StatusOK {
		t.Errorf("HEAD /: status %d, want 200", rec.Code)
	}
}

func TestCSPWithoutIssuer(t *testing.T) {
	for _, iss := range []string{"", "not a url", "ftp://x", "http://a b"} {
		csp := contentSecurityPolicy(iss)
		if !strings.Contains(csp, "connect-src 'self';") {
			t.Errorf("issuer %q: CSP %q", iss, csp)
		}
	}
}

func TestServerRoundTrip(t *testing.T) {
	srv := httptest.NewServer(testHandler())
	defer srv.Close()
	res, err := http.Get(srv.URL + "/config.json")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var got map[string]string
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got["redirect_uri"] != srv.URL+"/callback" {
		t.Errorf("redirect_uri = %q, want %q", got["redirect_uri"], srv.URL+"/callback")
	}
}

// TestAppJSSyntax runs `node --check` on app.js to catch syntax errors.
func TestAppJSSyntax(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not on PATH")
	}
	js, err := static.ReadFile("static/app.js")
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "app.js")
	if err := os.WriteFile(f, js, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(node, "--check", f).CombinedOutput(); err != nil {
		t.Fatalf("node --check app.js: %v\n%s", err, out)
	}
}

// The configured origin is served; the other loopback names on its port are
// redirected to it; anything else (another port, a real host) is served as is.
func TestOtherLoopbackRedirect(t *testing.T) {
	h := Handler(Config{Issuer: "http://127.0.0.1:8080", ClientID: "demo", Origin: "http://127.0.0.1:5173"})
	for _, c := range []struct{ host, want string }{
		{"127.0.0.1:5173", ""},
		{"localhost:5173", "http://127.0.0.1:5173/login?a=1"},
		{"[::1]:5173", "http://127.0.0.1:5173/login?a=1"},
		{"localhost:9999", ""},
		{"app.example.com:5173", ""},
	} {
		req := httptest.NewRequest(http.MethodGet, "/login?a=1", nil)
		req.Host = c.host
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if got := rec.Header().Get("Location"); got != c.want || (c.want == "" && rec.Code != http.StatusOK) {
			t.Errorf("Host %s: %d Location %q, want %q", c.host, rec.Code, got, c.want)
		}
	}
}
