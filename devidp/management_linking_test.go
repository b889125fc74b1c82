package devidp_test

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/auth0/go-auth0/management"

	"github.com/usher-oidc/usher/devidp"
)

// Auth0 account linking
// (https://auth0.com/docs/manage-users/user-accounts/user-account-linking):
// the secondary stops being a user (404, left out of users-by-email) and is
// listed in the primary's identities; the user search
// (https://auth0.com/docs/manage-users/user-search/user-search-query-syntax)
// finds the primary by the secondary's identities.user_id.
func TestManagementAccountLinking(t *testing.T) {
	t.Parallel()
	srv, domain := startTenant(t, seeded)
	primary, _ := srv.UserSub(devidp.ConnectionPassword, seeded.Email)
	secondary, err := srv.AddSocialUser(devidp.ConnectionGoogle, "alice.g@example.com", "Alice G", true)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.PatchAppMetadata(secondary, map[string]any{"x": 1}); err != nil {
		t.Fatal(err)
	}
	api := newAPI(t, domain)
	ctx := t.Context()
	provider, userID, _ := strings.Cut(secondary, "|")

	search := func() []*management.User {
		t.Helper()
		l, err := api.User.Search(ctx, management.Query(`identities.user_id:"`+userID+`"`), management.Parameter("search_engine", "v3"))
		if err != nil {
			t.Fatal(err)
		}
		return l.Users
	}
	if got := search(); len(got) != 1 || got[0].GetID() != secondary {
		t.Fatalf("before linking, search = %v", got)
	}

	ids, err := api.User.Link(ctx, primary, &management.UserIdentityLink{Provider: &provider, UserID: &userID})
	if err != nil || len(ids) != 2 || ids[1].GetUserID() != userID || ids[1].GetProvider() != provider {
		t.Fatalf("link: %v %v", ids, err)
	}
	var merr management.Error
	if _, err := api.User.Read(ctx, secondary); !errors.As(err, &merr) || merr.Status() != http.StatusNotFound {
		t.Errorf("read the secondary after linking: %v, want 404", err)
	}
	if got, err := api.User.ListByEmail(ctx, "alice.g@example.com"); err != nil || len(got) != 0 {
		t.Errorf("users-by-email of the secondary: %v %v, want none", got, err)
	}
	u, err := api.User.Read(ctx, primary)
	if err != nil || len(u.Identities) != 2 || u.Identities[1].GetConnection() != devidp.ConnectionGoogle {
		t.Fatalf("the primary: %v %v", u, err)
	}
	if got := search(); len(got) != 1 || got[0].GetID() != primary {
		t.Errorf("after linking, search = %v, want the primary", got)
	}
	if srv.AppMetadata(secondary) != nil {
		t.Errorf("the secondary's app_metadata outlived the link: %v", srv.AppMetadata(secondary))
	}

	// Refusals: linking again, an unknown primary, the link_with form, and
	// any other search query.
	if err := srv.LinkUser(primary, secondary); !errors.Is(err, devidp.ErrLinkRefused) {
		t.Errorf("linking twice: %v", err)
	}
	if err := srv.LinkUser(secondary, primary); !errors.Is(err, devidp.ErrLinkRefused) {
		t.Errorf("linking into a linked identity: %v", err)
	}
	tok := goodToken(t, domain)
	base := "http://" + domain + "/api/v2/users"
	var body map[string]any
	if resp := call(t, http.MethodPost, base+"/"+url.PathEscape(primary)+"/identities", tok, map[string]any{"link_with": "a.b.c"}, &body); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("link_with: %d %v", resp.StatusCode, body)
	}
	for _, q := range []string{`email:"alice@example.com"`, `identities.user_id:abc`, ""} {
		if resp := call(t, http.MethodGet, base+"?search_engine=v3&q="+url.QueryEscape(q), tok, nil, &body); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("q=%s: %d %v", q, resp.StatusCode, body)
		}
	}
}
