package reconcile

import (
	"errors"
	"slices"
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
	current map[metricApp]string // app → revision in revisionInfo
}

// metricApp names an app in the metrics: its App object's namespace (refit's
// own for a Config entry that names none) and name. The label app repeats
// the name, as before namespace and name existed: dashboards built on it
// keep working, and it adds no series (refit runs one app per name).
type metricApp struct{ Namespace, Name string }

// appLabels are the labels every per-app metric starts with.
var appLabels = []string{"app", "namespace", "name"}

func (id metricApp) values(more ...string) []string {
	return append([]string{id.Name, id.Namespace, id.Name}, more...)
}

func labels(more ...string) []string { return append(slices.Clone(appLabels), more...) }

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "refit_reconciles_total", Help: "Reconciliations by app and result (success, failure, rollout-failed, bad-commit, transient-error, poll-error, superseded, unchanged: a new commit changed nothing the app reads).",
		}, labels("result")),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "refit_reconcile_duration_seconds", Help: "Duration of reconciliations that rendered and planned.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 14),
		}, labels()),
		revisionInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "refit_revision_applied_info", Help: "The revision last applied per app (value 1).",
		}, labels("revision")),
		podsUpdated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "refit_inplace_pods_updated_total", Help: "Pods updated in place.",
		}, labels()),
		podsFailed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "refit_inplace_rollouts_failed_total", Help: "In-place rollouts stopped by a failing Pod.",
		}, labels()),
		rolloutDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "refit_inplace_rollout_duration_seconds", Help: "Duration of in-place rollouts.",
			Buckets: prometheus.ExponentialBuckets(0.5, 2, 12),
		}, labels()),
		rateLimitWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "refit_inplace_ratelimit_wait_seconds", Help: "Time an in-place rollout's requests waited on the client-side rate limit (--qps, --burst), per rollout.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, labels()),
		requestsPerPod: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "refit_inplace_requests_per_pod", Help: "API requests refit sent per Pod of an in-place rollout, per rollout.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}, labels()),
		current: map[metricApp]string{},
	}
	reg.MustRegister(m.reconciles, m.duration, m.revisionInfo, m.podsUpdated, m.podsFailed, m.rolloutDuration,
		m.rateLimitWait, m.requestsPerPod)
	return m
}

func (m *metrics) reconciled(app metricApp, result string, d time.Duration) {
	if m == nil {
		return
	}
	m.reconciles.WithLabelValues(app.values(result)...).Inc()
	if d > 0 {
		m.duration.WithLabelValues(app.values()...).Observe(d.Seconds())
	}
}

func (m *metrics) revision(app metricApp, rev string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if old, ok := m.current[app]; ok && old != rev {
		m.revisionInfo.DeleteLabelValues(app.values(old)...)
	}
	m.current[app] = rev
	m.revisionInfo.WithLabelValues(app.values(rev)...).Set(1)
}

func (m *metrics) rollout(app metricApp, r inplace.Result) {
	if m == nil || app.Name == "" {
		return
	}
	m.podsUpdated.WithLabelValues(app.values()...).Add(float64(r.Updated))
	if r.Outcome == inplace.Failed {
		m.podsFailed.WithLabelValues(app.values()...).Inc()
	}
	m.rolloutDuration.WithLabelValues(app.values()...).Observe(r.Duration.Seconds())
	m.rateLimitWait.WithLabelValues(app.values()...).Observe(r.RateLimitWait.Seconds())
	if r.Total > 0 {
		m.requestsPerPod.WithLabelValues(app.values()...).Observe(float64(r.Requests) / float64(r.Total))
	}
}

func isHealthError(err error) bool {
	var he *apply.HealthError
	return errors.As(err, &he)
}

// appID is the metrics' name of the app these options reconcile.
func (o Options) appID() metricApp { return metricApp{Namespace: o.AppNamespace, Name: o.App} }

// id is the metrics' name of the loop's app.
func (l *appLoop) id() metricApp {
	return metricApp{Namespace: l.app.Options.AppNamespace, Name: l.app.Name}
}
