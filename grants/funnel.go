package grants

import (
	"context"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The invitation funnel: per UTC day and inviting client, how many
// invitations were created, redeemed, declined, expired and revoked, and how
// long redemptions took. The counters are kept by the outbox consumer
// outbox.Funnel as the events pass (never by scanning invitations); each
// increment is stored with a marker of its event's ID in one atomic step, so
// an event handed over twice counts once.
//
// There is no "opened" stage: opening a link is a timeline entry of the
// invitation (Event "opened"), not an outbox event.
const (
	FunnelCreated  = "created"
	FunnelRedeemed = "redeemed"
	FunnelDeclined = "declined"
	FunnelExpired  = "expired"
	FunnelRevoked  = "revoked"
)

// FunnelStages are the stages, in the order the funnel shows them.
var FunnelStages = []string{FunnelCreated, FunnelRedeemed, FunnelDeclined, FunnelExpired, FunnelRevoked}

// FunnelRedeemBuckets are the upper bounds (seconds, inclusive) of the
// time-to-redeem histogram; one last bucket holds everything longer.
var FunnelRedeemBuckets = []int64{60, 300, 900, 3600, 3 * 3600, 6 * 3600, 12 * 3600,
	86400, 2 * 86400, 3 * 86400, 7 * 86400, 14 * 86400, 30 * 86400}

// FunnelHistLen is the number of histogram buckets.
const FunnelHistLen = 14

// MaxFunnelDays bounds the range one Funnel read covers.
const MaxFunnelDays = 800

// FunnelDay is the counters of one UTC day and one client.
type FunnelDay struct {
	Day                                           time.Time // midnight UTC
	ClientID                                      string    // "": invitations that named no client
	Created, Redeemed, Declined, Expired, Revoked int64
	// RedeemCount redemptions had a known time to redeem, RedeemSeconds in all.
	RedeemCount, RedeemSeconds int64
	// RedeemHist counts them by FunnelRedeemBuckets.
	RedeemHist [FunnelHistLen]int64
}

// FunnelStore keeps the funnel counters (both backends implement it).
type FunnelStore interface {
	// AddFunnel counts one event of stage on day for clientID (and, for a
	// redemption with redeemSeconds >= 0, its time to redeem), unless an
	// event with eventID was already counted: the marker and the counters
	// are written in one atomic step.
	AddFunnel(ctx context.Context, eventID string, day time.Time, clientID, stage string, redeemSeconds int64) error
	// Funnel returns the counters of the UTC days from..to (both included)
	// that hold any, per client (only clientID's when it is not ""), by day
	// then client. At most MaxFunnelDays days.
	Funnel(ctx context.Context, from, to time.Time, clientID string) ([]FunnelDay, error)
}

// FunnelDayKey is day's UTC date, YYYY-MM-DD (the backends' day key).
func FunnelDayKey(t time.Time) string { return t.UTC().Format("2006-01-02") }

// FunnelDays returns the day keys from..to (UTC dates, both included), or
// false when to is before from or the range is longer than MaxFunnelDays.
func FunnelDays(from, to time.Time) ([]string, bool) {
	f := truncDay(from)
	t := truncDay(to)
	if t.Before(f) || t.Sub(f) >= MaxFunnelDays*24*time.Hour {
		return nil, false
	}
	var out []string
	for d := f; !d.After(t); d = d.AddDate(0, 0, 1) {
		out = append(out, FunnelDayKey(d))
	}
	return out, true
}

func truncDay(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
}

// ValidFunnelStage reports whether stage is one of FunnelStages.
func ValidFunnelStage(stage string) bool {
	for _, s := range FunnelStages {
		if s == stage {
			return true
		}
	}
	return false
}

// FunnelIncrements are the counter fields one event adds to (field → delta):
// the stage, and for a redemption of known duration rcount, rsum and its
// histogram bucket hN.
func FunnelIncrements(stage string, redeemSeconds int64) map[string]int64 {
	inc := map[string]int64{stage: 1}
	if stage == FunnelRedeemed && redeemSeconds >= 0 {
		inc["rcount"] = 1
		inc["rsum"] = redeemSeconds
		inc["h"+strconv.Itoa(FunnelBucket(redeemSeconds))] = 1
	}
	return inc
}

// FunnelBucket is the histogram bucket of a time to redeem.
func FunnelBucket(seconds int64) int {
	for i, ub := range FunnelRedeemBuckets {
		if seconds <= ub {
			return i
		}
	}
	return len(FunnelRedeemBuckets)
}

// Add adds delta to the counter a backend stored under field (see
// FunnelIncrements); unknown fields are ignored.
func (d *FunnelDay) Add(field string, delta int64) {
	switch field {
	case FunnelCreated:
		d.Created += delta
	case FunnelRedeemed:
		d.Redeemed += delta
	case FunnelDeclined:
		d.Declined += delta
	case FunnelExpired:
		d.Expired += delta
	case FunnelRevoked:
		d.Revoked += delta
	case "rcount":
		d.RedeemCount += delta
	case "rsum":
		d.RedeemSeconds += delta
	default:
		if n, ok := strings.CutPrefix(field, "h"); ok {
			if i, err := strconv.Atoi(n); err == nil && i >= 0 && i < FunnelHistLen {
				d.RedeemHist[i] += delta
			}
		}
	}
}

// Merge adds o's counters to d's.
func (d *FunnelDay) Merge(o FunnelDay) {
	d.Created += o.Created
	d.Redeemed += o.Redeemed
	d.Declined += o.Declined
	d.Expired += o.Expired
	d.Revoked += o.Revoked
	d.RedeemCount += o.RedeemCount
	d.RedeemSeconds += o.RedeemSeconds
	for i := range d.RedeemHist {
		d.RedeemHist[i] += o.RedeemHist[i]
	}
}

// MedianRedeem estimates the median time to redeem from the histogram (linear
// within the bucket that holds it; the open last bucket reports its lower
// bound); false when no redemption has a known time.
func (d *FunnelDay) MedianRedeem() (time.Duration, bool) {
	var total int64
	for _, n := range d.RedeemHist {
		total += n
	}
	if total == 0 {
		return 0, false
	}
	half := float64(total) / 2
	var seen int64
	for i, n := range d.RedeemHist {
		if n == 0 || float64(seen+n) < half {
			seen += n
			continue
		}
		var lo int64
		if i > 0 {
			lo = FunnelRedeemBuckets[i-1]
		}
		if i >= len(FunnelRedeemBuckets) {
			return time.Duration(lo) * time.Second, true
		}
		hi := FunnelRedeemBuckets[i]
		frac := (half - float64(seen)) / float64(n)
		return time.Duration(float64(lo)+frac*float64(hi-lo)) * time.Second, true
	}
	return 0, false
}

// SortFunnel orders days by day then client.
func SortFunnel(days []FunnelDay) {
	sort.Slice(days, func(i, j int) bool {
		if !days[i].Day.Equal(days[j].Day) {
			return days[i].Day.Before(days[j].Day)
		}
		return days[i].ClientID < days[j].ClientID
	})
}

// FunnelDayKeyTime is t's UTC midnight.
func FunnelDayKeyTime(t time.Time) time.Time { return truncDay(t) }
