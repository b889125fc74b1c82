package client_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/securecookie"

	"github.com/usher-oidc/usher/broker/admin"
	"github.com/usher-oidc/usher/client"
	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/internal/testkit"
	boltstore "github.com/usher-oidc/usher/store/bolt"
)

// server is the real admin API (broker/admin) over a bolt store, behind a
// token endpoint that knows one client: funnel / s3cret.
func server(t *testing.T) *httptest.Server {
	t.Helper()
	return serverWith(t, nil)
}

// serverWith is server with the API adjusted by adjust.
func serverWith(t *testing.T, adjust func(*admin.API, *boltstore.Store)) *httptest.Server {
	t.Helper()
	store, _ := testkit.OpenBolt(t)
	api := &admin.API{
		Invitations: grants.NewService(grants.ServiceOptions{Store: store}),
		Store:       store,
		Authenticate: func(_ context.Context, token string) (admin.Caller, error) {
			if token != "tok-funnel" {
				return admin.Caller{}, admin.ErrInvalidToken
			}
			return admin.Caller{ClientID: "funnel", Subject: "funnel", Scopes: []string{client.ScopeRead, client.ScopeWrite}}, nil
		},
		Link:   func(_ *grants.Invitation, token string) string { return "https://usher.example.com/invite/" + token },
		Sealer: securecookie.New(securecookie.GenerateRandomKey(32), securecookie.GenerateRandomKey(32)),
		Logger: testkit.Logger(t),
		Now:    time.Now,
	}
	if adjust != nil {
		adjust(api, store)
	}
	mux := http.NewServeMux()
	api.Mount(mux)
	mux.HandleFunc("POST /oauth/token", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		id, secret, _ := r.BasicAuth()
		switch {
		case id != "funnel" || secret != "s3cret":
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error":"invalid_client","error_description":"bad client credentials"}`))
		case r.FormValue("scope") == "invitations:admin":
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"error":"invalid_scope"}`))
		default:
			w.Write([]byte(`{"access_token":"tok-funnel","token_type":"Bearer"}`))
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestClientAgainstTheAdminAPI(t *testing.T) {
	srv := server(t)
	ctx := t.Context()
	c := &client.Client{Issuer: srv.URL + "/", ClientID: "funnel", ClientSecret: "s3cret", Scope: client.ScopeWrite}
	no := false
	inv, rep, err := c.CreateInvitation(ctx, client.CreateRequest{Email: "a@example.com", Roles: []string{"editor"}, SendEmail: &no, ExternalID: "CRM-1"}, "k1")
	if err != nil || rep.Status != http.StatusCreated || !strings.HasPrefix(inv.URL, "https://usher.example.com/invite/inv_") || inv.Status != grants.StatusPending {
		t.Fatalf("create: %+v %+v %v", inv, rep, err)
	}
	again, rep, err := c.CreateInvitation(ctx, client.CreateRequest{Email: "a@example.com", Roles: []string{"editor"}, SendEmail: &no, ExternalID: "CRM-1"}, "k1")
	if err != nil || !rep.Replayed || again.ID != inv.ID || again.URL != inv.URL {
		t.Fatalf("replay: %+v %+v %v", again, rep, err)
	}
	list, _, err := c.ListInvitations(ctx, client.ListQuery{ExternalID: "CRM-1", Limit: 10})
	if err != nil || len(list.Invitations) != 1 || list.Invitations[0].ID != inv.ID || list.Invitations[0].URL != "" {
		t.Fatalf("list: %+v %v", list, err)
	}
	if got, _, err := c.RevokeInvitation(ctx, inv.ID); err != nil || got.Status != grants.StatusRevoked || got.RevokedAt == nil {
		t.Fatalf("revoke: %+v %v", got, err)
	}
	_, rep, err = c.ResendInvitation(ctx, inv.ID)
	var p *client.Problem
	if !errors.As(err, &p) || rep != nil || p.Status != http.StatusConflict || p.Slug() != "revoked" {
		t.Fatalf("resend a revoked invitation: %v", err)
	}
	_, _, err = c.CreateInvitation(ctx, client.CreateRequest{Email: "nope"}, "")
	if !errors.As(err, &p) || p.Slug() != "invalid-invitation" || len(p.Errors) == 0 || !strings.Contains(p.Error(), "\n  email: ") {
		t.Fatalf("invalid: %v", err)
	}
}

func TestClientTokenErrors(t *testing.T) {
	srv := server(t)
	for _, tc := range []struct {
		secret, scope string
		want          client.TokenErrorKind
	}{
		{"wrong", client.ScopeRead, client.TokenBadCredentials},
		{"s3cret", "invitations:admin", client.TokenNotAllowed},
	} {
		c := &client.Client{Issuer: srv.URL, ClientID: "funnel", ClientSecret: tc.secret, Scope: tc.scope}
		_, _, err := c.GetInvitation(t.Context(), "inv-x")
		var te *client.TokenError
		if !errors.As(err, &te) || te.Kind != tc.want {
			t.Errorf("%s/%s: %v", tc.secret, tc.scope, err)
		}
	}
	c := &client.Client{Issuer: "http://127.0.0.1:1", ClientID: "funnel", ClientSecret: "s3cret"}
	var ue *client.UnreachableError
	if _, err := c.Token(t.Context()); !errors.As(err, &ue) || ue.Issuer != "http://127.0.0.1:1" {
		t.Errorf("unreachable: %v", err)
	}
}

// TestClientBackup: Backup streams the store's snapshot into w (a file that
// opens as a usher database); a token without store:backup gets a 403
// *Problem, and a store without backups (Redis) a 501 one.
func TestClientBackup(t *testing.T) {
	scopes := []string{client.ScopeStoreBackup}
	srv := serverWith(t, func(api *admin.API, store *boltstore.Store) {
		api.Backup = store.Backup
		api.Authenticate = func(_ context.Context, token string) (admin.Caller, error) {
			return admin.Caller{ClientID: "funnel", Subject: "funnel", Scopes: scopes}, nil
		}
		now := time.Now()
		if _, err := store.CreateInvitation(t.Context(), &grants.Invitation{ID: "inv-1", TokenHash: "h", Email: "a@example.com", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	})
	c := &client.Client{Issuer: srv.URL, ClientID: "funnel", ClientSecret: "s3cret", Scope: client.ScopeStoreBackup}
	path := filepath.Join(t.TempDir(), "b.db")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := c.Backup(t.Context(), f)
	f.Close()
	if err != nil || n == 0 {
		t.Fatalf("Backup: %d, %v", n, err)
	}
	if fi, _ := os.Stat(path); fi.Size() != n {
		t.Errorf("Backup reported %d bytes, the file has %d", n, fi.Size())
	}
	if invs, err := boltstore.CheckBackup(path); err != nil || invs != 1 {
		t.Fatalf("CheckBackup: %d, %v", invs, err)
	}

	scopes = []string{client.ScopeRead}
	var p *client.Problem
	if _, err := c.Backup(t.Context(), io.Discard); !errors.As(err, &p) || p.Status != http.StatusForbidden || p.Slug() != "insufficient-scope" {
		t.Fatalf("without store:backup: %v", err)
	}
}

func TestClientBackupNotOnRedis(t *testing.T) {
	srv := serverWith(t, func(api *admin.API, _ *boltstore.Store) {
		api.Authenticate = func(context.Context, string) (admin.Caller, error) {
			return admin.Caller{ClientID: "funnel", Scopes: []string{client.ScopeStoreBackup}}, nil
		}
	})
	c := &client.Client{Issuer: srv.URL, ClientID: "funnel", ClientSecret: "s3cret", Scope: client.ScopeStoreBackup}
	var p *client.Problem
	if n, err := c.Backup(t.Context(), io.Discard); !errors.As(err, &p) || p.Status != http.StatusNotImplemented || n != 0 {
		t.Fatalf("Backup against a store without backups: %d, %v", n, err)
	}
}
