package admin

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/securecookie"
	gsessions "github.com/gorilla/sessions"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/internal/testkit"
)

// testPage is the admin page over a real bolt store, with gorilla's cookie
// store standing in for the OP's browser sessions. signIn signs a browser
// in as a user: "alice" holds the admin role, "bob" does not.
func testPage(t *testing.T) (*Page, grants.Store, func(uid string, admin bool) []*http.Cookie) {
	t.Helper()
	store, _ := testkit.OpenBolt(t)
	ctx := t.Context()
	now := time.Now().UTC().Truncate(time.Second)
	for _, u := range []string{"alice", "bob"} {
		if _, _, err := store.ResolveIdentity(ctx, grants.Identity{Issuer: "https://idp.example.com/", Subject: u},
			grants.Profile{Email: u + "@example.com", EmailVerified: true}, u, now); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := store.AddRoles(ctx, "alice", []string{"usher:admin"}, now); err != nil {
		t.Fatal(err)
	}
	cookies := gsessions.NewCookieStore(securecookie.GenerateRandomKey(32), securecookie.GenerateRandomKey(32))
	h := &Page{
		Invitations: grants.NewService(grants.ServiceOptions{Store: store, Now: func() time.Time { return now }}),
		Store:       store,
		Session:     func(r *http.Request) (*gsessions.Session, error) { return cookies.Get(r, "s") },
		SignedIn: func(sess *gsessions.Session) (string, bool) {
			uid, _ := sess.Values["uid"].(string)
			return uid, sess.Values["admin"] == true
		},
		SignIn:    http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) }),
		Link:      func(_ *grants.Invitation, token string) string { return "https://usher.example.com/invite/" + token },
		Clients:   []Client{{ID: "spa", Name: "The App", Interactive: true}, {ID: "backend"}},
		Issuer:    "https://usher.example.com/",
		AdminRole: "usher:admin",
		Sealer:    securecookie.New(securecookie.GenerateRandomKey(32), securecookie.GenerateRandomKey(32)),
		Logger:    testkit.Logger(t),
		Now:       func() time.Time { return now },
	}
	signIn := func(uid string, admin bool) []*http.Cookie {
		req := httptest.NewRequest("GET", "/", nil)
		rec := httptest.NewRecorder()
		sess, _ := cookies.Get(req, "s")
		sess.Values["uid"], sess.Values["admin"] = uid, admin
		if err := sess.Save(req, rec); err != nil {
			t.Fatal(err)
		}
		return rec.Result().Cookies()
	}
	return h, store, signIn
}

type browser struct {
	t       *testing.T
	mux     *http.ServeMux
	cookies map[string]*http.Cookie
}

func newBrowser(t *testing.T, h *Page, cookies []*http.Cookie) *browser {
	b := &browser{t: t, mux: http.NewServeMux(), cookies: map[string]*http.Cookie{}}
	h.Mount(b.mux)
	for _, c := range cookies {
		b.cookies[c.Name] = c
	}
	return b
}

func (b *browser) do(method, path string, form url.Values) *httptest.ResponseRecorder {
	b.t.Helper()
	var req *http.Request
	if form != nil {
		req = httptest.NewRequest(method, path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Sec-Fetch-Site", "same-origin")
	} else {
		req = httptest.NewRequest(method, path, nil)
	}
	for _, c := range b.cookies {
		req.AddCookie(c)
	}
	rec := httptest.NewRecorder()
	b.mux.ServeHTTP(rec, req)
	for _, c := range rec.Result().Cookies() {
		b.cookies[c.Name] = c
		if c.MaxAge < 0 {
			delete(b.cookies, c.Name)
		}
	}
	return rec
}

var csrfRe = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (b *browser) csrf(page string) string {
	b.t.Helper()
	m := csrfRe.FindStringSubmatch(page)
	if m == nil {
		b.t.Fatalf("no CSRF token on the page:\n%s", page)
	}
	return m[1]
}

func TestPageNeedsAnAdmin(t *testing.T) {
	h, _, signIn := testPage(t)
	anon := newBrowser(t, h, nil)
	if rec := anon.do("GET", "/admin", nil); rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "https://usher.example.com/admin/login" {
		t.Fatalf("anonymous: %d %s", rec.Code, rec.Header().Get("Location"))
	}
	if rec := anon.do("GET", "/admin/login", nil); rec.Code != http.StatusTeapot {
		t.Errorf("GET /admin/login did not reach SignIn: %d", rec.Code)
	}
	// Signed in to an app, not through the admin sign-in: not enough.
	if rec := newBrowser(t, h, signIn("alice", false)).do("GET", "/admin", nil); rec.Code != http.StatusSeeOther {
		t.Errorf("app session: %d", rec.Code)
	}
	rec := newBrowser(t, h, signIn("bob", true)).do("GET", "/admin", nil)
	if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "does not hold the role usher:admin") {
		t.Errorf("non-admin: %d\n%s", rec.Code, rec.Body)
	}
	if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "style-src 'nonce-") {
		t.Errorf("CSP = %q", csp)
	}
	if rec := anon.do("GET", "/admin/nothing", nil); rec.Code != http.StatusNotFound {
		t.Errorf("unknown page: %d", rec.Code)
	}
}

