//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/clientcmd"
)

// The identity refit runs as once deploy/ is installed, with the groups a
// real ServiceAccount token carries.
const (
	refitNamespace = "refit-system"
	refitSA        = "system:serviceaccount:" + refitNamespace + ":refit"
)

var refitSAGroups = []string{"system:serviceaccounts", "system:serviceaccounts:" + refitNamespace, "system:authenticated"}

// deployDir is the kustomize base, from this package's folder.
var deployDir = filepath.Join("..", "..", "deploy")

// kubectl runs the bed's kubectl (v1.37.2) as the admin, with stdin if set.
func kubectl(stdin []byte, args ...string) (string, error) {
	cmd := exec.Command(bed.Tools.Kubectl, append([]string{"--kubeconfig", bed.Kubeconfig}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// TestDeploy installs refit with deploy/ as a user would (kubectl kustomize,
// then kubectl apply --server-side), checks that the Deployment becomes
// available (the manifests are valid and admitted under the "restricted" Pod
// Security level; kwok plays the Pod, no image is pulled), then checks the
// ServiceAccount's permissions: every call refit makes is allowed, what it
// does not need is not, users can extend it without editing the base, and
// the real refit CLI, running as that ServiceAccount, applies, updates in
// place and prunes an app.
func TestDeploy(t *testing.T) {
	manifests, err := kubectl(nil, "kustomize", deployDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { uninstallRefit(t) })
	if out, err := kubectl([]byte(manifests), "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatalf("install: %v\n%s", err, out)
	}
	waitAggregated(t)
	waitRefitAvailable(t, time.Minute)

	t.Run("reapply-keeps-aggregated-rules", func(t *testing.T) {
		if out, err := kubectl([]byte(manifests), "apply", "--server-side", "-f", "-"); err != nil {
			t.Fatalf("second apply: %v\n%s", err, out)
		}
		role, err := bed.Client.RbacV1().ClusterRoles().Get(context.Background(), "refit", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if missing := missingRules(t, role); len(missing) > 0 {
			t.Fatalf("ClusterRole refit lost rules on re-apply: %v", missing)
		}
	})
	t.Run("namespace-enforces-restricted", testDeployRestricted)
	t.Run("permissions", testDeployPermissions)
	t.Run("aggregated-clusterrole-extends-refit", testDeployAggregation)
	t.Run("refit-cli-as-serviceaccount", testDeployCLIAsServiceAccount)
	t.Run("static-build-for-distroless", testDeployStaticBuild)
}

// testDeployRestricted shows that Pod Security admission enforces
// "restricted" in refit-system, so refit's Pod, which runs there, meets it.
func testDeployRestricted(t *testing.T) {
	privileged := true
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "privileged", Namespace: refitNamespace},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox",
			SecurityContext: &corev1.SecurityContext{Privileged: &privileged}}}},
	}
	_, err := bed.Client.CoreV1().Pods(refitNamespace).Create(context.Background(), pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "violates PodSecurity") {
		t.Fatalf("a privileged Pod in %s: %v; want it refused by Pod Security admission", refitNamespace, err)
	}
}

// uninstallRefit removes what deploy/ installed, except the refit-system
// Namespace: other tests keep their inventories there, and deleting it
// would refuse their writes while it terminates.
func uninstallRefit(t *testing.T) {
	const sel = "app.kubernetes.io/part-of=refit"
	if out, err := kubectl(nil, "delete", "--ignore-not-found", "--wait=false", "-n", refitNamespace,
		"deployments,services,serviceaccounts,configmaps,roles,rolebindings", "-l", sel); err != nil {
		t.Errorf("uninstall: %v\n%s", err, out)
	}
	if out, err := kubectl(nil, "delete", "--ignore-not-found", "clusterroles,clusterrolebindings", "-l", sel); err != nil {
		t.Errorf("uninstall: %v\n%s", err, out)
	}
}

// aggregatedParts are the ClusterRoles of deploy/ that "refit" aggregates.
var aggregatedParts = []string{"refit-engine", "refit-apply"}

