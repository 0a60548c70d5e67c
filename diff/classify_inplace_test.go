package diff

import (
	"strings"
	"testing"
)

func TestQOSClass(t *testing.T) {
	ctr := func(requests, limits map[string]any) any {
		res := map[string]any{}
		if requests != nil {
			res["requests"] = requests
		}
		if limits != nil {
			res["limits"] = limits
		}
		return map[string]any{"name": "c", "resources": res}
	}
	both := map[string]any{"cpu": "100m", "memory": "64Mi"}
	for _, tc := range []struct {
		name       string
		containers []any
		want       string
	}{
		{"nothing set", []any{ctr(nil, nil)}, "BestEffort"},
		{"zero requests", []any{ctr(map[string]any{"cpu": "0"}, nil)}, "BestEffort"},
		{"limits only: requests default to them", []any{ctr(nil, both)}, "Guaranteed"},
		{"equal requests and limits", []any{ctr(both, map[string]any{"cpu": "0.1", "memory": "64Mi"})}, "Guaranteed"},
		{"cpu only", []any{ctr(map[string]any{"cpu": "100m"}, map[string]any{"cpu": "100m"})}, "Burstable"},
		{"one container without", []any{ctr(nil, both), ctr(nil, nil)}, "Burstable"},
		{"requests below limits", []any{ctr(map[string]any{"cpu": "50m", "memory": "64Mi"}, both)}, "Burstable"},
		{"ephemeral storage does not count", []any{ctr(map[string]any{"ephemeral-storage": "1Gi"}, nil)}, "BestEffort"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := QOSClass(map[string]any{"containers": tc.containers}); got != tc.want {
				t.Errorf("QOSClass = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestDecideInPlaceClasses(t *testing.T) {
	mutable := Classification{Changed: true, Class: PodMutable, PodsAffected: true, InPlace: []Aspect{AspectResources}}
	qos := Classification{Changed: true, Class: Structural, PodsAffected: true, Why: "the QoS class changes from Guaranteed to Burstable"}
	for _, tc := range []struct {
		name   string
		c      Classification
		policy Policy
		want   Path
		reason string
	}{
		{"resources default", mutable, InPlaceIfPossible, PathInPlace, ""},
		{"resources in-place-only", mutable, InPlaceOnly, PathInPlace, ""},
		{"resources recreate", mutable, Recreate, PathRecreate, "update policy Recreate"},
		{"qos default", qos, InPlaceIfPossible, PathRecreate, "structural change: the QoS class changes from Guaranteed to Burstable"},
		{"qos in-place-only", qos, InPlaceOnly, PathRefused, "structural change: the QoS class changes from Guaranteed to Burstable refused by update policy InPlaceOnly"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, reason, err := Decide(tc.c, tc.policy)
			if err != nil || got != tc.want || !strings.Contains(reason, tc.reason) {
				t.Errorf("Decide = %s %q, %v; want %s with %q", got, reason, err, tc.want, tc.reason)
			}
		})
	}
}
