package e2e

import (
	"context"
	"net/url"
	"slices"
	"strings"
	"testing"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"github.com/zitadel/oidc/v3/pkg/client/rp"
	"github.com/zitadel/oidc/v3/pkg/oidc"

	"github.com/usher-oidc/usher/app"
)

// Two OIDC client libraries nobody here wrote complete code + PKCE and a
// refresh against usher, verifying every token against usher's discovery
// and JWKS: zitadel/oidc's relying party and coreos/go-oidc.
func TestThirdPartyClients(t *testing.T) {
	t.Parallel()
	d := startDev(t, app.DevOptions{})
	ctx := context.Background()
	redirect := d.SPAURL + "/callback"
	party, err := rp.NewRelyingPartyOIDC(ctx, d.IssuerURL, app.DevSPAClientID, "", redirect,
		[]string{oidc.ScopeOpenID, oidc.ScopeProfile, oidc.ScopeEmail, oidc.ScopeOfflineAccess},
		rp.WithVerifierOpts(rp.WithSupportedSigningAlgorithms("RS256")))
	if err != nil {
		t.Fatalf("zitadel rp discovery: %v", err)
	}
	provider, err := gooidc.NewProvider(ctx, d.IssuerURL)
	if err != nil {
		t.Fatalf("go-oidc discovery: %v", err)
	}
	idVerifier := provider.Verifier(&gooidc.Config{ClientID: app.DevSPAClientID})

	a := newAgent(t, d.SPAURL)
	verifier, challenge := pkce()
	state, nonce := randomString(), randomString()
	authURL := rp.AuthURL(state, party, rp.WithCodeChallenge(challenge), rp.AuthURLOpt(rp.WithURLParam("nonce", nonce)))
	resp, body := a.get(authURL)
	resp, body = a.devidpForm(resp, body, "login", url.Values{"email": {app.DevUserEmail}, "password": {app.DevUserPassword}})
	q := a.callbackOf(resp, body)
	if q.Get("state") != state {
		t.Fatalf("state %q", q.Get("state"))
	}

	nonceCtx := context.WithValue(ctx, nonceKey{}, nonce)
	party2, _ := rp.NewRelyingPartyOIDC(ctx, d.IssuerURL, app.DevSPAClientID, "", redirect,
		[]string{oidc.ScopeOpenID, oidc.ScopeProfile, oidc.ScopeEmail, oidc.ScopeOfflineAccess},
		rp.WithVerifierOpts(rp.WithSupportedSigningAlgorithms("RS256"), rp.WithNonce(func(ctx context.Context) string {
			n, _ := ctx.Value(nonceKey{}).(string)
			return n
		})))
	tokens, err := rp.CodeExchange[*oidc.IDTokenClaims](nonceCtx, q.Get("code"), party2, rp.WithCodeVerifier(verifier))
	if err != nil {
		t.Fatalf("zitadel rp code exchange (verifies the ID token, nonce included): %v", err)
	}
	if tokens.IDTokenClaims.Email != app.DevUserEmail || !strings.HasPrefix(tokens.IDTokenClaims.Subject, "usr_") {
		t.Fatalf("ID token claims: %+v", tokens.IDTokenClaims)
	}
	if tokens.RefreshToken == "" {
		t.Fatal("no refresh token")
	}
	idt, err := idVerifier.Verify(ctx, tokens.IDToken)
	if err != nil {
		t.Fatalf("go-oidc rejects usher's ID token: %v", err)
	}
	if idt.Nonce != nonce {
		t.Fatalf("nonce %q, want %q", idt.Nonce, nonce)
	}
	// The access token is an RFC 9068 JWT an API can verify offline.
	atVerifier := provider.Verifier(&gooidc.Config{ClientID: app.DevSPAClientID})
	at, err := atVerifier.Verify(ctx, tokens.AccessToken)
	if err != nil {
		t.Fatalf("access token does not verify against usher's JWKS: %v", err)
	}
	var atClaims struct {
		Scope    string   `json:"scope"`
		ClientID string   `json:"client_id"`
		Roles    []string `json:"roles"`
	}
	at.Claims(&atClaims)
	if !slices.Contains(strings.Fields(atClaims.Scope), "openid") || atClaims.ClientID != app.DevSPAClientID || atClaims.Roles == nil {
		t.Fatalf("access token claims: %+v", atClaims)
	}
	if typ := jwtHeader(t, tokens.AccessToken)["typ"]; typ != "at+jwt" {
		t.Errorf("access token typ = %v, want at+jwt (RFC 9068)", typ)
	}
	if typ := jwtHeader(t, tokens.IDToken)["typ"]; typ == "at+jwt" {
		t.Errorf("ID token typ must not be at+jwt")
	}

	ui, err := provider.UserInfo(ctx, oauth2TokenSource(tokens.AccessToken))
	if err != nil || ui.Email != app.DevUserEmail || ui.Subject != idt.Subject {
		t.Fatalf("go-oidc userinfo: %+v, %v", ui, err)
	}

	refreshed, err := rp.RefreshTokens[*oidc.IDTokenClaims](ctx, party, tokens.RefreshToken, "", "")
	if err != nil {
		t.Fatalf("zitadel rp refresh: %v", err)
	}
	if refreshed.RefreshToken == "" || refreshed.RefreshToken == tokens.RefreshToken {
		t.Errorf("refresh did not rotate the refresh token")
	}
	if refreshed.IDTokenClaims == nil || refreshed.IDTokenClaims.Subject != idt.Subject {
		t.Errorf("refreshed ID token: %+v", refreshed.IDTokenClaims)
	}
}

type nonceKey struct{}