// missingRules lists the rules of the aggregated parts that the ClusterRole
// refit does not hold.
func missingRules(t *testing.T, role *rbacv1.ClusterRole) []string {
	t.Helper()
	var missing []string
	for _, name := range aggregatedParts {
		part, err := bed.Client.RbacV1().ClusterRoles().Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range part.Rules {
			found := false
			for _, got := range role.Rules {
				found = found || reflect.DeepEqual(got, want)
			}
			if !found {
				missing = append(missing, name+": "+want.String())
			}
		}
	}
	return missing
}

// waitAggregated waits until the clusterrole-aggregation controller has
// copied the parts' rules into the ClusterRole refit.
func waitAggregated(t *testing.T) {
	t.Helper()
	var missing []string
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		role, err := bed.Client.RbacV1().ClusterRoles().Get(ctx, "refit", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		missing = missingRules(t, role)
		return len(missing) == 0, nil
	})
	if err != nil {
		t.Fatalf("ClusterRole refit: want the rules of %v aggregated within 30s; still missing: %v", aggregatedParts, missing)
	}
}

// waitRefitAvailable waits for the Deployment refit to be Available, and
// says why not: a Pod refused by admission shows as the ReplicaSet's
// ReplicaFailure condition.
func waitRefitAvailable(t *testing.T, timeout time.Duration) {
	t.Helper()
	var dep *appsv1.Deployment
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		d, err := bed.Client.AppsV1().Deployments(refitNamespace).Get(ctx, "refit", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		dep = d
		for _, c := range d.Status.Conditions {
			if c.Type == appsv1.DeploymentAvailable && c.Status == corev1.ConditionTrue {
				return d.Status.AvailableReplicas == *d.Spec.Replicas && d.Status.ObservedGeneration == d.Generation, nil
			}
		}
		return false, nil
	})
	if err == nil {
		return
	}
	var why []string
	if dep != nil {
		for _, c := range dep.Status.Conditions {
			why = append(why, fmt.Sprintf("deployment %s=%s %s: %s", c.Type, c.Status, c.Reason, c.Message))
		}
	}
	if rss, err := bed.Client.AppsV1().ReplicaSets(refitNamespace).List(context.Background(), metav1.ListOptions{}); err == nil {
		for _, rs := range rss.Items {
			for _, c := range rs.Status.Conditions {
				why = append(why, fmt.Sprintf("replicaset %s %s: %s", rs.Name, c.Reason, c.Message))
			}
		}
	}
	if pods, err := bed.Client.CoreV1().Pods(refitNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=refit"}); err == nil {
		for i := range pods.Items {
			why = append(why, "pod "+pods.Items[i].Name+": "+describePod(&pods.Items[i]))
		}
	}
	t.Fatalf("deployment %s/refit: want Available within %s; seen: %s", refitNamespace, timeout, strings.Join(why, "; "))
}

// access is one question to the API server's authorizer about refit's
// ServiceAccount.
type access struct {
	name        string
	verb        string
	resource    string // resource[.group], or a non-resource URL
	subresource string
	namespace   string // "" for cluster-scoped resources
	allNS       bool   // across all namespaces (-A)
	want        bool
}

