package admin

import (
	"fmt"
	"html/template"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/usher-oidc/usher/grants"
)

// The invitation funnel (GET /admin/funnel?from=&to=&client=): per day of a
// range, invitations created, redeemed, declined, expired and revoked, as a
// server-rendered SVG (no script), with totals, conversion rates and the
// time to redeem. It reads the counters outbox.Funnel keeps as the events
// pass (grants.FunnelStore), never the invitations themselves.
const (
	funnelDefaultDays = 14
	funnelMaxDays     = 366
	funnelDateLayout  = "2006-01-02"
)

func init() {
	funcs := template.FuncMap{
		"join": strings.Join,
		"errs": func(m map[string][]string, field string) []string { return m[field] },
	}
	t := template.Must(template.New("layout.html").Funcs(funcs).ParseFS(adminTemplateFS, "templates/admin/layout.html"))
	adminTemplates["funnel"] = template.Must(t.ParseFS(adminTemplateFS, "templates/admin/funnel.html"))
}

// funnelSeries are the bars of a day, in order, with their colours.
var funnelSeries = []struct{ Stage, Label, Colour string }{
	{grants.FunnelCreated, "Created", "#2d5be3"},
	{grants.FunnelRedeemed, "Redeemed", "#1d7a46"},
	{grants.FunnelDeclined, "Declined", "#9a6400"},
	{grants.FunnelExpired, "Expired", "#c0352b"},
	{grants.FunnelRevoked, "Revoked", "#8a8f99"},
}

type funnelBar struct {
	X, Y, W, H int
	Colour     string
	Title      string
}

type funnelGroup struct {
	Day   string
	X     int
	Label string // shown under the group ("" on crowded charts)
	Bars  []funnelBar
}

type funnelTick struct {
	Y     int
	Label string
}

type funnelLegend struct{ Label, Colour string }

type funnelStats struct {
	Name                                          string
	Created, Redeemed, Declined, Expired, Revoked int64
	RedeemRate, DeclineRate, ExpireRate           string
	MeanRedeem, MedianRedeem                      string
}

type funnelPage struct {
	From, To, Client string
	Clients          []option
	Error            string

	Width, Height, PlotTop, PlotBottom, PlotLeft int
	Groups                                       []funnelGroup
	Ticks                                        []funnelTick
	Legend                                       []funnelLegend
	Total                                        funnelStats
	PerClient                                    []funnelStats
}

func (h *Page) adminFunnel(w http.ResponseWriter, r *http.Request, a *adminRequest) {
	fs, ok := h.Store.(grants.FunnelStore)
	if !ok {
		h.adminError(w, r, a, http.StatusNotImplemented, "Funnel unavailable", "This store keeps no funnel counters.")
		return
	}
	q := r.URL.Query()
	today := h.Now().UTC().Truncate(24 * time.Hour)
	p := funnelPage{Client: q.Get("client")}
	to, from := today, today.AddDate(0, 0, -(funnelDefaultDays-1))
	var bad []string
	if v := q.Get("to"); v != "" {
		if t, err := time.Parse(funnelDateLayout, v); err == nil {
			to = t
		} else {
			bad = append(bad, "“to” is not a date (YYYY-MM-DD)")
		}
	}
	if v := q.Get("from"); v != "" {
		if t, err := time.Parse(funnelDateLayout, v); err == nil {
			from = t
		} else {
			bad = append(bad, "“from” is not a date (YYYY-MM-DD)")
		}
	} else if q.Get("to") != "" {
		from = to.AddDate(0, 0, -(funnelDefaultDays - 1))
	}
	switch {
	case len(bad) > 0:
	case to.Before(from):
		bad = append(bad, "“from” is after “to”")
	case to.Sub(from) >= funnelMaxDays*24*time.Hour:
		bad = append(bad, fmt.Sprintf("the range is longer than %d days", funnelMaxDays))
	}
	p.From, p.To = from.Format(funnelDateLayout), to.Format(funnelDateLayout)
	p.Clients = []option{{Value: "", Label: "All clients", Selected: p.Client == ""}}
	for _, c := range h.Clients {
		label := c.ID
		if c.Name != "" {
			label = c.Name + " (" + c.ID + ")"
		}
		p.Clients = append(p.Clients, option{Value: c.ID, Label: label, Selected: c.ID == p.Client})
	}
	status := http.StatusOK
	var rows []grants.FunnelDay
	if len(bad) > 0 {
		p.Error = "Range not shown: " + strings.Join(bad, "; ") + "."
		status = http.StatusBadRequest
	} else {
		var err error
		if rows, err = fs.Funnel(r.Context(), from, to, p.Client); err != nil {
			h.adminUnavailable(w, r, "reading the funnel counters", err)
			return
		}
		h.buildFunnel(&p, from, to, rows)
	}
	h.render(w, r, status, "funnel", adminPage{Title: "Invitation funnel", User: a.user, CSRF: a.csrf, Page: p})
}

// buildFunnel lays out the chart (one group of bars per day of from..to,
// empty days included) and the totals.
func (h *Page) buildFunnel(p *funnelPage, from, to time.Time, rows []grants.FunnelDay) {
	byDay, byClient, total := sumFunnel(rows)
	layoutFunnelChart(p, funnelDays(from, to), byDay)
	p.Total = funnelStatsOf("All", &total)
	p.PerClient = funnelPerClient(byClient)
}

