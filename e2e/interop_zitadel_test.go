package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/url"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/zitadel/oidc/v3/pkg/client/rp"
	"github.com/zitadel/oidc/v3/pkg/oidc"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
)

// zitadel/oidc's relying party completes the invitation flow: it forwards the
// invitation from the initiate_login_uri as an extra /authorize parameter,
// exchanges the code (verifying the ID token and nonce) and refreshes.
func TestInteropZitadelRP(t *testing.T) {
	t.Parallel()
	rpOrigin := "http://" + freeLoopbackAddr(t)
	redirect := rpOrigin + "/callback"
	d := startDev(t, app.DevOptions{Configure: func(c *config.Config) {
		c.Clients = append(c.Clients, config.Client{ID: "zitadel-rp", Name: "zitadel rp", Type: config.ClientPublic,
			RedirectURIs: []string{redirect}, InitiateLoginURI: rpOrigin + "/login"})
	}})
	api := funnelToken(t, d, "invitations:write invitations:read")
	const email, password = "zitadel-rp@example.com", "interop-password-4"
	roles := []string{"customer", "go"}
	inv := invite(t, d, api, map[string]any{"email": email, "roles": roles,
		"claims": map[string]any{"crm_id": "CRM-rp"}, "client_id": "zitadel-rp", "send_email": false})

	a := newAgent(t, rpOrigin+"/")
	resp, body := a.get(inv["url"].(string))
	initiate := a.callbackOf(resp, body)

	ctx := context.Background()
	nonce := randomString()
	party, err := rp.NewRelyingPartyOIDC(ctx, d.IssuerURL, "zitadel-rp", "", redirect,
		[]string{oidc.ScopeOpenID, oidc.ScopeProfile, oidc.ScopeEmail, oidc.ScopeOfflineAccess},
		rp.WithVerifierOpts(rp.WithSupportedSigningAlgorithms("RS256"), rp.WithNonce(func(ctx context.Context) string {
			n, _ := ctx.Value(nonceKey{}).(string) // the refreshed ID token carries no nonce
			return n
		})))
	if err != nil {
		t.Fatalf("zitadel rp discovery: %v", err)
	}
	verifier, challenge := pkce()
	state := randomString()
	authURL := rp.AuthURL(state, party, rp.WithCodeChallenge(challenge), rp.AuthURLOpt(rp.WithURLParam("nonce", nonce)),
		rp.AuthURLOpt(rp.WithURLParam("invitation", tokenOf(inv["url"].(string)))),
		rp.AuthURLOpt(rp.WithURLParam("login_hint", initiate.Get("login_hint"))))
	resp, body = a.get(authURL)
	resp, body = a.devidpForm(resp, body, "signup", url.Values{"email": {email}, "password": {password}, "name": {"RP User"}})
	resp, body = a.answerAccept(resp, body, "accept")
	q := a.callbackOf(resp, body)
	if q.Get("state") != state {
		t.Fatalf("state %q, error %q", q.Get("state"), q.Get("error_description"))
	}
	tokens, err := rp.CodeExchange[*oidc.IDTokenClaims](context.WithValue(ctx, nonceKey{}, nonce), q.Get("code"), party, rp.WithCodeVerifier(verifier))
	if err != nil {
		t.Fatalf("code exchange: %v", err)
	}
	if got := rolesOf(tokens.IDTokenClaims.Claims); !slices.Equal(got, roles) || tokens.IDTokenClaims.Claims["crm_id"] != "CRM-rp" {
		t.Errorf("ID token roles %v, claims %v", got, tokens.IDTokenClaims.Claims)
	}
	refreshed, err := rp.RefreshTokens[*oidc.IDTokenClaims](ctx, party, tokens.RefreshToken, "", "")
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if at := jwtClaims(t, refreshed.AccessToken); !slices.Equal(rolesOf(at), roles) || refreshed.RefreshToken == tokens.RefreshToken {
		t.Errorf("after refresh: access token %v, rotated %v", at, refreshed.RefreshToken != tokens.RefreshToken)
	}
}

// zitadel/oidc's own example OpenID Provider, built from the module cache, as
// usher's upstream: usher is an ordinary client of it (client_secret_basic,
// PKCE, nonce), and an invitee completes the flow in the browser with the
// example's login page and users, first new to usher, then known to it.
func TestInteropZitadelUpstream(t *testing.T) {
	t.Parallel()
	d, username := startZitadelUpstream(t)
	api := funnelToken(t, d, "invitations:write invitations:read")
	var sub string
	for i, roles := range [][]string{{"customer"}, {"beta"}} {
		name := []string{"new to usher", "known to usher"}[i]
		t.Run(name, func(t *testing.T) {
			inv := invite(t, d, api, map[string]any{"email": zitadelUserEmail, "roles": roles,
				"claims": map[string]any{"crm_id": "CRM-zitadel"}, "send_email": false})
			ctx := newBrowser(t)
			signInAtZitadelOP(t, ctx, inv["url"].(string), username)
			acceptInBrowser(t, ctx, "Demo SPA", zitadelUserEmail)
			st := waitSignedIn(t, ctx)
			for _, r := range roles {
				if !slices.Contains(rolesOf(st.IDClaims), r) {
					t.Errorf("ID token roles %v lack %q", rolesOf(st.IDClaims), r)
				}
			}
			if st.IDClaims["crm_id"] != "CRM-zitadel" {
				t.Errorf("ID token claims %v", st.IDClaims)
			}
			s := claimString(st.IDClaims, "sub")
			if sub != "" && s != sub {
				t.Errorf("second sign-in is another usher user: %s, first %s", s, sub)
			}
			sub = s
			r := apiCall(t, d, "GET", "/api/invitations/"+inv["id"].(string), api, nil)
			if r.body["status"] != "redeemed" {
				t.Errorf("invitation after the flow: %s", r.raw)
			}
			do(t, ctx, "refreshing the tokens", chromedp.Click(chromedp.CSS(`#refresh`)))
			pollJS(t, ctx, "waiting for the refresh", 20*time.Second,
				`(document.getElementById("refresh-status").textContent || "").startsWith("refreshed")`)
		})
	}
}