// canI asks kubectl auth can-i as refit's ServiceAccount.
func canI(a access) (bool, error) {
	args := []string{"auth", "can-i", a.verb, a.resource, "--as", refitSA}
	for _, g := range refitSAGroups {
		args = append(args, "--as-group", g)
	}
	switch {
	case a.allNS:
		args = append(args, "--all-namespaces")
	case a.namespace != "":
		args = append(args, "-n", a.namespace)
	}
	if a.subresource != "" {
		args = append(args, "--subresource", a.subresource)
	}
	cmd := exec.Command(bed.Tools.Kubectl, append([]string{"--kubeconfig", bed.Kubeconfig}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	// For a resource the server does not serve, kubectl asks about a
	// resource of that literal name in the core group: a vacuous "no".
	if strings.Contains(stderr.String(), "doesn't have a resource type") {
		return false, fmt.Errorf("kubectl %s: %s", strings.Join(args, " "), stderr.String())
	}
	switch answer := strings.TrimSpace(stdout.String()); {
	case answer == "yes" && err == nil:
		return true, nil
	case answer == "no":
		return false, nil // kubectl exits 1 for "no"
	default:
		return false, fmt.Errorf("kubectl %s: %v: %s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
}

// deployAccessCases is every call refit makes (want true) and a set of
// powers it must not have (want false). app is an application namespace,
// other one refit has no business in beyond Git's kinds.
func deployAccessCases(app, other string) []access {
	allow := func(name, verb, resource, sub, ns string) access {
		return access{name: name, verb: verb, resource: resource, subresource: sub, namespace: ns, want: true}
	}
	deny := func(name, verb, resource, sub, ns string) access {
		return access{name: name, verb: verb, resource: resource, subresource: sub, namespace: ns, want: false}
	}
	return []access{
		// Discovery and planning.
		allow("discovery", "get", "/apis", "", ""),
		allow("list namespaces", "list", "namespaces", "", ""),
		allow("get namespace", "get", "namespaces", "", ""),
		allow("create namespace from Git", "create", "namespaces", "", ""),
		allow("list configmaps to plan", "list", "configmaps", "", app),
		allow("patch configmaps (server-side apply)", "patch", "configmaps", "", app),
		allow("delete configmaps (prune)", "delete", "configmaps", "", app),
		// Server-side apply of Git's kinds.
		allow("create deployments", "create", "deployments.apps", "", app),
		allow("patch deployments", "patch", "deployments.apps", "", app),
		allow("delete deployments", "delete", "deployments.apps", "", app),
		allow("patch statefulsets", "patch", "statefulsets.apps", "", app),
		allow("patch daemonsets", "patch", "daemonsets.apps", "", app),
		allow("create services", "create", "services", "", app),
		allow("create serviceaccounts", "create", "serviceaccounts", "", app),
		allow("create persistentvolumeclaims", "create", "persistentvolumeclaims", "", app),
		allow("create jobs", "create", "jobs.batch", "", app),
		allow("create cronjobs", "create", "cronjobs.batch", "", app),
		allow("create ingresses", "create", "ingresses.networking.k8s.io", "", app),
		allow("create networkpolicies", "create", "networkpolicies.networking.k8s.io", "", app),
		allow("create poddisruptionbudgets", "create", "poddisruptionbudgets.policy", "", app),
		allow("create horizontalpodautoscalers", "create", "horizontalpodautoscalers.autoscaling", "", app),
		allow("create roles", "create", "roles.rbac.authorization.k8s.io", "", app),
		allow("create rolebindings", "create", "rolebindings.rbac.authorization.k8s.io", "", app),
		allow("create bare pods", "create", "pods", "", app),
		allow("delete bare pods (structural change)", "delete", "pods", "", app),
		// The in-place engine and health.
		allow("list pods", "list", "pods", "", app),
		allow("watch pods", "watch", "pods", "", app),
		allow("patch pods (images)", "patch", "pods", "", app),
		allow("patch pods/status (InPlaceUpdateReady)", "patch", "pods", "status", app),
		allow("get replicasets", "get", "replicasets.apps", "", app),
		allow("list replicasets", "list", "replicasets.apps", "", app),
		allow("update replicasets (template copy)", "update", "replicasets.apps", "", app),
		allow("delete replicasets (history)", "delete", "replicasets.apps", "", app),
		allow("list controllerrevisions", "list", "controllerrevisions.apps", "", app),
		allow("list poddisruptionbudgets", "list", "poddisruptionbudgets.policy", "", app),
		allow("create events", "create", "events", "", app),
		allow("patch events", "patch", "events", "", app),
		allow("create events.k8s.io events", "create", "events.events.k8s.io", "", app),
		allow("create events in refit-system", "create", "events", "", refitNamespace),
		// Its own namespace.
		allow("get inventory configmap", "get", "configmaps", "", refitNamespace),
		allow("list inventories", "list", "configmaps", "", refitNamespace),
		allow("patch inventory", "patch", "configmaps", "", refitNamespace),
		allow("get secrets in refit-system", "get", "secrets", "", refitNamespace),
		deny("list secrets in refit-system (refit only gets them)", "list", "secrets", "", refitNamespace),
		// The App controller: App objects anywhere, their status and
		// finalizers; it never creates or deletes them.
		allow("watch apps", "watch", "apps.refit.dev", "", app),
		allow("patch apps (finalizer)", "patch", "apps.refit.dev", "", other),
		allow("update apps/status", "update", "apps.refit.dev", "status", app),
		allow("update apps/finalizers", "update", "apps.refit.dev", "finalizers", app),
		deny("create apps", "create", "apps.refit.dev", "", app),
		deny("delete apps", "delete", "apps.refit.dev", "", app),
		allow("get lease", "get", "leases.coordination.k8s.io", "", refitNamespace),
		allow("create lease", "create", "leases.coordination.k8s.io", "", refitNamespace),
		allow("update lease", "update", "leases.coordination.k8s.io", "", refitNamespace),
		allow("watch leases (shard members)", "watch", "leases.coordination.k8s.io", "", refitNamespace),
		allow("delete lease (shard lock)", "delete", "leases.coordination.k8s.io", "", refitNamespace),

		// Secrets only in its own namespace, read-only.
		deny("get secrets in an app namespace", "get", "secrets", "", app),
		deny("list secrets in an app namespace", "list", "secrets", "", app),
		deny("get secrets in kube-system", "get", "secrets", "", "kube-system"),
		{name: "list secrets in all namespaces", verb: "list", resource: "secrets", allNS: true},
		deny("create secrets in refit-system", "create", "secrets", "", refitNamespace),
		// Leases only in its own namespace.
		deny("create leases in an app namespace", "create", "leases.coordination.k8s.io", "", app),
		deny("update the controller manager's lease", "update", "leases.coordination.k8s.io", "", "kube-system"),
		deny("delete the controller manager's lease", "delete", "leases.coordination.k8s.io", "", "kube-system"),
		// No wildcard, no RBAC escalation, no impersonation.
		{name: "everything everywhere", verb: "*", resource: "*", allNS: true},
		deny("everything in an app namespace", "*", "*", "", app),
		deny("create clusterroles", "create", "clusterroles.rbac.authorization.k8s.io", "", ""),
		deny("create clusterrolebindings", "create", "clusterrolebindings.rbac.authorization.k8s.io", "", ""),
		deny("escalate roles", "escalate", "roles.rbac.authorization.k8s.io", "", app),
		deny("escalate clusterroles", "escalate", "clusterroles.rbac.authorization.k8s.io", "", ""),
		deny("bind clusterroles", "bind", "clusterroles.rbac.authorization.k8s.io", "", ""),
		deny("bind roles", "bind", "roles.rbac.authorization.k8s.io", "", app),
		deny("impersonate users", "impersonate", "users", "", ""),
		deny("impersonate groups", "impersonate", "groups", "", ""),
		deny("impersonate serviceaccounts", "impersonate", "serviceaccounts", "", app),
		// No way into Pods or nodes, no tokens.
		deny("pods/exec", "create", "pods", "exec", app),
		deny("pods/attach", "create", "pods", "attach", app),
		deny("pods/portforward", "create", "pods", "portforward", app),
		deny("pods/log", "get", "pods", "log", app),
		deny("pods/eviction", "create", "pods", "eviction", app),
		deny("update pods/status (only patch)", "update", "pods", "status", app),
		deny("serviceaccounts/token", "create", "serviceaccounts", "token", app),
		deny("nodes/proxy", "get", "nodes", "proxy", ""),
		deny("patch nodes", "patch", "nodes", "", ""),
		deny("list nodes", "list", "nodes", "", ""),
		// Nothing cluster-wide that is a cluster admin's decision.
		deny("create customresourcedefinitions", "create", "customresourcedefinitions.apiextensions.k8s.io", "", ""),
		deny("create mutatingwebhookconfigurations", "create", "mutatingwebhookconfigurations.admissionregistration.k8s.io", "", ""),
		deny("create validatingwebhookconfigurations", "create", "validatingwebhookconfigurations.admissionregistration.k8s.io", "", ""),
		deny("approve certificatesigningrequests", "update", "certificatesigningrequests.certificates.k8s.io", "approval", ""),
		deny("create priorityclasses", "create", "priorityclasses.scheduling.k8s.io", "", ""),
		// The engine's own rights are exactly what it calls.
		deny("create replicasets", "create", "replicasets.apps", "", app),
		deny("delete controllerrevisions", "delete", "controllerrevisions.apps", "", app),
		deny("patch replicasets/status", "patch", "replicasets.apps", "status", app),
		deny("update deployments/status", "update", "deployments.apps", "status", app),
		// other is any namespace: Git's kinds reach it, Secrets do not.
		allow("patch deployments in another namespace", "patch", "deployments.apps", "", other),
		deny("get secrets in another namespace", "get", "secrets", "", other),
	}
}

func testDeployPermissions(t *testing.T) {
	app, other := namespace(t), namespace(t)
	for _, tc := range deployAccessCases(app, other) {
		t.Run(tc.name, func(t *testing.T) {
			got, err := canI(tc)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				where := tc.namespace
				if tc.allNS {
					where = "all namespaces"
				}
				t.Errorf("%s %s %s (%s) as %s: allowed=%v, want %v", tc.verb, tc.resource, tc.subresource, where, refitSA, got, tc.want)
			}
		})
	}
}

// waitCanI polls an access question until it has the wanted answer.
func waitCanI(t *testing.T, a access, timeout time.Duration) {
	t.Helper()
	var last error
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		got, err := canI(a)
		last = err
		return err == nil && got == a.want, nil
	})
	if err != nil {
		t.Fatalf("%s: %s %s in %q: want allowed=%v within %s (last error: %v)", a.name, a.verb, a.resource, a.namespace, a.want, timeout, last)
	}
}

// testDeployAggregation checks the documented way to let refit manage more
// kinds: a ClusterRole with the label refit.dev/aggregate-to-refit. (The
// kind must be one the server serves: kubectl auth can-i cannot ask about
// others.)
func testDeployAggregation(t *testing.T) {
	ns := namespace(t)
	name := "refit-e2e-quotas-" + rand.String(5)
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"refit.dev/aggregate-to-refit": "true"}},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"resourcequotas", "limitranges"},
			Verbs: []string{"get", "list", "watch", "create", "update", "patch", "delete"}}},
	}
	quotas := access{name: "create resourcequotas", verb: "create", resource: "resourcequotas", namespace: ns}
	if got, err := canI(quotas); err != nil || got {
		t.Fatalf("before the extension: allowed=%v, %v; want false", got, err)
	}
	if _, err := bed.Client.RbacV1().ClusterRoles().Create(context.Background(), role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = bed.Client.RbacV1().ClusterRoles().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	quotas.want = true
	waitCanI(t, quotas, 30*time.Second)

	if err := bed.Client.RbacV1().ClusterRoles().Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	quotas.want = false
	waitCanI(t, quotas, 30*time.Second)
}

