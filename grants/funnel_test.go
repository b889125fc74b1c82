package grants

import (
	"testing"
	"time"
)

func TestFunnelMedianRedeem(t *testing.T) {
	var d FunnelDay
	if _, ok := d.MedianRedeem(); ok {
		t.Fatal("a median without redemptions")
	}
	for _, secs := range []int64{30, 200, 250, 4000, 100000} {
		for f, n := range FunnelIncrements(FunnelRedeemed, secs) {
			d.Add(f, n)
		}
	}
	if d.Redeemed != 5 || d.RedeemCount != 5 || d.RedeemSeconds != 104480 {
		t.Fatalf("counters %+v", d)
	}
	// The third of five lies in the 60..300 s bucket, which holds two.
	m, ok := d.MedianRedeem()
	if !ok || m < time.Minute || m > 5*time.Minute {
		t.Fatalf("median %v, %v; want within 1..5 min", m, ok)
	}
	if FunnelBucket(31*86400) != FunnelHistLen-1 || FunnelBucket(0) != 0 {
		t.Fatal("bucket bounds")
	}
	if _, ok := FunnelDays(time.Now(), time.Now().AddDate(0, 0, -1)); ok {
		t.Fatal("reversed range accepted")
	}
	if days, ok := FunnelDays(time.Date(2026, 1, 31, 23, 0, 0, 0, time.UTC), time.Date(2026, 2, 2, 1, 0, 0, 0, time.UTC)); !ok || len(days) != 3 || days[1] != "2026-02-01" {
		t.Fatalf("days %v", days)
	}
}
