package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/usher-oidc/usher/app"
)

// BenchmarkHTTPSigningFloor is the refresh benchmark's load generator
// (BenchmarkTokenRefresh: 32 clients per core posting a form to a token
// endpoint on loopback and decoding the JSON answer) against the least a
// token endpoint can do: a net/http handler that reads the form, signs two
// small ES256 JWTs and writes them as JSON; no store, no client
// authentication, no claims lookup. Its ratio to the 2-signature ES256
// ceiling is what the harness itself allows on this machine, so usher's
// refresh ratio reads against it: the ceiling counts every core signing,
// while here HTTP on both sides and the load generator share the cores too.
func BenchmarkHTTPSigningFloor(b *testing.B) {
	tokens := newBareTokens(b)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tokens.answer(w, r.PostFormValue("refresh_token"))
	}))
	b.Cleanup(srv.Close)
	es256 := es256SignsPerSecond(b)
	workers := runtime.GOMAXPROCS(0) * 32
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	var failures atomic.Int64
	b.SetParallelism(32)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		rt := "rt_" + rand.Text()
		for pb.Next() {
			if next, err := postRefresh(client, srv.URL+"/oauth/token", rt); err != nil || next != rt {
				failures.Add(1)
			}
		}
	})
	elapsed := time.Since(start)
	b.StopTimer()
	if n := failures.Load(); n > 0 {
		b.Fatalf("%d failed requests", n)
	}
	perSec := float64(b.N) / elapsed.Seconds()
	b.ReportMetric(perSec, "responses/s")
	b.ReportMetric(es256, "es256_signs/s/core")
	b.ReportMetric(perSec/(es256*float64(runtime.GOMAXPROCS(0))/2), "ratio_to_ceiling")
}

// bareTokens is the least a token endpoint does: sign an ID and an access
// token (ES256, go-jose, a signer made once) and write them as JSON.
type bareTokens struct{ signer jose.Signer }

func newBareTokens(b *testing.B) *bareTokens {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		b.Fatal(err)
	}
	return &bareTokens{signer: signer}
}

func (t *bareTokens) sign(claims map[string]any) (string, error) {
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	jws, err := t.signer.Sign(payload)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}

// answer writes a token response carrying refresh (the refresh token the
// client is to keep).
func (t *bareTokens) answer(w http.ResponseWriter, refresh string) {
	now := time.Now().Unix()
	claims := map[string]any{"iss": "http://127.0.0.1/", "sub": "usr_0123456789abcdef", "aud": "spa", "iat": now, "exp": now + 300}
	id, err1 := t.sign(claims)
	claims["scope"] = "openid profile email offline_access"
	access, err2 := t.sign(claims)
	if err1 != nil || err2 != nil {
		http.Error(w, "sign", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": access, "id_token": id, "refresh_token": refresh, "token_type": "Bearer", "expires_in": 300})
}

// BenchmarkSessionLoginFloor is BenchmarkSessionLogin's load generator
// (sessionLogin: /authorize with a session cookie, the redirect to the
// client read, the code exchanged) against the least an OP answering from
// its session can do: /authorize checks the cookie is there and redirects
// with a random code and the state, /oauth/token signs two ES256 JWTs; no
// store, no PKCE check, no code kept. Its logins/s is what the harness
// allows a session-answered login on this machine, to read usher's
// against.
func BenchmarkSessionLoginFloor(b *testing.B) {
	tokens := newBareTokens(b)
	mux := http.NewServeMux()
	d := &app.Dev{SPAURL: "http://127.0.0.1:9/spa"} // the URLs sessionLogin uses; no usher behind them
	mux.HandleFunc("GET /authorize", func(w http.ResponseWriter, r *http.Request) {
		if _, err := r.Cookie("session"); err != nil {
			http.Error(w, "no session", http.StatusUnauthorized)
			return
		}
		q := url.Values{"code": {rand.Text()}, "state": {r.URL.Query().Get("state")}}
		http.Redirect(w, r, r.URL.Query().Get("redirect_uri")+"?"+q.Encode(), http.StatusFound)
	})
	mux.HandleFunc("POST /oauth/token", func(w http.ResponseWriter, r *http.Request) {
		if r.PostFormValue("code") == "" {
			http.Error(w, "no code", http.StatusBadRequest)
			return
		}
		tokens.answer(w, "rt_"+rand.Text())
	})
	srv := httptest.NewServer(mux)
	b.Cleanup(srv.Close)
	d.IssuerURL = srv.URL
	es256 := es256SignsPerSecond(b)
	const perProc = 4 // as BenchmarkSessionLogin
	latencies, elapsed, failures := runTimed(b, perProc, "login", func() func() error {
		jar, _ := cookiejar.New(nil)
		u, _ := url.Parse(srv.URL)
		jar.SetCookies(u, []*http.Cookie{{Name: "session", Value: rand.Text()}})
		client := newSessionClient(d, jar, 1)
		return func() error { _, err := sessionLogin(d, client); return err }
	}, func() {})
	if failures > 0 {
		b.Fatalf("%d failed logins", failures)
	}
	perSec := float64(b.N) / elapsed.Seconds()
	b.ReportMetric(perSec, "logins/s")
	b.ReportMetric(p50ms(latencies), "p50_ms")
	b.ReportMetric(es256, "es256_signs/s/core")
	b.ReportMetric(perSec/(es256*float64(runtime.GOMAXPROCS(0))/2), "ratio_to_ceiling")
}