// saKubeconfig writes a kubeconfig for the bed that impersonates refit's
// ServiceAccount: what refit sees when it runs in the cluster.
func saKubeconfig(t *testing.T) string {
	t.Helper()
	cfg, err := (&clientcmd.ClientConfigLoadingRules{ExplicitPath: bed.Kubeconfig}).Load()
	if err != nil {
		t.Fatal(err)
	}
	for _, auth := range cfg.AuthInfos {
		auth.Impersonate, auth.ImpersonateGroups = refitSA, refitSAGroups
	}
	path := filepath.Join(t.TempDir(), "refit-sa.kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// deployApp is an app with every kind refit handles specially: a gated
// Deployment with a PDB (pods/status, ReplicaSets, PDBs), a StatefulSet
// (partition hold), a DaemonSet (ControllerRevisions), and the Role and
// RoleBinding of its own ServiceAccount.
const deployApp = `apiVersion: v1
kind: ServiceAccount
metadata: {name: web}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: web}
rules:
- {apiGroups: [""], resources: [configmaps], verbs: [get, list, watch]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  strategy: {rollingUpdate: {maxUnavailable: 1}}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      serviceAccountName: web
      readinessGates: [{conditionType: InPlaceUpdateReady}]
      containers: [{name: web, image: "web:1.0"}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web}
spec:
  minAvailable: 2
  selector: {matchLabels: {app: web}}
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{port: 5432}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 2
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: db, image: "db:1.0"}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers: [{name: agent, image: "agent:1.0"}]
`

// deployRoleBinding binds the app's Role, in the same commit as the Role:
// without "bind", the API server lets refit create a RoleBinding only if it
// holds the Role's permissions, which it looks up, so refit writes the Role
// first and validates the binding then.
const deployRoleBinding = `---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: web}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: web}
subjects: [{kind: ServiceAccount, name: web}]
`

const deploySettings = `---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {level: info}
`

const deploySecret = `---
apiVersion: v1
kind: Secret
metadata: {name: web-credentials}
stringData: {password: hunter2}
`

// deployGreedyRole grants what refit itself does not hold in an app
// namespace: the API server's escalation check refuses it.
const deployGreedyRole = `---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: leader-election}
rules:
- {apiGroups: [coordination.k8s.io], resources: [leases], verbs: [get, create, update]}
`

// refitAsSA runs the refit CLI with the ServiceAccount's kubeconfig.
func refitAsSA(t *testing.T, kubeconfig, ns string, args ...string) (string, int) {
	t.Helper()
	return runCmd(t, exec.Command(refit(t), append(args, "--kubeconfig", kubeconfig, "-n", ns, "--app", ns)...))
}

// readyPods returns the namespace's Pods (name → UID and first container's
// spec image), failing unless all are Running and Ready.
func readyPods(t *testing.T, ns string) map[string]string {
	t.Helper()
	list, err := bed.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: notPrePull})
	if err != nil {
		t.Fatal(err)
	}
	pods := map[string]string{}
	for i := range list.Items {
		p := &list.Items[i]
		if p.Status.Phase != corev1.PodRunning || !podReady(p) || p.DeletionTimestamp != nil {
			t.Fatalf("pod %s/%s not running and ready after apply --wait: %s", ns, p.Name, describePod(p))
		}
		pods[p.Name] = string(p.UID) + " " + p.Spec.Containers[0].Image
	}
	return pods
}

