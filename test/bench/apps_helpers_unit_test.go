//go:build bench

package bench

import (
	"maps"
	"slices"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/watch"
)

// TestLockWatchEvent: the lock check flags a lock with two live holders
// and lets a dead holder's lapsed lock be taken.
func TestLockWatchEvent(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	type ev struct {
		typ    watch.EventType
		holder string
		at     time.Duration
	}
	for _, tc := range []struct {
		name       string
		dead       string
		events     []ev
		violations int
		takeovers  int
	}{
		{name: "acquire, renew, release, acquire by another", events: []ev{
			{watch.Added, "r0", 0}, {watch.Modified, "r0", time.Second}, {watch.Deleted, "r0", 2 * time.Second}, {watch.Added, "r1", 3 * time.Second},
		}},
		{name: "created while held", events: []ev{{watch.Added, "r0", 0}, {watch.Added, "r1", time.Second}}, violations: 1},
		{name: "taken from a live holder", events: []ev{{watch.Added, "r0", 0}, {watch.Modified, "r1", 10 * time.Second}}, violations: 1, takeovers: 1},
		{name: "taken from a dead holder before the lease", dead: "r0", events: []ev{
			{watch.Added, "r0", 0}, {watch.Modified, "r1", 2 * time.Second},
		}, violations: 1, takeovers: 1},
		{name: "taken from a dead holder after the lease", dead: "r0", events: []ev{
			{watch.Added, "r0", 0}, {watch.Modified, "r0", time.Second}, {watch.Modified, "r1", time.Second + shardLease},
		}, takeovers: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lw := &lockWatch{d: shardLease, holder: map[string]string{}, renewed: map[string]time.Time{}, dead: map[string]bool{tc.dead: tc.dead != ""}}
			for _, e := range tc.events {
				lw.event(e.typ, "refit-lock-apps.app0000", e.holder, t0.Add(e.at))
			}
			if len(lw.violations) != tc.violations || lw.takeovers != tc.takeovers {
				t.Errorf("violations %q, takeovers %d; want %d violations, %d takeovers", lw.violations, lw.takeovers, tc.violations, tc.takeovers)
			}
		})
	}
}

func TestParseRequestCounts(t *testing.T) {
	text := `# TYPE apiserver_request_total counter
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="configmaps",scope="resource",subresource="",verb="PATCH",version="v1"} 3
apiserver_request_total{code="201",component="apiserver",dry_run="",group="",resource="configmaps",scope="resource",subresource="",verb="PATCH",version="v1"} 2
apiserver_request_total{code="200",component="apiserver",dry_run="",group="refit.dev",resource="apps",scope="resource",subresource="status",verb="APPLY",version="v1alpha1"} 7
apiserver_request_total{code="200",component="apiserver",dry_run="All",group="",resource="configmaps",scope="resource",subresource="",verb="APPLY",version="v1"} 4
apiserver_request_total{code="200",component="",dry_run="",group="",resource="",scope="",subresource="/healthz",verb="GET",version=""} 1
apiserver_requested_deprecated_apis{group="x"} 1
`
	got := parseRequestCounts(text)
	want := requestCounts{"PATCH configmaps": 5, "APPLY configmaps (dry run)": 4, "APPLY apps.refit.dev/status": 7, "GET /healthz": 1}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %v, want %v", k, got[k], v)
		}
	}
	d := got.since(requestCounts{"PATCH configmaps": 5, "APPLY configmaps (dry run)": 4, "APPLY apps.refit.dev/status": 4})
	if keys := slices.Sorted(maps.Keys(d)); !slices.Equal(keys, []string{"APPLY apps.refit.dev/status", "GET /healthz"}) || d.total() != 4 {
		t.Errorf("since: %v (total %d)", d, d.total())
	}
}
