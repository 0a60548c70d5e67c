package reconcile

import (
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/refit-gitops/refit/apply"
	"github.com/refit-gitops/refit/inplace"
)

// metrics are refit's Prometheus metrics. A nil *metrics records nothing.
type metrics struct {
	reconciles      *prometheus.CounterVec
	duration        *prometheus.HistogramVec
	revisionInfo    *prometheus.GaugeVec
	podsUpdated     *prometheus.CounterVec
	podsFailed      *prometheus.CounterVec
	rolloutDuration *prometheus.HistogramVec
	rateLimitWait   *prometheus.HistogramVec
	requestsPerPod  *prometheus.HistogramVec

	mu      sync.Mutex
	current map[string]string // app → revision in revisionInfo
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "refit_reconciles_total", Help: "Reconciliations by app and result (success, failure, rollout-failed, bad-commit, transient-error, poll-error, superseded).",
		}, []string{"app", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "refit_reconcile_duration_seconds", Help: "Duration of reconciliations that rendered and planned.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 14),
		}, []string{"app"}),
		revisionInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "refit_revision_applied_info", Help: "The revision last applied per app (value 1).",
		}, []string{"app", "revision"}),
		podsUpdated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "refit_inplace_pods_updated_total", Help: "Pods updated in place.",
		}, []string{"app"}),
		podsFailed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "refit_inplace_rollouts_failed_total", Help: "In-place rollouts stopped by a failing Pod.",
		}, []string{"app"}),
		rolloutDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "refit_inplace_rollout_duration_seconds", Help: "Duration of in-place rollouts.",
			Buckets: prometheus.ExponentialBuckets(0.5, 2, 12),
		}, []string{"app"}),
		rateLimitWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "refit_inplace_ratelimit_wait_seconds", Help: "Time an in-place rollout's requests waited on the client-side rate limit (--qps, --burst), per rollout.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"app"}),
		requestsPerPod: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "refit_inplace_requests_per_pod", Help: "API requests refit sent per Pod of an in-place rollout, per rollout.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}, []string{"app"}),
		current: map[string]string{},
	}
	reg.MustRegister(m.reconciles, m.duration, m.revisionInfo, m.podsUpdated, m.podsFailed, m.rolloutDuration,
		m.rateLimitWait, m.requestsPerPod)
	return m
}

func (m *metrics) reconciled(app, result string, d time.Duration) {
	if m == nil {
		return
	}
	m.reconciles.WithLabelValues(app, result).Inc()
	if d > 0 {
		m.duration.WithLabelValues(app).Observe(d.Seconds())
	}
}

func (m *metrics) revision(app, rev string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if old, ok := m.current[app]; ok && old != rev {
		m.revisionInfo.DeleteLabelValues(app, old)
	}
	m.current[app] = rev
	m.revisionInfo.WithLabelValues(app, rev).Set(1)
}

func (m *metrics) rollout(app string, r inplace.Result) {
	if m == nil || app == "" {
		return
	}
	m.podsUpdated.WithLabelValues(app).Add(float64(r.Updated))
	if r.Outcome == inplace.Failed {
		m.podsFailed.WithLabelValues(app).Inc()
	}
	m.rolloutDuration.WithLabelValues(app).Observe(r.Duration.Seconds())
	m.rateLimitWait.WithLabelValues(app).Observe(r.RateLimitWait.Seconds())
	if r.Total > 0 {
		m.requestsPerPod.WithLabelValues(app).Observe(float64(r.Requests) / float64(r.Total))
	}
}

func isHealthError(err error) bool {
	var he *apply.HealthError
	return errors.As(err, &he)
}