// sumFunnel adds the rows up per day, per client and in all.
func sumFunnel(rows []grants.FunnelDay) (byDay, byClient map[string]*grants.FunnelDay, total grants.FunnelDay) {
	byDay = map[string]*grants.FunnelDay{}
	byClient = map[string]*grants.FunnelDay{}
	for _, r := range rows {
		k := grants.FunnelDayKey(r.Day)
		if byDay[k] == nil {
			byDay[k] = &grants.FunnelDay{Day: r.Day}
		}
		byDay[k].Merge(r)
		if byClient[r.ClientID] == nil {
			byClient[r.ClientID] = &grants.FunnelDay{ClientID: r.ClientID}
		}
		byClient[r.ClientID].Merge(r)
		total.Merge(r)
	}
	return byDay, byClient, total
}

// funnelDays are the keys of the days from..to, both included.
func funnelDays(from, to time.Time) []string {
	var days []string
	for d := from; !d.After(to); d = d.AddDate(0, 0, 1) {
		days = append(days, grants.FunnelDayKey(d))
	}
	return days
}

// layoutFunnelChart lays out the SVG: one group of bars per day (a day
// without counters gets empty bars), scaled to the highest bar, with the
// axis ticks and the legend.
func layoutFunnelChart(p *funnelPage, days []string, byDay map[string]*grants.FunnelDay) {
	var peak int64 = 1
	for _, d := range byDay {
		peak = max(peak, d.Created, d.Redeemed, d.Declined, d.Expired, d.Revoked)
	}
	const (
		left, top, plotH, bottomPad = 48, 16, 220, 40
		bar, gap                    = 6, 10
	)
	slot := len(funnelSeries)*bar + gap
	p.PlotLeft, p.PlotTop, p.PlotBottom = left, top, top+plotH
	p.Width = left + len(days)*slot + 16
	p.Height = top + plotH + bottomPad
	every := max(1, len(days)/12)
	for i, k := range days {
		g := funnelGroup{Day: k, X: left + i*slot + gap/2}
		if i%every == 0 {
			g.Label = k[5:]
		}
		d := byDay[k]
		if d == nil {
			d = &grants.FunnelDay{}
		}
		for j, s := range funnelSeries {
			n := funnelCount(d, s.Stage)
			hgt := int(n * plotH / peak)
			if n > 0 && hgt == 0 {
				hgt = 1
			}
			g.Bars = append(g.Bars, funnelBar{X: j * bar, Y: top + plotH - hgt, W: bar - 1, H: hgt, Colour: s.Colour,
				Title: fmt.Sprintf("%s: %d %s", k, n, strings.ToLower(s.Label))})
		}
		p.Groups = append(p.Groups, g)
	}
	for _, frac := range []int64{0, 1, 2, 3, 4} {
		v := peak * frac / 4
		p.Ticks = append(p.Ticks, funnelTick{Y: top + plotH - int(v*plotH/peak), Label: fmt.Sprint(v)})
	}
	for _, s := range funnelSeries {
		p.Legend = append(p.Legend, funnelLegend{s.Label, s.Colour})
	}
}

// funnelPerClient is each client's totals, in client ID order.
func funnelPerClient(byClient map[string]*grants.FunnelDay) []funnelStats {
	ids := make([]string, 0, len(byClient))
	for id := range byClient {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var out []funnelStats
	for _, id := range ids {
		name := id
		if name == "" {
			name = "(no client)"
		}
		out = append(out, funnelStatsOf(name, byClient[id]))
	}
	return out
}

func funnelCount(d *grants.FunnelDay, stage string) int64 {
	switch stage {
	case grants.FunnelCreated:
		return d.Created
	case grants.FunnelRedeemed:
		return d.Redeemed
	case grants.FunnelDeclined:
		return d.Declined
	case grants.FunnelExpired:
		return d.Expired
	case grants.FunnelRevoked:
		return d.Revoked
	}
	return 0
}

func funnelStatsOf(name string, d *grants.FunnelDay) funnelStats {
	s := funnelStats{Name: name, Created: d.Created, Redeemed: d.Redeemed, Declined: d.Declined, Expired: d.Expired, Revoked: d.Revoked,
		RedeemRate: rate(d.Redeemed, d.Created), DeclineRate: rate(d.Declined, d.Created), ExpireRate: rate(d.Expired, d.Created),
		MeanRedeem: "—", MedianRedeem: "—"}
	if d.RedeemCount > 0 {
		s.MeanRedeem = fmtDuration(time.Duration(d.RedeemSeconds/d.RedeemCount) * time.Second)
	}
	if m, ok := d.MedianRedeem(); ok {
		s.MedianRedeem = "≈ " + fmtDuration(m)
	}
	return s
}

// rate is n/of as a percentage; the stages are counted on the day they
// happen, so over a short range it can pass 100 %.
func rate(n, of int64) string {
	if of == 0 {
		return "—"
	}
	return fmt.Sprintf("%.1f%%", float64(n)*100/float64(of))
}

func fmtDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%.1fh", d.Hours())
	}
	return fmt.Sprintf("%.1fd", d.Hours()/24)
}
