package reconcile

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/refit-gitops/refit/diff"
)

// rbacRules is a hand-written reviewer: it allows what its rules list, as
// "verb resource namespace name" with "*" for any namespace or name.
type rbacRules struct {
	rules []string
	err   error

	mu    sync.Mutex
	asked []string
}

func (r *rbacRules) allowed(_ context.Context, a authorizationv1.ResourceAttributes) (bool, string, error) {
	gr := schema.GroupResource{Group: a.Group, Resource: a.Resource}.String()
	if a.Subresource != "" {
		gr += "/" + a.Subresource
	}
	q := strings.Join([]string{a.Verb, gr, orDash(a.Namespace), orDash(a.Name)}, " ")
	r.mu.Lock()
	r.asked = append(r.asked, q)
	r.mu.Unlock()
	if r.err != nil {
		return false, "", r.err
	}
	for _, rule := range r.rules {
		f := strings.Fields(rule)
		if f[0] == a.Verb && f[1] == gr &&
			(f[2] == "*" || f[2] == orDash(a.Namespace)) && (f[3] == "*" || f[3] == a.Name) {
			return true, "", nil
		}
	}
	return false, "", nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func testMapper() meta.RESTMapper {
	m := meta.NewDefaultRESTMapper(nil)
	m.Add(schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}, meta.RESTScopeNamespace)
	m.Add(schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}, meta.RESTScopeNamespace)
	m.Add(schema.GroupVersionKind{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRole"}, meta.RESTScopeRoot)
	return m
}

func desiredObj(apiVersion, kind, namespace, name string) diff.Desired {
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": apiVersion, "kind": kind, "metadata": map[string]any{"name": name}}}
	if namespace != "" {
		u.SetNamespace(namespace)
	}
	return diff.Desired{Object: u, Source: "app.yaml"}
}

// gated is a workload in team-a whose template lists refit's readiness gate.
func gated(apiVersion, kind, name string) diff.Desired {
	d := desiredObj(apiVersion, kind, "team-a", name)
	_ = unstructured.SetNestedSlice(d.Object.Object, []any{map[string]any{"conditionType": "InPlaceUpdateReady"}},
		"spec", "template", "spec", "readinessGates")
	return d
}

func TestAccessCheck(t *testing.T) {
	const user = "system:serviceaccount:team-a:deployer"
	teamA := []string{"patch configmaps team-a *", "patch deployments.apps team-a *"}
	commit := []diff.Desired{
		desiredObj("v1", "ConfigMap", "", "settings"), // the app's namespace: team-a
		desiredObj("apps/v1", "Deployment", "team-a", "web"),
		desiredObj("example.com/v1", "Widget", "", "w"), // a kind of a CRD in the same commit: the planner's
	}
	cases := []struct {
		name    string
		rules   []string
		extra   []diff.Desired
		want    []string // the objects refused, as named in the error
		wantAsk int      // access reviews made
	}{
		{name: "within the team: one review per resource", rules: teamA, wantAsk: 2},
		{
			name:  "another namespace and a ClusterRole: both named",
			rules: teamA,
			extra: []diff.Desired{desiredObj("v1", "ConfigMap", "team-b", "stolen"), desiredObj("rbac.authorization.k8s.io/v1", "ClusterRole", "team-a", "admin2")},
			want: []string{
				"ClusterRole.rbac.authorization.k8s.io/admin2 (app.yaml): forbidden: " + user + " may not patch clusterroles.rbac.authorization.k8s.io at the cluster scope",
				"ConfigMap/team-b/stolen (app.yaml): forbidden: " + user + " may not patch configmaps in namespace team-b",
			},
			wantAsk: 2 + 2*2, // each refused resource asked again by name
		},
		{
			name:    "a gated workload needs pods/status (refit-inplace)",
			rules:   teamA,
			extra:   []diff.Desired{gated("apps/v1", "Deployment", "gated")},
			want:    []string{"Deployment.apps/team-a/gated (app.yaml): forbidden: " + user + " may not patch pods/status in namespace team-a, for " + gateWhy},
			wantAsk: 3,
		},
		{
			name:    "a gated workload with refit-inplace",
			rules:   append([]string{"patch pods/status team-a *"}, teamA...),
			extra:   []diff.Desired{gated("apps/v1", "Deployment", "gated")},
			wantAsk: 3,
		},
		{
			name:    "a rule with resourceNames allows that name only",
			rules:   append([]string{"patch configmaps team-b shared"}, teamA...),
			extra:   []diff.Desired{desiredObj("v1", "ConfigMap", "team-b", "shared"), desiredObj("v1", "ConfigMap", "team-b", "other")},
			want:    []string{"ConfigMap/team-b/other (app.yaml): forbidden: " + user + " may not patch configmaps in namespace team-b"},
			wantAsk: 3 + 2,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rev := &rbacRules{rules: tc.rules}
			a := &accessCheck{user: user, reviews: rev, mapper: testMapper()}
			err := a.check(context.Background(), append(append([]diff.Desired{}, commit...), tc.extra...), "team-a")
			if len(rev.asked) != tc.wantAsk {
				t.Errorf("%d access reviews, want %d: %v", len(rev.asked), tc.wantAsk, rev.asked)
			}
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("check: %v", err)
				}
				return
			}
			if !IsBadCommit(err) {
				t.Fatalf("check: %v; want a bad commit", err)
			}
			got := strings.Split(err.Error(), "\n")[1:]
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("refused objects (-want +got):\n%s", diff)
			}
		})
	}
}

// An access review that cannot be made is the cluster's failure, retried,
// not the commit's.
func TestAccessCheckReviewError(t *testing.T) {
	a := &accessCheck{user: "u", reviews: &rbacRules{err: errors.New("connection refused")}, mapper: testMapper()}
	err := a.check(context.Background(), []diff.Desired{desiredObj("v1", "ConfigMap", "", "x")}, "team-a")
	if err == nil || IsBadCommit(err) || !strings.Contains(err.Error(), "access review as u") {
		t.Fatalf("check: %v; want a failure that is not a bad commit", err)
	}
}