// testDeployCLIAsServiceAccount proves the permissions with refit's real
// calls rather than with a list: plan, staged apply, inventory, health wait,
// in-place rollouts of the three workload kinds, the escalation check, the
// Secrets opt-in, and pruning, all as the ServiceAccount.
func testDeployCLIAsServiceAccount(t *testing.T) {
	ns := namespace(t)
	kubeconfig := saKubeconfig(t)
	dir := t.TempDir()
	t.Cleanup(func() {
		_ = bed.Client.CoreV1().ConfigMaps(refitNamespace).Delete(context.Background(), "refit-inventory-"+ns, metav1.DeleteOptions{})
	})
	apply := func(step, manifests string, args ...string) (string, int) {
		t.Helper()
		writeManifests(t, dir, manifests)
		out, code := refitAsSA(t, kubeconfig, ns, append([]string{"apply", "--dir", dir, "--grace", "0s", "--health-timeout", "2m"}, args...)...)
		t.Logf("%s: exit %d\n%s", step, code, out)
		return out, code
	}

	if out, code := apply("first apply", deployApp+deployRoleBinding+deploySettings, "--wait"); code != 0 {
		t.Fatalf("first apply as %s: exit %d, want 0\n%s", refitSA, code, out)
	}
	before := readyPods(t, ns)
	if _, err := bed.Client.RbacV1().RoleBindings(ns).Get(context.Background(), "web", metav1.GetOptions{}); err != nil {
		t.Fatalf("the RoleBinding committed with its Role was not applied: %v", err)
	}

	bumped := strings.NewReplacer(`"web:1.0"`, `"web:1.1"`, `"db:1.0"`, `"db:1.1"`, `"agent:1.0"`, `"agent:1.1"`).Replace(deployApp) + deployRoleBinding
	if out, code := apply("image bump", bumped+deploySettings, "--wait"); code != 0 || !strings.Contains(out, "in place: 3 workloads") {
		t.Fatalf("image bump as %s: exit %d, want 0 and 3 workloads updated in place\n%s", refitSA, code, out)
	}
	after := readyPods(t, ns)
	if len(after) != len(before) {
		t.Fatalf("pods before %v, after %v", before, after)
	}
	for name, was := range before {
		uid, image, _ := strings.Cut(was, " ")
		if want := uid + " " + strings.Replace(image, ":1.0", ":1.1", 1); after[name] != want {
			t.Errorf("pod %s: %q after the bump, want %q (same UID, new image)", name, after[name], want)
		}
	}

	if out, code := apply("role beyond refit's rights", bumped+deploySettings+deployGreedyRole); code == 0 ||
		!strings.Contains(out, "attempting to grant RBAC permissions not currently held") {
		t.Fatalf("a Role granting Leases: exit %d, want a refusal by the escalation check\n%s", code, out)
	}
	assertAbsent(t, "roles", ns, "leader-election")

	testDeploySecretsOptIn(t, ns, func(step string) (string, int) { return apply(step, bumped+deploySettings+deploySecret) })

	if out, code := apply("prune", bumped+deploySecret, "--prune"); code != 0 {
		t.Fatalf("prune as %s: exit %d, want 0\n%s", refitSA, code, out)
	}
	assertAbsent(t, "configmaps", ns, "settings")
}

