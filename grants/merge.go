package grants

import (
	"encoding/json"
	"maps"
	"slices"
	"time"
)

// The one grant-merge rule, applied by every backend inside its atomic step:
// a redemption adds the invitation's roles (union, in order) and offers its
// claims; a claim is added only when the user does not hold it yet. A link
// never changes what a user already holds: changing a held claim is an
// operator action (ChangeGrant), not a side effect of an invitation.

// RedemptionClaims is what a redemption offers: the invitation's claims,
// then what the redemption hook added (the hook wins over the invitation).
func RedemptionClaims(inv *Invitation, extra map[string]any) map[string]any {
	out := make(map[string]any, len(inv.Claims)+len(extra))
	maps.Copy(out, inv.Claims)
	maps.Copy(out, extra)
	return out
}

// MergeRedemption folds a redeemed invitation into g by the rule above.
func (g *Grant) MergeRedemption(inv *Invitation, extra map[string]any, at time.Time) {
	for _, r := range inv.Roles {
		if r != "" && !slices.Contains(g.Roles, r) {
			g.Roles = append(g.Roles, r)
		}
	}
	if g.Claims == nil {
		g.Claims = map[string]any{}
	}
	for k, v := range RedemptionClaims(inv, extra) {
		if _, held := g.Claims[k]; !held {
			g.Claims[k] = v
		}
	}
	if !slices.Contains(g.Invitations, inv.ID) {
		g.Invitations = append(g.Invitations, inv.ID)
	}
	g.UpdatedAt = at
}

// ClaimConflict is a claim an invitation offered that the user already held
// with another value: the held value was kept.
type ClaimConflict struct {
	Claim   string `json:"claim"`
	Kept    any    `json:"kept"`
	Offered any    `json:"offered"`
}

// ClaimConflicts lists, sorted by name, the offered claims whose value in g
// differs from the offer. Called on the grant before a redemption it says
// what the person is about to be refused; after it, what was kept.
func ClaimConflicts(g *Grant, offered map[string]any) []ClaimConflict {
	var out []ClaimConflict
	for _, k := range slices.Sorted(maps.Keys(offered)) {
		held, ok := g.Claims[k]
		if ok && !sameJSON(held, offered[k]) {
			out = append(out, ClaimConflict{Claim: k, Kept: held, Offered: offered[k]})
		}
	}
	return out
}

// ClaimsAdded lists, sorted, the offered claims g does not hold yet.
func ClaimsAdded(g *Grant, offered map[string]any) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(offered)) {
		if _, held := g.Claims[k]; !held {
			out = append(out, k)
		}
	}
	return out
}

// RolesAdded lists the invitation's roles g does not hold yet.
func RolesAdded(g *Grant, roles []string) []string {
	var out []string
	for _, r := range roles {
		if !slices.Contains(g.Roles, r) && !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out
}

// sameJSON compares two claim values as JSON: values read back from a store
// and values from a request differ in Go type (float64 vs int) but not in meaning.
func sameJSON(a, b any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(ja) == string(jb)
}
