package admin

import (
	"fmt"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usher-oidc/usher/grants"
)

var (
	rowIDRe    = regexp.MustCompile(`<tr data-id="([^"]+)"`)
	nextLinkRe = regexp.MustCompile(`<a href="([^"]+)" id="next-page">`)
)

// listPage reads one page of the dashboard's list: its row IDs and the
// next-page link's query ("" without one).
func listPage(t *testing.T, b *browser, path string) (rows []string, next url.Values, body string) {
	t.Helper()
	rec := b.do("GET", path, nil)
	if rec.Code != http.StatusOK {
		t.Fatalf("GET %s: %d\n%s", path, rec.Code, rec.Body)
	}
	body = rec.Body.String()
	for _, m := range rowIDRe.FindAllStringSubmatch(body, -1) {
		rows = append(rows, m[1])
	}
	if m := nextLinkRe.FindStringSubmatch(body); m != nil {
		u, err := url.Parse(html.UnescapeString(m[1]))
		if err != nil {
			t.Fatal(err)
		}
		next = u.Query()
	}
	return rows, next, body
}

// The search box finds invitations by the start of their email; the status
// and date filters stay in the URL, and the pager's links carry them all.
func TestPageSearchKeepsFiltersAcrossPages(t *testing.T) {
	h, store, signIn := testPage(t)
	ctx := t.Context()
	now := h.Now()
	mk := func(id, email string, created time.Time) {
		inv := &grants.Invitation{ID: id, TokenHash: "h-" + id, Email: email, Status: grants.StatusPending,
			CreatedAt: created, ExpiresAt: now.Add(24 * time.Hour)}
		if _, err := store.CreateInvitation(ctx, inv); err != nil {
			t.Fatal(err)
		}
	}
	var want []string
	for i := range adminPageSize + 5 {
		id := fmt.Sprintf("g%02d", i)
		mk(id, fmt.Sprintf("grace-%02d@example.com", i), now)
		want = append(want, id)
	}
	mk("hopper", "Grace+Hopper@navy.example", now) // "grace+" sorts first
	mk("bob", "bob@example.com", now)
	mk("old", "grace-old@example.com", now.AddDate(0, 0, -3))
	if _, err := store.RevokeInvitation(ctx, "g03", now); err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, h, signIn("alice", true))

	rows, next, body := listPage(t, b, "/admin?q=grace")
	if len(rows) != adminPageSize || rows[0] != "hopper" || rows[1] != "g00" || slices.Contains(rows, "bob") {
		t.Fatalf("q=grace, first page: %v", rows)
	}
	if !strings.Contains(body, `id="search-order"`) {
		t.Error("the page does not say the matches come in alphabetical order")
	}

	today := now.UTC().Format(time.DateOnly)
	path := "/admin?" + url.Values{"q": {"GRACE"}, "status": {"pending"}, "from": {today}, "to": {today}}.Encode()
	var got []string
	for page := 0; path != ""; page++ {
		rows, next, body = listPage(t, b, path)
		for _, id := range []string{`name="from" value="` + today + `"`, `name="to" value="` + today + `"`, `value="GRACE"`, `<option value="pending" selected>`} {
			if !strings.Contains(body, id) {
				t.Errorf("page %d: the filter form lost %s", page, id)
			}
		}
		got = append(got, rows...)
		path = ""
		if next != nil {
			for k, v := range map[string]string{"q": "GRACE", "status": "pending", "from": today, "to": today} {
				if next.Get(k) != v {
					t.Errorf("page %d: next-page link has %s=%q, want %q (%v)", page, k, next.Get(k), v, next)
				}
			}
			path = "/admin?" + next.Encode()
		}
	}
	wantPending := append([]string{"hopper"}, slices.DeleteFunc(slices.Clone(want), func(id string) bool { return id == "g03" })...)
	if !slices.Equal(got, wantPending) {
		t.Errorf("pending GRACE created today, over every page:\n got %v\nwant %v", got, wantPending)
	}

	if rows, _, _ := listPage(t, b, "/admin?q=grace-old"); !slices.Equal(rows, []string{"old"}) {
		t.Errorf("q=grace-old without dates: %v", rows)
	}
	rows, _, body = listPage(t, b, "/admin?from=yesterday&q=grace-old")
	if !slices.Equal(rows, []string{"old"}) || !strings.Contains(body, "The date filter was left out") {
		t.Errorf("an unreadable date is dropped with a notice: %v", rows)
	}
}
