package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
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
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		b.Fatal(err)
	}
	sign := func(claims map[string]any) (string, error) {
		payload, err := json.Marshal(claims)
		if err != nil {
			return "", err
		}
		jws, err := signer.Sign(payload)
		if err != nil {
			return "", err
		}
		return jws.CompactSerialize()
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rt := r.PostFormValue("refresh_token")
		now := time.Now().Unix()
		claims := map[string]any{"iss": "http://127.0.0.1/", "sub": "usr_0123456789abcdef", "aud": "spa", "iat": now, "exp": now + 300}
		id, err1 := sign(claims)
		claims["scope"] = "openid profile email offline_access"
		access, err2 := sign(claims)
		if err1 != nil || err2 != nil {
			http.Error(w, "sign", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": access, "id_token": id, "refresh_token": rt, "token_type": "Bearer", "expires_in": 300})
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
			resp, err := client.PostForm(srv.URL+"/oauth/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {"spa"}})
			if err != nil {
				failures.Add(1)
				continue
			}
			var tr tokenResponse
			_ = json.NewDecoder(resp.Body).Decode(&tr)
			resp.Body.Close()
			if tr.RefreshToken != rt || tr.IDToken == "" {
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
