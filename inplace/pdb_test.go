package inplace

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func labelled(pod *corev1.Pod, app string) *corev1.Pod {
	pod.Labels = map[string]string{"app": app}
	return pod
}

func pdb(name string, selector *metav1.LabelSelector, desiredHealthy int32) policyv1.PodDisruptionBudget {
	one := intstr.FromInt32(1)
	return policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: name, Generation: 1},
		Spec:   policyv1.PodDisruptionBudgetSpec{Selector: selector, MaxUnavailable: &one},
		Status: policyv1.PodDisruptionBudgetStatus{ObservedGeneration: 1, DesiredHealthy: desiredHealthy}}
}

func TestTrimToBudgets(t *testing.T) {
	web := &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}
	// Five web Pods and three api Pods, all healthy.
	fleet := func() []*corev1.Pod {
		var pods []*corev1.Pod
		for i := 0; i < 8; i++ {
			app := "web"
			if i >= 5 {
				app = "api"
			}
			pods = append(pods, labelled(fleetPod(i, oldReady, false), app))
		}
		return pods
	}
	none := func(*corev1.Pod) bool { return false }
	for _, tc := range []struct {
		name      string
		pdbs      []policyv1.PodDisruptionBudget
		batch     []int
		disrupted map[int]bool
		want      []string
	}{
		{"no PDB", nil, []int{0, 1, 2}, nil, []string{"p00", "p01", "p02"}},
		{"allows one of five", []policyv1.PodDisruptionBudget{pdb("web", web, 4)}, []int{0, 1, 2}, nil, []string{"p00"}},
		// refit's own Pods in flight count at once, before the disruption
		// controller has seen them go.
		{"one already taken by refit", []policyv1.PodDisruptionBudget{pdb("web", web, 4)}, []int{1, 2}, map[int]bool{0: true}, nil},
		// Two workloads under one PDB share it.
		{"shared by two workloads", []policyv1.PodDisruptionBudget{pdb("all", &metav1.LabelSelector{}, 7)}, []int{0, 5}, nil, []string{"p00"}},
		// An empty selector covers every Pod of the namespace.
		{"empty selector", []policyv1.PodDisruptionBudget{pdb("all", &metav1.LabelSelector{}, 8)}, []int{5}, nil, nil},
		{"nil selector covers nothing", []policyv1.PodDisruptionBudget{pdb("none", nil, 8)}, []int{5}, nil, []string{"p05"}},
		{"other Pods' PDB", []policyv1.PodDisruptionBudget{pdb("web", web, 5)}, []int{5, 6}, nil, []string{"p05", "p06"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pods := fleet()
			var batch []*corev1.Pod
			for _, i := range tc.batch {
				batch = append(batch, pods[i])
			}
			disrupted := none
			if tc.disrupted != nil {
				uids := map[types.UID]bool{}
				for i := range tc.disrupted {
					uids[pods[i].UID] = true
				}
				disrupted = func(p *corev1.Pod) bool { return uids[p.UID] }
			}
			budgets := covering(budgetsOf(tc.pdbs), batch)
			got := TrimToBudgets(batch, budgets, pods, disrupted)
			if d := cmp.Diff(tc.want, names(got)); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

// A PDB whose last change the controller has not observed allows nothing;
// a Pod that is down already costs nothing.
func TestTrimToBudgetsStaleAndDown(t *testing.T) {
	stale := pdb("all", &metav1.LabelSelector{}, 0)
	stale.Generation = 2
	up := labelled(fleetPod(0, oldReady, false), "web")
	down := labelled(fleetPod(1, oldDown, false), "web")
	pods := []*corev1.Pod{up, down}
	got := TrimToBudgets(pods, budgetsOf([]policyv1.PodDisruptionBudget{stale}), pods, func(*corev1.Pod) bool { return false })
	if d := cmp.Diff([]string{"p01"}, names(got)); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}
