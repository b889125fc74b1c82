package broker

import (
	"context"
	"encoding/json"
	"html/template"
	"net/http"

	"github.com/usher-oidc/usher/grants"
)

// acceptView is what the accept page shows: which app, which invitation,
// which account receives it and what changes for that account.
type acceptView struct {
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

func renderAccept(w http.ResponseWriter, v acceptView) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_ = acceptTmpl.Execute(w, v)
}

var acceptTmpl = template.Must(template.New("accept").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Accept your invitation to {{.AppName}} · usher</title>
<style>body{font-family:system-ui,sans-serif;background:#f5f5f7;margin:0;display:flex;min-height:100vh;align-items:center;justify-content:center}
:focus-visible{outline:3px solid #2d5be3;outline-offset:2px}
main{background:#fff;max-width:34rem;padding:2rem;border-radius:12px;box-shadow:0 2px 12px rgba(0,0,0,.08)}
h1{font-size:1.3rem;margin-top:0}.warn{background:#fff4e5;border-left:4px solid #e69500;padding:.6rem .8rem}
button{font:inherit;margin:.8rem .4rem 0 0;padding:.6rem 1rem;border-radius:8px;border:1px solid #2d5be3;background:#fff;color:#2d5be3;cursor:pointer}
button.primary{background:#2d5be3;color:#fff}code{background:#f0f0f3;padding:0 .2rem;border-radius:4px}</style>
</head><body><main>
<h1 id="title">Accept your invitation to {{.AppName}}</h1>
<p id="invited">{{if .Inviter}}{{.Inviter}} invited{{else}}This invitation was sent to{{end}} <strong>{{.InvitedEmail}}</strong>.</p>
<p id="account">You are signed in as <strong>{{if .AccountEmail}}{{.AccountEmail}}{{else}}an account without an email{{end}}</strong> ({{.Connection}}). Accepting adds the invitation to this account.</p>
{{if .Unverified}}<p class="warn" id="unverified">Your email address <strong>{{.AccountEmail}}</strong> is not verified yet. After you accept, verify it through the email the sign-in service sent you; the invitation is added once it is verified.</p>{{end}}
{{if .EmailDiffers}}<p class="warn" id="email-differs">The invitation was sent to <strong>{{.InvitedEmail}}</strong>, not to the account you are signed in with. Accept only if this account is really meant to receive it.</p>{{end}}
<div id="changes">
{{if .RolesAdded}}<p>Roles added: {{range $i, $r := .RolesAdded}}{{if $i}}, {{end}}<code class="role">{{$r}}</code>{{end}}</p>{{end}}
{{if .ClaimsAdded}}<p>Details added:</p><ul>{{range .ClaimsAdded}}<li class="claim-added"><code>{{.Name}}</code>: {{.Value}}</li>{{end}}</ul>{{end}}
{{if .ClaimsKept}}<p class="warn">Your account already holds these details; they are kept as they are:</p><ul>{{range .ClaimsKept}}<li class="claim-kept"><code>{{.Name}}</code> stays {{.Kept}} (the invitation says {{.Offered}})</li>{{end}}</ul>{{end}}
{{if not (or .RolesAdded .ClaimsAdded)}}<p id="nothing-new">Your account already holds everything this invitation grants.</p>{{end}}
</div>
<form method="post" action="/accept">
<input type="hidden" name="flow" value="{{.Flow}}"><input type="hidden" name="id" value="{{.ID}}"><input type="hidden" name="csrf" value="{{.CSRF}}">
<button class="primary" id="accept" name="action" value="accept">Accept as {{if .AccountEmail}}{{.AccountEmail}}{{else}}this account{{end}}</button>
<button id="other" name="action" value="other">Use another account</button>
<button id="later" name="action" value="later">Not now</button>
<button id="decline" name="action" value="decline">Decline</button>
</form>
</main></body></html>`))