// testDeploySecretsOptIn checks that Secrets in Git are refused until
// refit-secrets is bound in the namespace, and applied after.
func testDeploySecretsOptIn(t *testing.T, ns string, apply func(step string) (string, int)) {
	t.Helper()
	// The CLI runs as refit's ServiceAccount (impersonated): refit's access
	// check refuses the commit before the planner lists Secrets.
	if out, code := apply("secret without refit-secrets"); code == 0 || !strings.Contains(out, "may not patch secrets in namespace "+ns) {
		t.Fatalf("a Secret in Git without refit-secrets bound: exit %d, want the commit refused, naming the Secret\n%s", code, out)
	}
	assertAbsent(t, "secrets", ns, "web-credentials")

	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "refit-secrets", Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "refit-secrets"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "refit", Namespace: refitNamespace}},
	}
	if _, err := bed.Client.RbacV1().RoleBindings(ns).Create(context.Background(), binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitCanI(t, access{name: "list secrets once bound", verb: "list", resource: "secrets", namespace: ns, want: true}, 10*time.Second)
	if got, err := canI(access{verb: "get", resource: "secrets", namespace: "default"}); err != nil || got {
		t.Fatalf("refit-secrets bound in %s: get secrets in default allowed=%v (%v), want false", ns, got, err)
	}
	if out, code := apply("secret with refit-secrets bound"); code != 0 {
		t.Fatalf("a Secret in Git with refit-secrets bound: exit %d, want 0\n%s", code, out)
	}
	if _, err := bed.Client.CoreV1().Secrets(ns).Get(context.Background(), "web-credentials", metav1.GetOptions{}); err != nil {
		t.Fatalf("secret web-credentials: %v", err)
	}
}

