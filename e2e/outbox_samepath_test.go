package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/usher-oidc/usher/app"
	"github.com/usher-oidc/usher/config"
	"github.com/usher-oidc/usher/internal/testkit"
)

// The admin page and the admin API call the same use cases, so what an
// invitation leaves behind is the same whichever created, resent or revoked
// it: the same audit actions with the same detail keys, the same webhooks
// with the same payload shape, the same timeline and the same mails. Only
// the actor differs: the API client (client:<id>) or the admin's user ID.
// The same invitations are made both ways (a mailed one, resent; a link
// one, resent and revoked); the admin page is driven by a scripted browser
// (cookies, forms and their CSRF token).
func TestSamePathAdminPageAndAPI(t *testing.T) {
	t.Parallel()
	hooks := &hookLog{key: []byte("same-path-webhook-key-0123456789")}
	srv := httptest.NewServer(hooks)
	t.Cleanup(srv.Close)
	d := startDev(t, app.DevOptions{WebhookBackoff: 20 * time.Millisecond, Configure: func(c *config.Config) {
		c.Webhooks = []config.Webhook{{ID: "crm", URL: srv.URL, Secrets: []string{"whsec_" + base64.StdEncoding.EncodeToString(hooks.key)}}}
	}})
	base := strings.TrimSuffix(d.IssuerURL, "/")
	api := funnelToken(t, d, "invitations:write invitations:read")

	page := newAgent(t, "http://never.invalid")
	resp, body := page.get(base + "/admin/login")
	resp, body = page.devidpForm(resp, body, "login", url.Values{"email": {app.DevAdminEmail}, "password": {app.DevAdminPassword}})
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/admin" {
		t.Fatalf("admin sign-in: %d at %s\n%s", resp.StatusCode, resp.Request.URL, clipText(body))
	}
	csrf := csrfRE.FindStringSubmatch(body)
	if csrf == nil {
		t.Fatalf("no CSRF token on the admin page:\n%s", clipText(body))
	}
	users := apiCall(t, d, http.MethodGet, "/api/users?email="+url.QueryEscape(app.DevAdminEmail), api, nil)
	list, _ := users.body["users"].([]any)
	if len(list) != 1 {
		t.Fatalf("the admin user: %s", users.raw)
	}
	adminID := str(list[0].(map[string]any), "id")
	adminName := "Dev Admin" // the devidp profile's name: the page names the admin as the inviter

	// The admin page: each action is a form POST that redirects to the
	// invitation's page.
	pagePost := func(path string, form url.Values) string {
		t.Helper()
		form.Set("csrf", csrf[1])
		resp, body := page.postForm(base+path, form)
		id, ok := strings.CutPrefix(resp.Request.URL.Path, "/admin/invitations/")
		if resp.StatusCode != http.StatusOK || !ok {
			t.Fatalf("POST %s: %d at %s\n%s", path, resp.StatusCode, resp.Request.URL, clipText(body))
		}
		return id
	}
	apiPost := func(method, path string, body any) string {
		t.Helper()
		r := apiCall(t, d, method, path, api, body)
		if r.status != http.StatusOK && r.status != http.StatusCreated {
			t.Fatalf("%s %s: %d %s", method, path, r.status, r.raw)
		}
		return str(r.body, "id")
	}
	type made struct{ mailed, link string }
	var viaPage, viaAPI made
	viaPage.mailed = pagePost("/admin/invitations", url.Values{"email": {"page-mailed@example.com"}, "roles_text": {"customer beta"}, "delivery": {"email"}})
	viaPage.link = pagePost("/admin/invitations", url.Values{"email": {"page-link@example.com"}, "roles_text": {"customer beta"}, "delivery": {"link"}})
	viaAPI.mailed = apiPost(http.MethodPost, "/api/invitations", map[string]any{"email": "api-mailed@example.com", "roles": []string{"customer", "beta"}, "send_email": true, "inviter": adminName})
	viaAPI.link = apiPost(http.MethodPost, "/api/invitations", map[string]any{"email": "api-link@example.com", "roles": []string{"customer", "beta"}, "send_email": false, "inviter": adminName})
	// The first mail goes out before the resend replaces its link.
	waitMails(t, d, "page-mailed@example.com", 1)
	waitMails(t, d, "api-mailed@example.com", 1)
	pagePost("/admin/invitations/"+viaPage.mailed+"/resend", url.Values{})
	pagePost("/admin/invitations/"+viaPage.link+"/resend", url.Values{})
	pagePost("/admin/invitations/"+viaPage.link+"/revoke", url.Values{})
	apiPost(http.MethodPost, "/api/invitations/"+viaAPI.mailed+"/resend", nil)
	apiPost(http.MethodPost, "/api/invitations/"+viaAPI.link+"/resend", nil)
	apiPost(http.MethodDelete, "/api/invitations/"+viaAPI.link, nil)
	pageMails := waitMails(t, d, "page-mailed@example.com", 2)
	apiMails := waitMails(t, d, "api-mailed@example.com", 2)

	// Every event is in the audit log and at the receiver.
	want := map[string][]string{ // invitation → audit actions, oldest first
		viaPage.mailed: {"invitation.created", "invitation.resent"},
		viaAPI.mailed:  {"invitation.created", "invitation.resent"},
		viaPage.link:   {"invitation.created", "invitation.resent", "invitation.revoked"},
		viaAPI.link:    {"invitation.created", "invitation.resent", "invitation.revoked"},
	}
	audit := map[string][]map[string]any{}
	testkit.Eventually(t, "the audit records and webhooks of both paths", func() bool {
		for id, actions := range want {
			r := apiCall(t, d, http.MethodGet, "/api/audit?target="+id, api, nil)
			recs, _ := r.body["records"].([]any)
			if len(recs) < len(actions) {
				return false
			}
			audit[id] = nil
			for i := len(recs) - 1; i >= 0; i-- { // newest first: turn it round
				audit[id] = append(audit[id], recs[i].(map[string]any))
			}
		}
		n := 0
		for _, h := range hooks.snapshot() {
			if want[h.Invitation] != nil {
				n++
			}
		}
		return n >= 6 // created ×4, revoked ×2
	})

	for _, pair := range []struct{ what, page, api string }{{"mailed, resent", viaPage.mailed, viaAPI.mailed}, {"link, resent, revoked", viaPage.link, viaAPI.link}} {
		// Audit: same actions, same detail keys and values (but the email),
		// the actor the only difference.
		pa, aa := audit[pair.page], audit[pair.api]
		if got := actionsOf(pa); !slices.Equal(got, want[pair.page]) {
			t.Errorf("%s via the admin page: audit %v, want %v", pair.what, got, want[pair.page])
		}
		if got := actionsOf(aa); !slices.Equal(got, want[pair.api]) {
			t.Errorf("%s via the API: audit %v, want %v", pair.what, got, want[pair.api])
		}
		for i := range min(len(pa), len(aa)) {
			if p, a := detailOf(pa[i], pair.page), detailOf(aa[i], pair.api); p != a {
				t.Errorf("%s, %s: audit detail via the page %s, via the API %s", pair.what, str(pa[i], "action"), p, a)
			}
			if str(pa[i], "actor") != adminID || str(aa[i], "actor") != "client:"+app.DevFunnelClientID {
				t.Errorf("%s, %s: actors %q (page) and %q (API), want the admin %s and client:%s",
					pair.what, str(pa[i], "action"), str(pa[i], "actor"), str(aa[i], "actor"), adminID, app.DevFunnelClientID)
			}
		}
		// Webhooks: one per event, same payload shape and values (but the
		// invitation's own ones).
		ph, ah := hooksOf(hooks.snapshot(), pair.page), hooksOf(hooks.snapshot(), pair.api)
		if pt, at := mapKeys(ph), mapKeys(ah); !slices.Equal(pt, at) {
			t.Errorf("%s: webhooks via the page %v, via the API %v", pair.what, pt, at)
		}
		for typ, p := range ph {
			if a, ok := ah[typ]; ok && p != a {
				t.Errorf("%s, webhook %s:\n via the page %s\n via the API  %s", pair.what, typ, p, a)
			}
		}
		// The invitation itself: status, mail status, timeline.
		pi := apiCall(t, d, http.MethodGet, "/api/invitations/"+pair.page, api, nil)
		ai := apiCall(t, d, http.MethodGet, "/api/invitations/"+pair.api, api, nil)
		if p, a := invitationShape(pi.body), invitationShape(ai.body); p != a {
			t.Errorf("%s: the invitation via the page %s, via the API %s", pair.what, p, a)
		}
	}
	// The mails: same subject, one per link.
	for i := range 2 {
		if pageMails[i].Subject != apiMails[i].Subject {
			t.Errorf("mail %d: subject %q via the page, %q via the API", i+1, pageMails[i].Subject, apiMails[i].Subject)
		}
	}
	if pageMails[0].Link == pageMails[1].Link || apiMails[0].Link == apiMails[1].Link {
		t.Errorf("the resend mailed the old link again: %+v %+v", pageMails, apiMails)
	}
	t.Logf("admin page %s and API client:%s: %d audit records each way, webhooks %v, mails %q",
		adminID, app.DevFunnelClientID, len(audit[viaPage.mailed])+len(audit[viaPage.link]),
		mapKeys(hooksOf(hooks.snapshot(), viaPage.link)), pageMails[0].Subject)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func actionsOf(recs []map[string]any) []string {
	var out []string
	for _, r := range recs {
		out = append(out, str(r, "action"))
	}
	return out
}

