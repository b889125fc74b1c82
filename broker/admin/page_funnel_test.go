package admin

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/usher-oidc/usher/grants"
)

func TestPageFunnelRendersTheChartFromTheCounters(t *testing.T) {
	h, store, signIn := testPage(t)
	ctx := t.Context()
	d0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	add := func(id string, day int, client, stage string, secs int64) {
		t.Helper()
		if err := store.AddFunnel(ctx, id, d0.AddDate(0, 0, day).Add(time.Hour), client, stage, secs); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 4 {
		add("c"+string(rune('a'+i)), 0, "spa", grants.FunnelCreated, -1)
	}
	add("r1", 1, "spa", grants.FunnelRedeemed, 600)
	add("r1", 1, "spa", grants.FunnelRedeemed, 600) // the same event again
	add("d1", 2, "spa", grants.FunnelDeclined, -1)
	add("x1", 2, "backend", grants.FunnelExpired, -1)
	add("out", 5, "spa", grants.FunnelCreated, -1) // outside the range

	b := newBrowser(t, h, signIn("alice", true))
	rec := b.do("GET", "/admin/funnel?from=2026-11-01&to=2026-11-03", nil)
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d:\n%s", rec.Code, rec.Body)
	}
	page := rec.Body.String()
	if n := strings.Count(page, `<g class="day"`); n != 3 {
		t.Errorf("%d day groups, want 3", n)
	}
	for _, want := range []string{
		`<svg id="funnel-chart"`, `data-day="2026-11-01"`, `data-day="2026-11-03"`,
		"2026-11-01: 4 created", "2026-11-02: 1 redeemed",
		"<td>All</td><td>4</td><td>1</td><td>1</td><td>1</td><td>0</td><td>25.0%</td><td>25.0%</td><td>25.0%</td><td>10m</td>",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q:\n%s", want, page)
		}
	}
	if strings.Contains(page, "<script") {
		t.Error("the page holds a script")
	}

	rec = b.do("GET", "/admin/funnel?from=2026-11-01&to=2026-11-03&client=backend", nil)
	page = rec.Body.String()
	if !strings.Contains(page, "<td>All</td><td>0</td><td>0</td><td>0</td><td>1</td>") || strings.Contains(page, "<td>spa</td>") {
		t.Errorf("client filter: %s", page)
	}

	if rec := b.do("GET", "/admin/funnel?from=2026-11-05&to=2026-11-01", nil); rec.Code != http.StatusBadRequest ||
		!strings.Contains(rec.Body.String(), "after") {
		t.Errorf("reversed range: %d", rec.Code)
	}
	if rec := b.do("GET", "/admin/funnel", nil); rec.Code != http.StatusOK || strings.Count(rec.Body.String(), `<g class="day"`) != 14 {
		t.Errorf("default range: %d", rec.Code)
	}
	if rec := newBrowser(t, h, signIn("bob", true)).do("GET", "/admin/funnel", nil); rec.Code != http.StatusForbidden {
		t.Errorf("non-admin: %d", rec.Code)
	}
}
