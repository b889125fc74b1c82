package devidp_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/auth0/go-auth0/management"
	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/usher-oidc/usher/devidp"
)

// startCustomDomainTenant runs a devidp whose canonical domain is
// 127.0.0.1:PORT and whose custom domain is localhost:PORT.
func startCustomDomainTenant(t *testing.T, users ...devidp.User) (p *idp, canonical, custom string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	canonical, custom = "127.0.0.1:"+strconv.Itoa(port), "localhost:"+strconv.Itoa(port)
	srv, err := devidp.New(devidp.Config{
		Issuer: "http://" + canonical + "/", CustomDomain: "http://" + custom + "/",
		Clients:           []devidp.Client{{ID: clientID, Secret: clientSecret, RedirectURIs: []string{redirectURI}}},
		ManagementClients: []devidp.Client{{ID: m2mID, Secret: m2mSecret}},
		Users:             users,
	})
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(srv)
	hs.Listener.Close()
	hs.Listener = ln
	hs.Start()
	t.Cleanup(hs.Close)
	return &idp{srv: srv, base: "http://" + custom}, canonical, custom
}

// Auth0 issues tokens with the iss of the domain the request used: the
// custom domain's discovery and ID tokens carry https://<custom>/.
func TestCustomDomainIssuer(t *testing.T) {
	t.Parallel()
	p, canonical, custom := startCustomDomainTenant(t, seeded)
	if p.srv.CustomDomain() != "http://"+custom+"/" {
		t.Fatalf("CustomDomain() = %q", p.srv.CustomDomain())
	}
	for _, host := range []string{canonical, custom} {
		var doc struct {
			Issuer        string `json:"issuer"`
			TokenEndpoint string `json:"token_endpoint"`
		}
		resp := call(t, http.MethodGet, "http://"+host+"/.well-known/openid-configuration", "", nil, &doc)
		if resp.StatusCode != http.StatusOK || doc.Issuer != "http://"+host+"/" || !strings.HasPrefix(doc.TokenEndpoint, "http://"+host+"/") {
			t.Errorf("discovery at %s: %d issuer %q token_endpoint %q", host, resp.StatusCode, doc.Issuer, doc.TokenEndpoint)
		}
	}
	// A sign-in through the custom domain yields an ID token go-oidc
	// verifies against the custom domain's issuer.
	b := newBrowser(t, p)
	f, pg := b.authorize(nil)
	res := b.post("/u/login", url.Values{"state": {requestID(t, pg)}, "email": {seeded.Email}, "password": {seeded.Password}})
	q := callback(t, res)
	ctx := context.Background()
	provider, err := oidc.NewProvider(ctx, "http://"+custom+"/")
	if err != nil {
		t.Fatal(err)
	}
	conf := oauth2.Config{ClientID: clientID, ClientSecret: clientSecret, RedirectURL: redirectURI, Endpoint: provider.Endpoint()}
	tok, err := conf.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(f.verifier))
	if err != nil {
		t.Fatal(err)
	}
	rawID, _ := tok.Extra("id_token").(string)
	idt, err := provider.Verifier(&oidc.Config{ClientID: clientID}).Verify(ctx, rawID)
	if err != nil || idt.Issuer != "http://"+custom+"/" || !strings.HasPrefix(idt.Subject, "auth0|") {
		t.Fatalf("ID token from the custom domain: %v %+v", err, idt)
	}
}

// The Management API audience is the canonical domain's, whichever name the
// token request goes to; the custom domain's is refused as Auth0 does.
func TestCustomDomainManagementAudience(t *testing.T) {
	t.Parallel()
	_, canonical, custom := startCustomDomainTenant(t, seeded)
	creds := url.Values{"grant_type": {"client_credentials"}, "client_id": {m2mID}, "client_secret": {m2mSecret}}
	for _, host := range []string{canonical, custom} {
		form := url.Values{"audience": {"http://" + custom + "/api/v2/"}}
		for k, v := range creds {
			form[k] = v
		}
		resp, out := managementToken(t, host, form)
		desc, _ := out["error_description"].(string)
		if resp.StatusCode != http.StatusForbidden || out["error"] != "access_denied" || !strings.HasPrefix(desc, "Service not enabled within domain") {
			t.Errorf("custom-domain audience at %s: %d %v", host, resp.StatusCode, out)
		}
		form.Set("audience", "http://"+canonical+"/api/v2/")
		if resp, out := managementToken(t, host, form); resp.StatusCode != http.StatusOK || out["access_token"] == nil {
			t.Errorf("canonical audience at %s: %d %v", host, resp.StatusCode, out)
		}
	}
	// go-auth0 derives the audience from the domain it is given: only the
	// canonical domain works.
	ctx := context.Background()
	for _, tc := range []struct {
		domain string
		ok     bool
	}{{canonical, true}, {custom, false}} {
		api, err := management.New(tc.domain, management.WithInsecure(), management.WithNoRetries(),
			management.WithClientCredentials(ctx, m2mID, m2mSecret))
		if err != nil {
			t.Fatal(err)
		}
		// Database-connection emails are stored lowercased, and users-by-email is case-sensitive (as at Auth0).
		users, err := api.User.ListByEmail(ctx, strings.ToLower(seeded.Email))
		if tc.ok && (err != nil || len(users) != 1) {
			t.Errorf("go-auth0 at the canonical domain: %v %v", err, users)
		}
		if !tc.ok && (err == nil || !strings.Contains(err.Error(), "Service not enabled within domain")) {
			t.Errorf("go-auth0 at the custom domain: want Auth0's access_denied, got %v", err)
		}
	}
}
