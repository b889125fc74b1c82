package broker

import (
	"testing"

	"github.com/usher-oidc/usher/sessions"
)

func TestOrganizationMatching(t *testing.T) {
	up := &sessions.Upstream{Claims: map[string]any{"org_id": "org_abc", "org_name": "acme"}}
	for _, tc := range []struct {
		org  string
		up   *sessions.Upstream
		same bool
	}{
		{"org_abc", up, true}, {"ACME", up, true}, {"org_other", up, false}, {"other", up, false},
		{"", up, false}, {"", nil, true}, {"", &sessions.Upstream{Subject: "auth0|1"}, true}, {"org_abc", nil, false},
	} {
		if got := sameOrganization(tc.org, tc.up); got != tc.same {
			t.Errorf("sameOrganization(%q, %v) = %v", tc.org, tc.up, got)
		}
	}
	for tok, usher := range map[string]bool{"inv_x": true, referencePrefix + "x": true, "AbCdEf123": false} {
		if isUsherInvitation(tok) != usher {
			t.Errorf("isUsherInvitation(%q) = %v", tok, !usher)
		}
	}
}

func TestUpstreamTokenClaimsGrantWins(t *testing.T) {
	b := &Broker{opts: Options{Upstream: Upstream{Auth0: true, UserIDClaim: "auth0_user_id", PassThroughClaims: []string{"https://x/plan", "crm"}}}}
	up := &sessions.Upstream{Subject: "auth0|1", Claims: map[string]any{"https://x/plan": "pro", "crm": "up", "org_id": "org_a", "dropped": 1}}
	own := map[string]any{"roles": []string{}, "crm": "grant"}
	got := b.withUpstreamClaims(own, up)
	if got["crm"] != "grant" || got["https://x/plan"] != "pro" || got["auth0_user_id"] != "auth0|1" || got["org_id"] != "org_a" || got["dropped"] != nil {
		t.Fatalf("claims = %v", got)
	}
	if _, changed := own["auth0_user_id"]; changed {
		t.Fatal("own claims map modified")
	}
}