// The example OP, like any OP built on zitadel/oidc with default client
// settings, puts the email and profile claims in userinfo only, not in the
// ID token, when it also issues an access token (OIDC Core §5.4). usher must
// still learn the person's email: for its tokens, for invitations with
// email_match exact or domain, and to tell a known invitee from a new one.
func TestInteropZitadelUpstreamEmailFromUserinfo(t *testing.T) {
	t.Parallel()
	d, username := startZitadelUpstream(t)
	api := funnelToken(t, d, "invitations:write invitations:read")
	inv := invite(t, d, api, map[string]any{"email": zitadelUserEmail, "roles": []string{"customer"},
		"email_match": "exact", "send_email": false})
	ctx := newBrowser(t)
	signInAtZitadelOP(t, ctx, inv["url"].(string), username)
	acceptInBrowser(t, ctx, "Demo SPA", zitadelUserEmail)
	where := pollJS(t, ctx, "waiting for the SPA or usher's invitation interstitial", 20*time.Second,
		`document.body && document.body.dataset.ready === "1" && window.demoState && window.demoState.idClaims ? "spa" :
		 document.body && document.body.innerText.includes("could not be used") ? "interstitial: " + document.body.innerText : ""`)
	if where != "spa" {
		t.Fatalf("an invitation with email_match exact, for the email the upstream has for this person, was refused:\n%s", where)
	}
	st := waitSignedIn(t, ctx)
	if st.IDClaims["email"] != zitadelUserEmail || st.Userinfo["email"] != zitadelUserEmail {
		t.Errorf("usher's ID token email %v, userinfo email %v; want %s (the upstream's userinfo has it)",
			st.IDClaims["email"], st.Userinfo["email"], zitadelUserEmail)
	}
}

// zitadelUserEmail is the email claim of the example OP's test-user.
const zitadelUserEmail = "test-user@zitadel.ch"

// startZitadelUpstream runs usher (and the demo SPA) with the example OP as
// its upstream and returns the example user's username.
func startZitadelUpstream(t *testing.T) (*app.Dev, string) {
	t.Helper()
	usherAddr := freeLoopbackAddr(t)
	const secret = "zitadel-example-op-secret-for-usher"
	opIssuer := startZitadelOP(t, "usher", secret, "http://"+usherAddr+"/callback")
	d := startDev(t, app.DevOptions{Addr: usherAddr, Configure: func(c *config.Config) {
		c.Upstream = config.Upstream{Issuer: opIssuer, ClientID: "usher", ClientSecret: secret}
	}})
	// The example's users: "test-user@<issuer host>" / verysecure.
	opURL, _ := url.Parse(opIssuer)
	return d, "test-user@" + opURL.Hostname()
}

// signInAtZitadelOP follows an invitation link and signs in on the example
// OP's login page.
func signInAtZitadelOP(t *testing.T, ctx context.Context, link, username string) {
	t.Helper()
	form := `form[action="/login/username"] `
	// Filled and submitted in one script: node IDs from a separate lookup
	// go stale when the page is replaced between the steps under load
	// ("Could not find node with given id").
	fill := fmt.Sprintf(`(() => {
		const f = document.querySelector('form[action="/login/username"]');
		f.querySelector('input[name=username]').value = %q;
		f.querySelector('input[name=password]').value = "verysecure";
		f.querySelector('button[type=submit]').click();
	})()`, username)
	do(t, ctx, "following the invitation link and signing in at the example OP",
		chromedp.Navigate(link),
		chromedp.WaitVisible(chromedp.CSS(form+`input[name=username]`)),
		chromedp.Evaluate[chromedp.Void](fill),
	)
}

// startZitadelOP builds e2e/interop/zitadelop (the example OP with a flag for
// its issuer) and runs it with usher registered as a web client. It returns
// the issuer.
func startZitadelOP(t *testing.T, clientID, secret, redirect string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build the example OP: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "zitadelop")
	build := exec.Command(goBin, "build", "-o", bin, "./"+interopDir+"/zitadelop")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building zitadel's example OP: %v\n%s", err, out)
	}
	issuer := "http://" + freeLoopbackAddr(t) + "/"
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "-issuer", issuer, "-client-id", clientID, "-client-secret", secret, "-redirect-uri", redirect)
	stderr := &strings.Builder{}
	cmd.Stderr = stderr
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		if t.Failed() {
			t.Logf("example OP log:\n%s", clipText(stderr.String()))
		}
	})
	ready := make(chan bool, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		ready <- strings.TrimSpace(line) == "ready"
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("the example OP did not start:\n%s", stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the example OP did not start in 20 s:\n%s", stderr.String())
	}
	return issuer
}
