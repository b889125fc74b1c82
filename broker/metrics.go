package broker

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are usher's Prometheus series. They carry no user data: labels
// are outcomes, connections, grant types and reasons from fixed sets.
type metrics struct {
	logins            *prometheus.CounterVec
	connectionSources *prometheus.CounterVec
	invitationsMade   prometheus.Counter
	redemptions       *prometheus.CounterVec
	redemptionSeconds prometheus.Histogram
	tokenRequests     *prometheus.CounterVec
	tokenSeconds      *prometheus.HistogramVec
	upstreamSeconds   *prometheus.HistogramVec
	upstreamErrors    *prometheus.CounterVec
	storeErrors       *prometheus.CounterVec
	rateLimited       *prometheus.CounterVec
	rateLimitErrors   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := func(c prometheus.Collector) prometheus.Collector {
		if reg != nil {
			reg.MustRegister(c)
		}
		return c
	}
	fast := []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}
	return &metrics{
		logins: f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "usher_logins_total",
			Help: "Sign-ins completed at the upstream callback, by outcome and connection."}, []string{"outcome", "connection"})).(*prometheus.CounterVec),
		connectionSources: f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "usher_login_connection_source_total",
			Help: "Sign-ins by where their connection name came from: management_api (asked of Auth0) or sub_prefix (the sub's prefix)."}, []string{"source"})).(*prometheus.CounterVec),
		invitationsMade: f(prometheus.NewCounter(prometheus.CounterOpts{Name: "usher_invitations_created_total",
			Help: "Invitations created."})).(prometheus.Counter),
		redemptions: f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "usher_invitation_redemptions_total",
			Help: "Invitation redemptions by result (redeemed, or the reason it failed)."}, []string{"result"})).(*prometheus.CounterVec),
		redemptionSeconds: f(prometheus.NewHistogram(prometheus.HistogramOpts{Name: "usher_invitation_redemption_seconds",
			Help: "Time to redeem an invitation at the callback.", Buckets: fast})).(prometheus.Histogram),
		tokenRequests: f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "usher_token_requests_total",
			Help: "Token endpoint requests by grant type and HTTP status class."}, []string{"grant_type", "status"})).(*prometheus.CounterVec),
		tokenSeconds: f(prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "usher_token_request_seconds",
			Help: "Token endpoint latency by grant type.", Buckets: fast}, []string{"grant_type"})).(*prometheus.HistogramVec),
		upstreamSeconds: f(prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "usher_upstream_request_seconds",
			Help: "Latency of calls to the upstream identity provider.", Buckets: fast}, []string{"call"})).(*prometheus.HistogramVec),
		upstreamErrors: f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "usher_upstream_errors_total",
			Help: "Upstream failures by call."}, []string{"call"})).(*prometheus.CounterVec),
		storeErrors: f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "usher_store_errors_total",
			Help: "Store operations that failed, by what usher was doing."}, []string{"op"})).(*prometheus.CounterVec),
		rateLimited: f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "usher_rate_limited_total",
			Help: "Requests answered 429, by limit."}, []string{"limit"})).(*prometheus.CounterVec),
		rateLimitErrors: f(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "usher_rate_limit_errors_total",
			Help: "Rate-limit checks that failed (shared limiter unreachable) and let the request through, by limit."}, []string{"limit"})).(*prometheus.CounterVec),
	}
}

// instrumentToken measures the token endpoint by grant type.
func (b *Broker) instrumentToken(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		grant := "unknown"
		if r.Method == http.MethodPost && r.ParseForm() == nil {
			switch g := r.PostForm.Get("grant_type"); g {
			case "authorization_code", "refresh_token", "client_credentials":
				grant = g
			}
		}
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r)
		b.metrics.tokenSeconds.WithLabelValues(grant).Observe(time.Since(start).Seconds())
		b.metrics.tokenRequests.WithLabelValues(grant, strconv.Itoa(sw.status/100)+"xx").Inc()
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) { s.status = code; s.ResponseWriter.WriteHeader(code) }

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