// assertAbsent fails if the namespaced object exists.
func assertAbsent(t *testing.T, resource, ns, name string) {
	t.Helper()
	var err error
	switch resource {
	case "roles":
		_, err = bed.Client.RbacV1().Roles(ns).Get(context.Background(), name, metav1.GetOptions{})
	case "secrets":
		_, err = bed.Client.CoreV1().Secrets(ns).Get(context.Background(), name, metav1.GetOptions{})
	case "configmaps":
		_, err = bed.Client.CoreV1().ConfigMaps(ns).Get(context.Background(), name, metav1.GetOptions{})
	default:
		t.Fatalf("assertAbsent: unexpected resource %s", resource)
	}
	if !apierrors.IsNotFound(err) {
		t.Fatalf("%s %s/%s: want it absent, got err=%v", resource, ns, name, err)
	}
}

// testDeployStaticBuild builds refit as deploy/Dockerfile does (Docker does
// not run here) and checks that the binary is static, as
// distroless/static needs: no ELF interpreter, no shared libraries.
func testDeployStaticBuild(t *testing.T) {
	dockerfile, err := os.ReadFile(filepath.Join(deployDir, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"CGO_ENABLED=0", "./cmd/refit", "FROM gcr.io/distroless/static:nonroot", "USER 65532:65532"} {
		if !bytes.Contains(dockerfile, []byte(want)) {
			t.Errorf("deploy/Dockerfile: no %q", want)
		}
	}
	bin := filepath.Join(t.TempDir(), "refit")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./cmd/refit")
	cmd.Dir = filepath.Join("..", "..")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build ./cmd/refit: %v\n%s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("refit has an ELF interpreter: it is not static")
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
		t.Errorf("refit needs shared libraries %v (%v): it is not static", libs, err)
	}
}
