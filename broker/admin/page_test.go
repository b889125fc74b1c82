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

	form := url.Values{"csrf": {csrf}, "email": {"new@example.com"}, "roles_text": {"editor"}, "delivery": {"link"}, "expires_days": {"3"}, "locale": {"pt-BR"}}
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
	if inv.Email != "new@example.com" || inv.Inviter != "alice@example.com" || inv.SendEmail || inv.ExpiresAt.Sub(inv.CreatedAt) != 72*time.Hour || inv.Locale != "pt-BR" {
		t.Errorf("stored: %+v", inv)
	}
	path := "/admin/invitations/" + url.PathEscape(id)
	page := b.do("GET", path, nil).Body.String()
	if !strings.Contains(page, "<dt>Mail language</dt><dd>pt-BR</dd>") {
		t.Errorf("the mail language is not shown:\n%s", page)
	}
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
	rec = b.do("POST", "/admin/invitations", url.Values{"csrf": {csrf}, "email": {"x@example.com"}, "locale": {"not a language"}})
	body = rec.Body.String()
	if rec.Code != http.StatusUnprocessableEntity || !strings.Contains(body, `id="error-locale"`) || !strings.Contains(body, "BCP 47") || !strings.Contains(body, `value="not a language"`) {
		t.Fatalf("a bad mail language: %d\n%s", rec.Code, body)
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

// createByLink creates an invitation through the form (link only) and
// returns its detail page's path and the CSRF token.
func createByLink(t *testing.T, b *browser, email, days string) (path, csrf string) {
	t.Helper()
	csrf = b.csrf(b.do("GET", "/admin", nil).Body.String())
	rec := b.do("POST", "/admin/invitations", url.Values{"csrf": {csrf}, "email": {email}, "delivery": {"link"}, "expires_days": {days}})
	if rec.Code != http.StatusSeeOther {
		t.Fatalf("create: %d\n%s", rec.Code, rec.Body)
	}
	return strings.TrimPrefix(rec.Header().Get("Location"), "https://usher.example.com"), csrf
}

var confirmRe = regexp.MustCompile(`(?s)<details class="confirm">.*?</details>`)

// outsideConfirm is the page without its confirmation disclosures.
func outsideConfirm(page string) string { return confirmRe.ReplaceAllString(page, "") }

// Revoke and Resend (a new link) ask first: their forms sit inside a
// <details> disclosure (no script: the one script on the admin pages is the
// Copy button's, nonce'd), behind a summary that posts nothing.
func TestPageRevokeAndResendAskFirst(t *testing.T) {
	h, _, signIn := testPage(t)
	b := newBrowser(t, h, signIn("alice", true))
	path, _ := createByLink(t, b, "confirm@example.com", "3")
	for _, p := range []string{path, "/admin"} {
		page := b.do("GET", p, nil).Body.String()
		for _, action := range []string{"/revoke", "/resend"} {
			if !strings.Contains(page, action+`"`) {
				t.Errorf("%s: no %s form at all", p, action)
			}
			if strings.Contains(outsideConfirm(page), action+`"`) {
				t.Errorf("%s: a %s form posts without a confirmation step", p, action)
			}
		}
		for _, m := range confirmRe.FindAllString(page, -1) {
			if !strings.Contains(m, "<summary") || !strings.Contains(m, `">Yes, `) {
				t.Errorf("%s: confirmation without a summary or a Yes button:\n%s", p, m)
			}
		}
		if strings.Count(page, "<script") != strings.Count(page, `<script nonce="`) || strings.Contains(page, "onclick") {
			t.Errorf("%s: script on the page without a nonce", p)
		}
	}
	page := b.do("GET", path, nil).Body.String()
	if !strings.Contains(page, `<summary class="danger" id="revoke">Revoke</summary>`) || !strings.Contains(page, `id="revoke-confirm">Yes, revoke</button>`) {
		t.Errorf("detail page revoke confirmation:\n%s", page)
	}
}

// An expired invitation offers Resend (which gives it a new expiry) but no
// Revoke, and shows "expired", in the list and on its page.
func TestPageExpiredOffersNoRevoke(t *testing.T) {
	h, _, signIn := testPage(t)
	b := newBrowser(t, h, signIn("alice", true))
	path, _ := createByLink(t, b, "late@example.com", "1")
	later := h.Now().Add(48 * time.Hour)
	h.Now = func() time.Time { return later }

	list := b.do("GET", "/admin", nil).Body.String()
	row := regexp.MustCompile(`(?s)<tr data-id="[^"]+" data-status="expired">.*?</tr>`).FindString(list)
	if row == "" || !strings.Contains(row, `<span class="badge expired">expired</span>`) {
		t.Fatalf("no expired row:\n%s", list)
	}
	if strings.Contains(row, "/revoke") || !strings.Contains(row, "/resend") {
		t.Errorf("expired row actions:\n%s", row)
	}
	page := b.do("GET", path, nil).Body.String()
	if !strings.Contains(page, `id="inv-status">expired</span>`) {
		t.Errorf("detail status:\n%s", page)
	}
	if strings.Contains(page, "/revoke") || strings.Contains(page, `id="revoke"`) || !strings.Contains(page, `id="resend"`) {
		t.Errorf("expired detail page actions:\n%s", page)
	}
}

func TestPageLinkOnlyWording(t *testing.T) {
	h, _, signIn := testPage(t)
	b := newBrowser(t, h, signIn("alice", true))
	path, _ := createByLink(t, b, "wording@example.com", "3")
	for _, p := range []string{path, "/admin"} {
		page := b.do("GET", p, nil).Body.String()
		if !strings.Contains(page, "not mailed (link only)") || strings.Contains(page, "link copied") {
			t.Errorf("%s: email status wording:\n%s", p, page)
		}
	}
}

// Each field's errors sit inside that field, one per line.
func TestPageFormErrorsUnderTheirFields(t *testing.T) {
	h, _, signIn := testPage(t)
	b := newBrowser(t, h, signIn("alice", true))
	csrf := b.csrf(b.do("GET", "/admin", nil).Body.String())
	rec := b.do("POST", "/admin/invitations", url.Values{"csrf": {csrf}, "email": {"x@example.com"},
		"claims": {`{"sub": "a", "iss": "b"}`}, "expires_days": {"999"}})
	body := rec.Body.String()
	if rec.Code != http.StatusUnprocessableEntity {
		t.Fatalf("%d\n%s", rec.Code, body)
	}
	claims := regexp.MustCompile(`<p class="error" id="error-claims">(.*?)</p>`).FindStringSubmatch(body)
	if claims == nil || strings.Count(claims[1], `<span class="error-line">`) != 2 {
		t.Errorf("claims errors are not one per line:\n%s", body)
	}
	for _, f := range []struct{ input, err string }{{`id="claims"`, "error-claims"}, {`id="expires_days"`, "error-expires"}} {
		field := regexp.MustCompile(`(?s)<div class="field invalid">\n<label[^\n]*\n[^\n]*` + f.input + `.*?</div>`).FindString(body)
		if !strings.Contains(field, `id="`+f.err+`"`) {
			t.Errorf("%s is not inside its field:\n%s", f.err, body)
		}
	}
}

// Dates do not wrap; the list scrolls inside its own box on a narrow screen.
func TestPageDatesAndNarrowLayout(t *testing.T) {
	h, _, signIn := testPage(t)
	b := newBrowser(t, h, signIn("alice", true))
	path, _ := createByLink(t, b, "dates@example.com", "3")
	list := b.do("GET", "/admin", nil).Body.String()
	if n := strings.Count(list, `<td class="date">`); n != 2 {
		t.Errorf("%d date cells in the one row, want 2", n)
	}
	if !strings.Contains(list, "td.date,.date,.when{white-space:nowrap}") || !strings.Contains(list, ".table-wrap{overflow-x:auto") {
		t.Errorf("stylesheet lacks nowrap dates or the scrolling table box")
	}
	if !regexp.MustCompile(`<div class="table-wrap" id="invitation-scroll">\s*<table id="invitation-list">`).MatchString(list) {
		t.Errorf("the invitation table is not inside its scrolling box:\n%s", list)
	}
	if page := b.do("GET", path, nil).Body.String(); !strings.Contains(page, `<dd class="date">`) {
		t.Errorf("detail page expiry is not a date cell:\n%s", page)
	}
}

// A failed redemption names who tried (email, connection) and shows its
// detail keys in words.
func TestPageTimelineFailedRedemption(t *testing.T) {
	h, store, signIn := testPage(t)
	b := newBrowser(t, h, signIn("alice", true))
	path, _ := createByLink(t, b, "tl@example.com", "3")
	id, _ := url.PathUnescape(strings.TrimPrefix(path, "/admin/invitations/"))
	if _, err := store.UpdateInvitation(t.Context(), id, func(i *grants.Invitation) error {
		i.Events = append(i.Events, grants.Event{Type: "redemption_failed", At: h.Now(),
			Detail: map[string]string{"user_id": "bob", "reason": "email does not match", "client_id": "spa"}})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	page := b.do("GET", path, nil).Body.String()
	li := regexp.MustCompile(`(?s)<li class="redemption_failed".*?</li>`).FindString(page)
	for _, want := range []string{
		`>bob</a> (<span class="user-email">bob@example.com</span>)`,
		`email does not match`,
		`<span class="muted detail-key">Application:</span> spa`,
	} {
		if !strings.Contains(li, want) {
			t.Errorf("failed redemption lacks %q:\n%s", want, li)
		}
	}
	if strings.Contains(li, "client id:") {
		t.Errorf("raw detail key shown:\n%s", li)
	}
}