func TestPageCreateShowsTheLinkOnce(t *testing.T) {
	h, store, signIn := testPage(t)
	b := newBrowser(t, h, signIn("alice", true))
	rec := b.do("GET", "/admin", nil)
	if rec.Code != http.StatusOK || strings.Contains(rec.Body.String(), "backend") { // only apps people sign in to are offered
		t.Fatalf("dashboard: %d\n%s", rec.Code, rec.Body)
	}
	csrf := b.csrf(rec.Body.String())

	form := url.Values{"csrf": {csrf}, "email": {"new@example.com"}, "roles_text": {"editor"}, "delivery": {"link"}, "expires_days": {"3"}}
	if rec := b.do("POST", "/admin/invitations", url.Values{"email": {"x@example.com"}}); rec.Code != http.StatusForbidden {
		t.Errorf("POST without CSRF token: %d", rec.Code)
	}
	rec = b.do("POST", "/admin/invitations", form)
	loc := rec.Header().Get("Location")
	if rec.Code != http.StatusSeeOther || !strings.HasPrefix(loc, "https://usher.example.com/admin/invitations/") {
		t.Fatalf("create: %d %s\n%s", rec.Code, loc, rec.Body)
	}
	id, _ := url.PathUnescape(strings.TrimPrefix(loc, "https://usher.example.com/admin/invitations/"))
	inv := testkit.Invitation(t, store, id)
	if inv.Email != "new@example.com" || inv.Inviter != "alice@example.com" || inv.SendEmail || inv.ExpiresAt.Sub(inv.CreatedAt) != 72*time.Hour {
		t.Errorf("stored: %+v", inv)
	}
	path := "/admin/invitations/" + url.PathEscape(id)
	page := b.do("GET", path, nil).Body.String()
	if !strings.Contains(page, "https://usher.example.com/invite/inv_") {
		t.Fatalf("the fresh link is not shown:\n%s", page)
	}
	if again := b.do("GET", path, nil).Body.String(); strings.Contains(again, "/invite/inv_") {
		t.Error("the link is shown a second time")
	}

	rec = b.do("POST", path+"/revoke", url.Values{"csrf": {csrf}})
	if rec.Code != http.StatusSeeOther || testkit.Invitation(t, store, id).Status != grants.StatusRevoked {
		t.Fatalf("revoke: %d", rec.Code)
	}
	if page := b.do("GET", path, nil).Body.String(); !strings.Contains(page, "Invitation revoked") {
		t.Errorf("no notice after revoke:\n%s", page)
	}
}

func TestPageCreateKeepsTheFormOnErrors(t *testing.T) {
	h, _, signIn := testPage(t)
	b := newBrowser(t, h, signIn("alice", true))
	csrf := b.csrf(b.do("GET", "/admin", nil).Body.String())
	rec := b.do("POST", "/admin/invitations", url.Values{"csrf": {csrf}, "email": {"not-an-email"}, "claims": {`{"a": 1,}`}, "external_id": {"CRM-7"}})
	body := rec.Body.String()
	if rec.Code != http.StatusUnprocessableEntity || !strings.Contains(body, "not valid JSON") || !strings.Contains(body, "CRM-7") {
		t.Fatalf("%d\n%s", rec.Code, body)
	}
}

func TestPageSetClaimAndSignOut(t *testing.T) {
	h, store, signIn := testPage(t)
	var audited []string
	h.Audit = func(_ context.Context, action, actor, target string, _ map[string]string) {
		audited = append(audited, action+" "+actor+" "+target)
	}
	b := newBrowser(t, h, signIn("alice", true))
	page := b.do("GET", "/admin/users/bob", nil)
	if page.Code != http.StatusOK || !strings.Contains(page.Body.String(), "bob@example.com") {
		t.Fatalf("user page: %d\n%s", page.Code, page.Body)
	}
	csrf := b.csrf(page.Body.String())
	rec := b.do("POST", "/admin/users/bob/claims", url.Values{"csrf": {csrf}, "claim": {"plan"}, "value": {"pro"}})
	if rec.Code != http.StatusSeeOther {
		t.Fatalf("set claim: %d\n%s", rec.Code, rec.Body)
	}
	g, err := store.GetGrant(t.Context(), "bob")
	if err != nil || g.Claims["plan"] != "pro" {
		t.Fatalf("grant: %+v %v", g, err)
	}
	// The change is recorded with the grant for the outbox (audit, webhooks).
	if len(g.Outbox) != 1 || g.Outbox[0].Type != grants.EventGrantChanged || g.Outbox[0].Actor != "alice" || g.Outbox[0].Detail["set_claim"] != "plan" {
		t.Fatalf("recorded events: %+v", g.Outbox)
	}
	rec = b.do("POST", "/admin/logout", url.Values{"csrf": {csrf}})
	if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "https://usher.example.com/admin/signed-out" {
		t.Fatalf("logout: %d %s", rec.Code, rec.Header().Get("Location"))
	}
	want := []string{"admin.signed_out alice alice"}
	if strings.Join(audited, "|") != strings.Join(want, "|") {
		t.Errorf("audited %q, want %q", audited, want)
	}
	if rec := b.do("GET", "/admin", nil); rec.Code != http.StatusSeeOther {
		t.Errorf("after sign-out: %d", rec.Code)
	}
}
