package reconcile

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/refit-gitops/refit/inplace"
)

// Every per-app metric carries namespace and name, and keeps app (the
// name) for the dashboards written before them; two apps of one name in
// two namespaces would be two series (refit refuses the second one).
func TestMetricsLabels(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := newMetrics(reg)
	shop := metricApp{Namespace: "team-a", Name: "shop"}
	m.reconciled(shop, "success", time.Second)
	m.revision(shop, "c1")
	m.revision(shop, "c2") // replaces c1's series
	m.rollout(shop, inplace.Result{Updated: 3, Total: 3, Outcome: inplace.Failed, Requests: 6})

	got := map[string]map[string]string{} // metric → its one series' labels
	values := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if len(mf.GetMetric()) != 1 {
			t.Errorf("%s: %d series, want 1", mf.GetName(), len(mf.GetMetric()))
			continue
		}
		s := mf.GetMetric()[0]
		labels := map[string]string{}
		for _, lp := range s.GetLabel() {
			labels[lp.GetName()] = lp.GetValue()
		}
		got[mf.GetName()] = labels
		values[mf.GetName()] = s.GetCounter().GetValue() + s.GetGauge().GetValue()
	}
	for _, name := range []string{"refit_reconciles_total", "refit_reconcile_duration_seconds", "refit_revision_applied_info",
		"refit_inplace_pods_updated_total", "refit_inplace_rollouts_failed_total", "refit_inplace_rollout_duration_seconds",
		"refit_inplace_ratelimit_wait_seconds", "refit_inplace_requests_per_pod"} {
		t.Run(name, func(t *testing.T) {
			l, ok := got[name]
			if !ok {
				t.Fatalf("not gathered")
			}
			if l["app"] != "shop" || l["name"] != "shop" || l["namespace"] != "team-a" {
				t.Errorf("labels = %v, want app and name shop, namespace team-a", l)
			}
		})
	}
	if r := got["refit_revision_applied_info"]["revision"]; r != "c2" {
		t.Errorf("revision series = %q, want only c2's", r)
	}
	if v := values["refit_inplace_pods_updated_total"]; v != 3 {
		t.Errorf("pods updated = %v, want 3", v)
	}
}
