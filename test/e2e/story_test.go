//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"
)

// record is one JSON record of the service's log.
type record map[string]any

// storyRecords are the service's log records that tell an event (they have
// an "event" key), in order.
func storyRecords(out string) []record {
	var recs []record
	for _, line := range strings.Split(out, "\n") {
		var r record
		if json.Unmarshal([]byte(line), &r) != nil {
			continue
		}
		if _, ok := r["event"]; ok {
			recs = append(recs, r)
		}
	}
	return recs
}

func (r record) is(event string, kv ...string) bool {
	if r["event"] != event {
		return false
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if fmt.Sprint(r[kv[i]]) != kv[i+1] {
			return false
		}
	}
	return true
}

func waitRecord(t *testing.T, svc *service, timeout time.Duration, event string, kv ...string) record {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, r := range storyRecords(svc.out.String()) {
			if r.is(event, kv...) {
				return r
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("want a %s record %v in the log within %s; events seen: %v", event, kv, timeout, eventsOf(storyRecords(svc.out.String())))
	return nil
}

func eventsOf(recs []record) []string {
	var out []string
	for _, r := range recs {
		out = append(out, fmt.Sprint(r["event"]))
	}
	return out
}

// The service tells its story in its JSON log: an in-place rollout (its
// start, batches, end with its cost), a failed one (the Pod's failure, the
// rollback) and a structural change sent the ordinary way (a fallback),
// each event exactly once. The workload is gated, so batches tell their
// draining Pods first; the bad image is pulled on the nodes first, so its
// failure is told by the pull before any Pod is touched.
func TestStoryOfTheServiceInItsLog(t *testing.T) {
	ns := namespace(t)
	w := workload{kind: "Deployment", name: "shop", replicas: 4, maxUnavailable: "2", restartDelay: "1s", image: "app:1", gate: true,
		annotations: map[string]string{"refit.dev/rollback": "auto", "refit.dev/progress-deadline": "5m", "refit.dev/grace-seconds": "1"}}
	app := newGitApp(t, ns, "story")
	app.commit(w.yaml(), "v1")
	svc := app.serve(t, "--log-format", "json", "--grace", "0s", "--drift-interval", "2s")
	waitSettled(t, ns, 4, "app", "app:1", 2*time.Minute)

	app.commit(w.with(func(w *workload) { w.image = "app:2" }).yaml(), "v2: app:2")
	ended := waitRecord(t, svc, time.Minute, "RolloutEnded", "outcome", "Succeeded")
	requests, _ := ended["requests"].(float64)
	perPod, _ := ended["requestsPerPod"].(float64)
	wait, _ := ended["rateLimitWait"].(string)
	if _, err := time.ParseDuration(wait); err != nil || requests < 4 || perPod != requests/4 || ended["pods"] != 4.0 {
		t.Errorf("the rollout's end: %d requests, %g per Pod, waited %q, %v Pods; want at least a request per Pod of 4, and a wait", int(requests), perPod, wait, ended["pods"])
	}
	t.Logf("cost of an in-place rollout of 4 Pods: %d requests (%.1f per Pod), %s waiting on the rate limit", int(requests), perPod, wait)

	app.commit(w.with(func(w *workload) { w.image = "app:bad" }).yaml(), "v3: a bad image")
	waitRecord(t, svc, time.Minute, "RolloutEnded", "outcome", "Failed")
	waitSettled(t, ns, 4, "app", "app:2", time.Minute) // rolled back to what ran before

	app.commit(w.with(func(w *workload) { w.image = "app:3"; w.env = "slow" }).yaml(), "v4: a structural change")
	waitRecord(t, svc, time.Minute, "Fallback")
	waitFor(t, 2*time.Minute, "the sync of each of the 4 commits ended", func(context.Context) bool {
		n := 0
		for _, r := range storyRecords(svc.out.String()) {
			if r.is("SyncEnded") {
				n++
			}
		}
		return n >= 4
	})

	recs := storyRecords(svc.out.String())
	count := map[string]int{}
	seen := map[string]bool{}
	for _, r := range recs {
		count[fmt.Sprint(r["event"])]++
		delete(r, "time")
		// Two rollouts may well have the same first batch: a record is the
		// same event twice only within one rollout.
		key := fmt.Sprint(count["RolloutStarted"], r)
		if seen[key] {
			t.Errorf("logged twice: %s", key)
		}
		seen[key] = true
	}
	want := map[string]int{"RolloutStarted": 2, "RollbackStarted": 1, "PodFailed": 1, "Fallback": 1, "RolloutEnded": 2}
	for event, n := range want {
		if count[event] != n {
			t.Errorf("%d %s records, want %d", count[event], event, n)
		}
	}
	if count["SyncStarted"] < 4 { // more if a commit was superseded and taken up again
		t.Errorf("%d SyncStarted records, want one per commit (4)", count["SyncStarted"])
	}
	draining := 0
	for _, r := range recs {
		if r.is("Batch") && r["draining"] != nil && r["rollingBack"] == false {
			draining++
		}
	}
	if draining < 2 { // each of the good rollout's two batches drains first
		t.Errorf("%d Batch records with draining Pods, want at least 2 (a gated workload with a grace)", draining)
	}
	// The bad image fails in its pre-pull: the rollout ends before any Pod
	// is touched, so it never took one down.
	if count["Pull"] < 1 {
		t.Errorf("%d Pull records, want the bad image's pre-pull", count["Pull"])
	}
	for _, r := range recs {
		if r.is("RolloutEnded", "outcome", "Failed") && (r["mostUnavailable"] != 0.0 || r["updated"] != 0.0) {
			t.Errorf("the failed rollout took Pods down or patched them (want neither, its pull failed first): %v", r)
		}
	}
	for _, r := range recs {
		switch {
		case r.is("RolloutStarted") && (r["images"] == "" || r["pods"] != 4.0 || r["bound"] != 2.0):
			t.Errorf("RolloutStarted without its images, Pods or bound: %v", r)
		case r.is("PodFailed") && (r["pod"] == "" || !strings.Contains(fmt.Sprint(r["reason"]), "Image")):
			t.Errorf("PodFailed without its Pod or an image reason: %v", r)
		case r.is("Fallback") && !strings.Contains(fmt.Sprint(r["reason"]), "structural"):
			t.Errorf("Fallback without its reason: %v", r)
		case r.is("RolloutEnded") && r["requests"] == nil:
			t.Errorf("RolloutEnded without its cost: %v", r)
		}
	}
	kinds := make([]string, 0, len(count))
	for k, n := range count {
		kinds = append(kinds, fmt.Sprintf("%s=%d", k, n))
	}
	sort.Strings(kinds)
	t.Logf("events logged: %v", kinds)
}
