package broker

import (
	"testing"

	"github.com/usher-oidc/usher/broker/upstream"
	"github.com/usher-oidc/usher/sessions"
)

// stubUpstream is an upstream that only names its token claims; orgs
// adds upstream.Organizations.
type stubUpstream struct {
	upstream.Upstream
	claims upstream.TokenClaims
}

func (s stubUpstream) TokenClaims() upstream.TokenClaims { return s.claims }

type stubOrgUpstream struct{ stubUpstream }

func (stubOrgUpstream) InOrganization(org string, claims map[string]any) bool {
	return claims["org"] == org || org == "" && claims["org"] == nil
}

func TestUsherInvitations(t *testing.T) {
	for tok, usher := range map[string]bool{"inv_x": true, referencePrefix + "x": true, "AbCdEf123": false} {
		if isUsherInvitation(tok) != usher {
			t.Errorf("isUsherInvitation(%q) = %v", tok, !usher)
		}
	}
}

// Organizations are the upstream's (upstream.Organizations); without the
// capability no request names one and every session answers.
func TestOrganizationsAreACapability(t *testing.T) {
	plain := &Broker{upstream: stubUpstream{}}
	plain.caps = capabilitiesOf(plain.upstream)
	up := &sessions.Upstream{Claims: map[string]any{"org": "a"}}
	if !plain.sameOrganization("", up) || !plain.sameOrganization("", nil) {
		t.Error("an upstream without organizations: the session should answer")
	}
	if plain.checkOrganizationParam("org_a", "") == nil || plain.checkOrganizationParam("", "inv") == nil {
		t.Error("an upstream without organizations: organization accepted")
	}
	orgs := &Broker{upstream: stubOrgUpstream{}}
	orgs.caps = capabilitiesOf(orgs.upstream)
	if !orgs.sameOrganization("a", up) || orgs.sameOrganization("", up) || !orgs.sameOrganization("", nil) || orgs.sameOrganization("a", nil) {
		t.Error("sameOrganization does not ask the upstream")
	}
	if err := orgs.checkOrganizationParam("org_a", "invitation"); err != nil {
		t.Errorf("organization refused: %v", err)
	}
	if orgs.checkOrganizationParam("", "invitation") == nil || orgs.checkOrganizationParam("org a", "") == nil {
		t.Error("a malformed organization request was accepted")
	}
}

func TestUpstreamTokenClaimsGrantWins(t *testing.T) {
	b := &Broker{upstream: stubUpstream{claims: upstream.TokenClaims{
		Copied: []string{"https://x/plan", "crm", "org_id", "org_name"}, Subject: "auth0_user_id"}}}
	up := &sessions.Upstream{Subject: "auth0|1", Claims: map[string]any{"https://x/plan": "pro", "crm": "up", "org_id": "org_a", "dropped": 1}}
	own := map[string]any{"roles": []string{}, "crm": "grant"}
	got := b.withUpstreamClaims(own, up)
	if got["crm"] != "grant" || got["https://x/plan"] != "pro" || got["auth0_user_id"] != "auth0|1" || got["org_id"] != "org_a" || got["dropped"] != nil {
		t.Fatalf("claims = %v", got)
	}
	if _, changed := own["auth0_user_id"]; changed {
		t.Fatal("own claims map modified")
	}
	back := b.fromAccessToken(got)
	if back.Subject != "auth0|1" || back.Claims["https://x/plan"] != "pro" || back.Claims["dropped"] != nil {
		t.Fatalf("fromAccessToken = %+v", back)
	}
}
