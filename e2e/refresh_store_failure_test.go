package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/grants"
)

// grantFailingStore fails GetGrant while failing is set: the store going
// away between a refresh's rotation and the tokens' claims.
type grantFailingStore struct {
	app.Store
	failing atomic.Bool
}

func (s *grantFailingStore) GetGrant(ctx context.Context, userID string) (*grants.Grant, error) {
	if s.failing.Load() {
		return nil, errors.New("store unreachable")
	}
	return s.Store.GetGrant(ctx, userID)
}

// A refresh that cannot read the user's grant answers 503 without rotating:
// the client retries with the same refresh token and gets tokens, instead of
// being taken for a thief (reuse of a rotated token ends the sign-in).
func TestRefreshStoreFailureDoesNotRotate(t *testing.T) {
	t.Parallel()
	fs := &grantFailingStore{}
	d := startDev(t, app.DevOptions{WrapStore: func(s app.Store) app.Store { fs.Store = s; return fs }})
	a := newAgent(t, d.SPAURL)
	code, verifier := a.signIn(d, app.DevUserEmail, app.DevUserPassword, false)
	rt := exchangeCode(t, d, code, verifier).RefreshToken
	if rt == "" {
		t.Fatal("no refresh token")
	}
	refresh := func() (int, tokenResponse) {
		resp, err := http.PostForm(strings.TrimSuffix(d.IssuerURL, "/")+"/oauth/token",
			url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {app.DevSPAClientID}})
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var tr tokenResponse
		_ = json.NewDecoder(resp.Body).Decode(&tr)
		return resp.StatusCode, tr
	}
	fs.failing.Store(true)
	if st, tr := refresh(); st != http.StatusServiceUnavailable {
		t.Fatalf("refresh with the store failing: %d %+v, want 503", st, tr)
	}
	fs.failing.Store(false)
	if st, tr := refresh(); st != http.StatusOK || tr.RefreshToken == "" {
		t.Fatalf("retry with the same refresh token: %d %+v, want new tokens", st, tr)
	}
}
