package conformance

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/usher-oidc/usher/grants"
	"github.com/usher-oidc/usher/store/errs"
)

// testFunnel: counters add up per day and client, an event ID counts once
// (also when handed over concurrently), and reads cover a range of days and
// filter by client.
func testFunnel(t *testing.T, ctx context.Context, s grants.Store, clock *Clock) {
	now := clock.Now()
	d0 := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	d1 := d0.AddDate(0, 0, 1)
	add := func(id string, day time.Time, client, stage string, secs int64) {
		t.Helper()
		must(t, "add "+id, s.AddFunnel(ctx, id, day.Add(3*time.Hour), client, stage, secs))
	}
	add("e1", d0, "spa", grants.FunnelCreated, -1)
	add("e1", d0, "spa", grants.FunnelCreated, -1) // again: counted once
	add("e2", d0, "spa", grants.FunnelCreated, -1)
	add("e3", d0, "spa", grants.FunnelRedeemed, 120)
	add("e3", d0, "spa", grants.FunnelRedeemed, 120)
	add("e4", d0, "", grants.FunnelCreated, -1)
	add("e5", d1, "spa", grants.FunnelDeclined, -1)
	add("e6", d1, "crm", grants.FunnelExpired, -1)
	add("e7", d1, "crm", grants.FunnelRedeemed, 7200)
	for _, err := range concurrently(8, func(int) error {
		return s.AddFunnel(ctx, "e8", d1, "crm", grants.FunnelCreated, -1)
	}) {
		must(t, "concurrent add", err)
	}

	all, err := s.Funnel(ctx, d0, d1.Add(time.Hour), "")
	must(t, "funnel", err)
	type row struct {
		day                                  string
		client                               string
		c, r, dec, exp, rcount, rsum, bucket int64
	}
	got := make([]row, len(all))
	for i, d := range all {
		got[i] = row{grants.FunnelDayKey(d.Day), d.ClientID, d.Created, d.Redeemed, d.Declined, d.Expired, d.RedeemCount, d.RedeemSeconds, -1}
		for b, n := range d.RedeemHist {
			if n > 0 {
				got[i].bucket = int64(b)
			}
		}
		if !d.Day.Equal(grants.FunnelDayKeyTime(d.Day)) {
			t.Errorf("day %v is not midnight UTC", d.Day)
		}
	}
	k0, k1 := grants.FunnelDayKey(d0), grants.FunnelDayKey(d1)
	want := []row{
		{k0, "", 1, 0, 0, 0, 0, 0, -1},
		{k0, "spa", 2, 1, 0, 0, 1, 120, int64(grants.FunnelBucket(120))},
		{k1, "crm", 1, 1, 0, 1, 1, 7200, int64(grants.FunnelBucket(7200))},
		{k1, "spa", 0, 0, 1, 0, 0, 0, -1},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("funnel rows:\n got %+v\nwant %+v", got, want)
	}

	spa, err := s.Funnel(ctx, d0, d1, "spa")
	must(t, "funnel spa", err)
	if len(spa) != 2 || spa[0].ClientID != "spa" || spa[1].ClientID != "spa" || spa[1].Declined != 1 {
		t.Errorf("funnel spa = %+v", spa)
	}
	one, err := s.Funnel(ctx, d1, d1, "")
	must(t, "funnel d1", err)
	if len(one) != 2 || !one[0].Day.Equal(d1) {
		t.Errorf("funnel d1 = %+v", one)
	}
	none, err := s.Funnel(ctx, d0.AddDate(0, 0, -10), d0.AddDate(0, 0, -1), "")
	must(t, "funnel before", err)
	if len(none) != 0 {
		t.Errorf("funnel before = %+v", none)
	}
	if _, err := s.Funnel(ctx, d1, d0, ""); !errors.Is(err, errs.ErrInvalid) {
		t.Errorf("reversed range: %v, want ErrInvalid", err)
	}
	if err := s.AddFunnel(ctx, "e9", d0, "spa", "opened", -1); !errors.Is(err, errs.ErrInvalid) {
		t.Errorf("unknown stage: %v, want ErrInvalid", err)
	}
}