// detailOf renders an audit record's detail with the invitation's own
// values (its email) replaced, for comparing two invitations.
func detailOf(rec map[string]any, id string) string {
	detail, _ := rec["detail"].(map[string]any)
	keys := mapKeys(detail)
	var parts []string
	for _, k := range keys {
		v := fmt.Sprint(detail[k])
		if k == "email" {
			v = "<own email>"
		}
		parts = append(parts, k+"="+v)
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// hooksOf is the webhooks of one invitation by type, each rendered with its
// own values (email, invitation_id, expires_at) masked: the payload's shape
// and the values the two paths must agree on. Several distinct webhook-ids
// for one type show as such.
func hooksOf(all []hookDelivery, id string) map[string]string {
	ids := map[string]map[string]bool{}
	out := map[string]string{}
	for _, h := range all {
		if h.Invitation != id {
			continue
		}
		if ids[h.Type] == nil {
			ids[h.Type] = map[string]bool{}
		}
		ids[h.Type][h.ID] = true
		var body map[string]any
		json.Unmarshal([]byte(h.Raw), &body)
		body["timestamp"] = "<time>"
		data, _ := body["data"].(map[string]any)
		for _, k := range []string{"email", "invitation_id", "expires_at"} {
			if _, ok := data[k]; ok {
				data[k] = "<own " + k + ">"
			}
		}
		b, _ := json.Marshal(body)
		out[h.Type] = fmt.Sprintf("%s (%d webhook-ids)", b, len(ids[h.Type]))
	}
	return out
}

// invitationShape is what the API shows of an invitation but its own values.
func invitationShape(v map[string]any) string {
	var events []string
	for _, e := range v["events"].([]any) {
		ev := e.(map[string]any)
		detail, _ := ev["detail"].(map[string]any)
		events = append(events, str(ev, "type")+fmt.Sprint(mapKeys(detail)))
	}
	roles, _ := json.Marshal(v["roles"])
	return fmt.Sprintf("status=%v email_status=%v roles=%s inviter=%v link=%v client_id=%v metadata=%v timeline=%v",
		v["status"], v["email_status"], roles, v["inviter"], v["link"], v["client_id"], v["metadata"], events)
}

type devMail struct {
	To, Subject, Link string
}

// waitMails waits until the dev outbox holds n mails to addr and returns them, oldest first.
func waitMails(t *testing.T, d *app.Dev, addr string, n int) []devMail {
	t.Helper()
	var got []devMail
	testkit.Eventually(t, fmt.Sprintf("%d mails to %s", n, addr), func() bool {
		resp, err := http.Get(d.OutboxURL + "messages.json")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var msgs []struct {
			To      string    `json:"to"`
			Subject string    `json:"subject"`
			Link    string    `json:"link"`
			At      time.Time `json:"at"`
		}
		if json.NewDecoder(resp.Body).Decode(&msgs) != nil {
			return false
		}
		sort.SliceStable(msgs, func(i, j int) bool { return msgs[i].At.Before(msgs[j].At) })
		got = got[:0]
		for _, m := range msgs {
			if strings.EqualFold(m.To, addr) {
				got = append(got, devMail{m.To, m.Subject, m.Link})
			}
		}
		return len(got) >= n
	})
	if len(got) != n {
		t.Fatalf("%d mails to %s, want %d: %+v", len(got), addr, n, got)
	}
	return got
}
