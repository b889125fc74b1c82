package devidp_test

import (
	"net/url"
	"testing"

	"golang.org/x/oauth2"

	"github.com/usher-oidc/usher/devidp"
)

// Post-login Action custom claims and Organizations, as Auth0 puts them in
// ID tokens (actions.go cites the documents): a custom claim is added, a
// restricted one (email, org_id) is dropped rather than failing the
// sign-in, and an `organization` (by name, with organization names on)
// adds org_id and org_name.
func TestActionClaimsAndOrganizations(t *testing.T) {
	t.Parallel()
	p := startIDPWith(t, true, func(c *devidp.Config) {
		c.Organizations = []devidp.Organization{{ID: "org_abc123", Name: "acme"}}
		c.OrganizationNames = true
	}, seeded)
	p.srv.SetIDTokenClaims(map[string]any{"https://example.com/plan": "gold", "email": "spoof@evil.example", "org_id": "org_spoof"})
	b := newBrowser(t, p)
	f, pg := b.authorize(url.Values{"organization": {"ACME"}})
	res := b.post("/u/login", url.Values{"state": {requestID(t, pg)}, "email": {"alice@example.com"}, "password": {seeded.Password}})
	tk := p.exchange(t, f, callback(t, res), oauth2.AuthStyleInHeader)
	mustVerify(t, tk, f)
	var all map[string]any
	if err := tk.id.Claims(&all); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"https://example.com/plan": "gold", "email": "alice@example.com", "org_id": "org_abc123", "org_name": "acme"} {
		if all[k] != want {
			t.Errorf("ID token %s = %v, want %v", k, all[k], want)
		}
	}
}
