package admin

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/usher-oidc/usher/grants"
)

// The user list searches by email prefix; the user page's actions ask first
// and do what they say; the audit view filters by what the URL says.
func TestPageUsersAndAudit(t *testing.T) {
	h, store, signIn := testPage(t)
	ctx := t.Context()
	if _, _, err := store.ResolveIdentity(ctx, grants.Identity{Issuer: "https://idp.example.com/", Subject: "grace"},
		grants.Profile{Email: "grace@example.com"}, "grace", h.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := store.AddRoles(ctx, "grace", []string{"member", "beta"}, h.Now()); err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, h, signIn("alice", true))

	for _, tc := range []struct {
		path       string
		want, miss []string
	}{
		{"/admin/users", []string{`data-id="alice"`, `data-id="bob"`, `data-id="grace"`, `id="nav-users"`}, nil},
		{"/admin/users?q=GR", []string{`data-id="grace"`, `value="GR"`}, []string{`data-id="alice"`}},
		{"/admin/users?q=nobody", []string{`id="empty"`}, []string{`data-id=`}},
	} {
		rec := b.do("GET", tc.path, nil)
		page := rec.Body.String()
		for _, s := range tc.want {
			if !strings.Contains(page, s) {
				t.Errorf("GET %s: no %s (status %d)", tc.path, s, rec.Code)
			}
		}
		for _, s := range tc.miss {
			if strings.Contains(page, s) {
				t.Errorf("GET %s: unexpected %s", tc.path, s)
			}
		}
	}

	page := b.do("GET", "/admin/users/grace", nil).Body.String()
	for _, action := range []string{"/roles/remove", "/sign-out", "/erase"} {
		if !strings.Contains(page, action+`"`) || strings.Contains(outsideConfirm(page), action+`"`) {
			t.Errorf("user page: the %s form is missing or posts without a confirmation step", action)
		}
	}
	csrf := b.csrf(page)
	post := func(path string, form url.Values) string {
		t.Helper()
		form.Set("csrf", csrf)
		rec := b.do("POST", path, form)
		if rec.Code != http.StatusSeeOther {
			t.Fatalf("POST %s: %d\n%s", path, rec.Code, rec.Body)
		}
		loc, _ := url.Parse(rec.Header().Get("Location"))
		return b.do("GET", loc.Path, nil).Body.String()
	}
	page = post("/admin/users/grace/roles/remove", url.Values{"role": {"beta"}})
	if !strings.Contains(page, "Role beta removed") {
		t.Errorf("after removing a role:\n%s", page)
	}
	page = post("/admin/users/grace/sign-out", url.Values{})
	if !strings.Contains(page, `id="user-signed-out"`) || !strings.Contains(page, "Signed out everywhere") {
		t.Errorf("after sign-out:\n%s", page)
	}
	page = post("/admin/users/grace/erase", url.Values{})
	if !strings.Contains(page, "User grace erased") || strings.Contains(page, `data-id="grace"`) {
		t.Errorf("after erase, the list:\n%s", page)
	}
	if _, err := store.GetUser(ctx, "grace"); err == nil {
		t.Error("grace still exists")
	}

	// The audit view: records appended by hand (the outbox writes them in usher).
	for _, rec := range []grants.AuditRecord{
		{ID: "a1", At: h.Now(), Action: grants.EventUserErased, Actor: "alice", Target: "grace"},
		{ID: "a2", At: h.Now().AddDate(0, 0, -3), Action: "invitation.created", Actor: "client:funnel", Target: "inv-1"},
	} {
		if err := store.AppendAudit(ctx, &rec); err != nil {
			t.Fatal(err)
		}
	}
	today := h.Now().Format(auditDateLayout)
	for _, tc := range []struct {
		query      string
		want, miss []string
	}{
		{"", []string{`data-action="user.erased"`, `data-action="invitation.created"`}, nil},
		{"action=user.erased", []string{`data-action="user.erased"`, `value="user.erased"`}, []string{`data-action="invitation.created"`}},
		{"actor=client:funnel", []string{`data-action="invitation.created"`}, []string{`data-action="user.erased"`}},
		{"since=" + today, []string{`data-action="user.erased"`}, []string{`data-action="invitation.created"`}},
		{"until=" + h.Now().AddDate(0, 0, -1).Format(auditDateLayout), []string{`data-action="invitation.created"`}, []string{`data-action="user.erased"`}},
		{"since=yesterday", []string{"YYYY-MM-DD"}, nil},
	} {
		page := b.do("GET", "/admin/audit?"+tc.query, nil).Body.String()
		for _, s := range tc.want {
			if !strings.Contains(page, s) {
				t.Errorf("audit %q: no %s", tc.query, s)
			}
		}
		for _, s := range tc.miss {
			if strings.Contains(page, s) {
				t.Errorf("audit %q: unexpected %s", tc.query, s)
			}
		}
	}
}
