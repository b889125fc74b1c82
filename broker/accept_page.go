package broker

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/usher-oidc/usher/grants"
)

// acceptView is what the accept page shows: which app, which invitation,
// which account receives it and what changes for that account.
type acceptView struct {
	chrome
	UILocales    string // the authorization request's, when there is one
	AppName      string
	Inviter      string
	InvitedEmail string
	AccountEmail string
	Connection   string
	EmailDiffers bool
	// Unverified: the account's email matches but is not verified yet;
	// Accept leads to "verify your email, then continue".
	Unverified  bool
	RolesAdded  []string
	ClaimsAdded []claimLine
	ClaimsKept  []claimConflictLine
	Flow, ID    string
	CSRF        string
	ClientID    string // the app the page answers for (not shown)
}

type claimLine struct{ Name, Value string }

type claimConflictLine struct{ Name, Kept, Offered string }

// acceptViewOf compares the invitation with the account's current grant.
func (b *Broker) acceptViewOf(ctx context.Context, inv *grants.Invitation, acct signedInAccount, clientID string) (acceptView, error) {
	g, err := b.grants.GetGrant(ctx, acct.UserID)
	if err != nil {
		return acceptView{}, err
	}
	v := acceptView{
		ClientID: b.invitationClientID(inv, clientID),
		AppName:  b.appName(inv.ClientID, clientID), Inviter: inv.Inviter, InvitedEmail: inv.Email,
		AccountEmail: acct.Email, Connection: connectionName(acct.Connection),
		EmailDiffers: !grants.SameEmail(inv.Email, acct.Email),
		RolesAdded:   grants.RolesAdded(g, inv.Roles),
	}
	for _, k := range grants.ClaimsAdded(g, inv.Claims) {
		v.ClaimsAdded = append(v.ClaimsAdded, claimLine{k, claimText(inv.Claims[k])})
	}
	for _, c := range grants.ClaimConflicts(g, inv.Claims) {
		v.ClaimsKept = append(v.ClaimsKept, claimConflictLine{c.Claim, claimText(c.Kept), claimText(c.Offered)})
	}
	return v, nil
}

// invitationClientID is the client the person continues to.
func (b *Broker) invitationClientID(inv *grants.Invitation, clientID string) string {
	if clientID != "" {
		return clientID
	}
	if c := b.invitationClient(inv, ""); c != nil {
		return c.ID
	}
	return ""
}

// appName is the client's display name, else invitations.app_name.
func (b *Broker) appName(clientIDs ...string) string {
	for _, id := range clientIDs {
		if c, ok := b.clients[id]; ok && c.Name != "" {
			return c.Name
		}
	}
	if b.opts.AppName != "" {
		return b.opts.AppName
	}
	return "the application"
}

func claimText(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	raw, _ := json.Marshal(v)
	return string(raw)
}

// connectionName is how a person knows an Auth0 connection.
func connectionName(c string) string {
	switch c {
	case "", "Username-Password-Authentication":
		return "email and password"
	case "google-oauth2":
		return "Google"
	case "facebook":
		return "Facebook"
	case "apple":
		return "Apple"
	case "github":
		return "GitHub"
	case "windowslive":
		return "Microsoft"
	}
	return c
}

func (b *Broker) renderAccept(w http.ResponseWriter, r *http.Request, v acceptView) {
	v.chrome = b.chromeFor(r, v.UILocales, v.ClientID)
	v.chrome.App = v.AppName
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_ = acceptTmpl.Execute(w, v)
}

var acceptTmpl = pageTemplate("accept", `{{define "title"}}{{.T.Text "accept.title" "app" .AppName}}{{end}}{{template "top" .}}
<h1 id="title">{{.T.Text "accept.title" "app" .AppName}}</h1>
<p id="invited">{{if .Inviter}}{{.T.HTML "accept.invited_by" "inviter" .Inviter "email" .InvitedEmail}}{{else}}{{.T.HTML "accept.invited" "email" .InvitedEmail}}{{end}}</p>
<p id="account">{{.T.HTML "accept.account" "account" (or .AccountEmail (.T.Text "accept.no_email")) "connection" .Connection}}</p>
{{if .Unverified}}<p class="warn" id="unverified">{{.T.HTML "accept.unverified" "email" .AccountEmail}}</p>{{end}}
{{if .EmailDiffers}}<p class="warn" id="email-differs">{{.T.HTML "accept.email_differs" "email" .InvitedEmail}}</p>{{end}}
<div id="changes">
{{if .RolesAdded}}<p>{{.T.Text "accept.roles_added"}} {{range $i, $r := .RolesAdded}}{{if $i}}, {{end}}<code class="role">{{$r}}</code>{{end}}</p>{{end}}
{{if .ClaimsAdded}}<p>{{.T.Text "accept.claims_added"}}</p><ul>{{range .ClaimsAdded}}<li class="claim-added"><code>{{.Name}}</code>: {{.Value}}</li>{{end}}</ul>{{end}}
{{if .ClaimsKept}}<p class="warn">{{.T.Text "accept.claims_kept"}}</p><ul>{{range .ClaimsKept}}<li class="claim-kept"><code>{{.Name}}</code> {{$.T.Text "accept.claim_kept" "kept" .Kept "offered" .Offered}}</li>{{end}}</ul>{{end}}
{{if not (or .RolesAdded .ClaimsAdded)}}<p id="nothing-new">{{.T.Text "accept.nothing_new"}}</p>{{end}}
</div>
<form method="post" action="/accept">
<input type="hidden" name="flow" value="{{.Flow}}"><input type="hidden" name="id" value="{{.ID}}"><input type="hidden" name="csrf" value="{{.CSRF}}">
<button class="primary" id="accept" name="action" value="accept">{{if .AccountEmail}}{{.T.Text "accept.accept_as" "account" .AccountEmail}}{{else}}{{.T.Text "accept.accept_this"}}{{end}}</button>
<button id="other" name="action" value="other">{{.T.Text "accept.other"}}</button>
<button id="later" name="action" value="later">{{.T.Text "accept.later"}}</button>
<button id="decline" name="action" value="decline">{{.T.Text "accept.decline"}}</button>
</form>
{{template "bottom" .}}`)
