package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/usher-oidc/usher/app"
)

// BenchmarkSessionLogin measures a login of a browser already signed in to
// usher (its cookie jar holds a usher session) for the dev SPA client:
// /authorize answered from the session (no upstream) → code → token
// exchange, through the real HTTP stack on loopback, on bolt and Redis. Per
// login usher signs the ID token (the client's algorithm) and the access
// token (ES256); ceiling_logins/s is those two signatures at go-jose's
// one-core rates measured in the same run, times the cores;
// ratio_to_ceiling is against issue 14's ceilings (ES256: the 2-signature
// ES256 ceiling; RS256: the 1-signature RS256 ceiling).
func BenchmarkSessionLogin(b *testing.B) {
	for _, store := range []string{"bolt", "redis"} {
		for _, alg := range []string{"ES256", "RS256"} {
			b.Run(store+"/"+alg, func(b *testing.B) { benchmarkSessionLogin(b, store, alg) })
		}
	}
}

func benchmarkSessionLogin(b *testing.B, store, alg string) {
	d := devOnWith(b, store, app.DevOptions{Configure: idTokenAlg(alg)})
	const perProc = 4 // in flight per GOMAXPROCS: enough to keep the cores busy, few enough that p50 is not mostly queueing
	workers := runtime.GOMAXPROCS(0) * perProc
	jars := make(chan http.CookieJar, workers)
	for range workers {
		a := newAgent(b, d.SPAURL)
		a.signIn(d, app.DevUserEmail, app.DevUserPassword, false)
		jars <- a.client.Jar
	}
	// Once, untimed: the login is answered from the session and carries alg.
	jar := <-jars
	if got, err := sessionLogin(d, newSessionClient(d, jar, 1)); err != nil || got != alg {
		b.Fatalf("session login: alg %q, %v", got, err)
	}
	jars <- jar

	// RS256 signing is slow (≈ 1 ms): measured only where the figure needs it.
	es256, idRate := es256SignsPerSecond(b), 0.0
	if alg == "RS256" {
		idRate = rs256SignsPerSecond(b)
	} else {
		idRate = es256
	}
	latencies, elapsed := timedParallel(b, d, perProc, "login", func() func() error {
		client := newSessionClient(d, <-jars, 1)
		return func() error { _, err := sessionLogin(d, client); return err }
	})
	perSec := float64(b.N) / elapsed.Seconds()
	// Two signatures per login: the ID token (alg) and the access token (ES256).
	ceiling := float64(runtime.GOMAXPROCS(0)) / (1/idRate + 1/es256)
	// Issue 14's targets: ES256 against the 2-signature ES256 ceiling, RS256
	// against the 1-signature RS256 ceiling.
	target := es256 * float64(runtime.GOMAXPROCS(0)) / 2
	if alg == "RS256" {
		target = idRate * float64(runtime.GOMAXPROCS(0))
	}
	b.ReportMetric(perSec, "logins/s")
	b.ReportMetric(p50ms(latencies), "p50_ms")
	b.ReportMetric(es256, "es256_signs/s/core")
	if alg == "RS256" {
		b.ReportMetric(idRate, "rs256_signs/s/core")
	}
	b.ReportMetric(ceiling, "ceiling_logins/s")
	b.ReportMetric(100*perSec/ceiling, "%_of_ceiling")
	b.ReportMetric(perSec/target, "ratio_to_ceiling")
}

// newSessionClient follows usher's redirects with the session's cookie jar
// and stops at the client's redirect URI, as the browser would.
func newSessionClient(d *app.Dev, jar http.CookieJar, conns int) *http.Client {
	if jar == nil {
		jar, _ = cookiejar.New(nil)
	}
	return &http.Client{Jar: jar, Timeout: 20 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: conns},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if strings.HasPrefix(req.URL.String(), d.SPAURL) || len(via) > 10 {
				return http.ErrUseLastResponse
			}
			return nil
		}}
}

// sessionLogin runs one login from the session and returns the ID token's
// alg. Errors, not t.Fatal: it runs on RunParallel's goroutines.
func sessionLogin(d *app.Dev, client *http.Client) (string, error) {
	u, verifier, state := authorizeURL(d, nil)
	resp, err := client.Get(u)
	if err != nil {
		return "", err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if up := upstreamAuthorize(resp); up != nil {
		return "", fmt.Errorf("authorize went upstream (%s), not answered from usher's session", up)
	}
	// The answer's query parsed once, as an SPA SDK does.
	loc, _ := url.Parse(resp.Header.Get("Location"))
	var answer url.Values
	if loc != nil {
		answer = loc.Query()
	}
	if loc == nil || !strings.HasPrefix(loc.String(), d.SPAURL) || answer.Get("code") == "" || answer.Get("state") != state {
		return "", fmt.Errorf("authorize: %d at %s, Location %q", resp.StatusCode, resp.Request.URL, resp.Header.Get("Location"))
	}
	resp, err = client.PostForm(strings.TrimSuffix(d.IssuerURL, "/")+"/oauth/token", url.Values{
		"grant_type": {"authorization_code"}, "code": {answer.Get("code")}, "code_verifier": {verifier},
		"client_id": {app.DevSPAClientID}, "redirect_uri": {d.SPAURL + "/callback"}})
	if err != nil {
		return "", err
	}
	var tr tokenResponse
	err = json.NewDecoder(resp.Body).Decode(&tr)
	resp.Body.Close()
	if err != nil || tr.IDToken == "" || tr.AccessToken == "" {
		return "", fmt.Errorf("token: %d %v %s %s", resp.StatusCode, err, tr.Error, tr.Description)
	}
	return tokenAlg(tr.IDToken), nil
}

// tokenAlg is the alg of a JWT's header ("" if it has none).
func tokenAlg(jwt string) string {
	var h struct {
		Alg string `json:"alg"`
	}
	raw, _ := base64.RawURLEncoding.DecodeString(strings.SplitN(jwt, ".", 2)[0])
	json.Unmarshal(raw, &h)
	return h.Alg
}
