//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/refit-gitops/refit/apply"
	"github.com/refit-gitops/refit/test/gitserver"
)

// identityApp is a tenant's app: a gated Deployment (the gate needs
// pods/status, which "edit" lacks and refit-inplace grants) and a ConfigMap.
func identityApp(image, level string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: shop}
spec:
  replicas: 3
  strategy: {rollingUpdate: {maxUnavailable: 1}}
  selector: {matchLabels: {app: shop}}
  template:
    metadata: {labels: {app: shop}}
    spec:
      readinessGates: [{conditionType: InPlaceUpdateReady}]
      containers: [{name: shop, image: %q}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {level: %s}
`, image, level)
}

// beyondTeam are objects a team-a deployer may not write: a ConfigMap of
// another namespace and a ClusterRole.
func beyondTeam(other string) string {
	return fmt.Sprintf(`---
apiVersion: v1
kind: ConfigMap
metadata: {name: stolen, namespace: %s}
data: {x: "1"}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: %s-escalate}
rules: [{apiGroups: ["*"], resources: ["*"], verbs: ["*"]}]
`, other, other)
}

// tenant makes the ServiceAccount deployer in ns, bound to roles ("edit"
// and deploy/'s refit-inplace unless said otherwise) in ns only, and
// returns its user name.
func tenant(t *testing.T, ns string, roles ...string) string {
	t.Helper()
	ctx := context.Background()
	if out, err := kubectl(nil, "apply", "--server-side", "-f", filepath.Join(deployDir, "base", "rbac-inplace.yaml")); err != nil {
		t.Fatalf("ClusterRole refit-inplace: %v\n%s", err, out)
	}
	if _, err := bed.Client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "deployer"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if len(roles) == 0 {
		roles = []string{"edit", "refit-inplace"}
	}
	for _, role := range roles {
		rb := &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "deployer-" + role},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "deployer", Namespace: ns}},
		}
		if _, err := bed.Client.RbacV1().RoleBindings(ns).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return "system:serviceaccount:" + ns + ":deployer"
}

// TestIdentity: every request of an app is made as the app's identity, a
// team-a deployer bound to "edit" + refit-inplace in team-a only. The CLI
// (--as) applies a commit within team-a and bumps an image in place (Pod
// UIDs unchanged, the gate kept through pods/status); a commit reaching
// beyond team-a is refused whole, naming each object, nothing of it
// written; a gated workload for a deployer without refit-inplace is refused
// before anything is written (its Pods could never become Ready);
// --prune works with the inventory in team-a. The service
// (serviceAccountName), running with a token that may only impersonate
// ServiceAccounts (deploy/locked-down's refit-impersonate), applies as the
// deployer and is refused beyond team-a.
func TestIdentity(t *testing.T) {
	team, other := namespace(t), namespace(t)
	user := tenant(t, team)

	t.Run("locked-down-install-grants-refit-only-impersonate", testLockedDownInstall)
	t.Run("service-acts-as-the-app-serviceaccount", func(t *testing.T) { testIdentityService(t, other) })

	dir := t.TempDir()
	writeManifests(t, dir, identityApp("shop:1.0", "info"))
	as := func(args ...string) (string, int) {
		return runRefitCLI(t, team, append([]string{"apply", "--dir", dir, "--app", "shop", "--as", user, "--grace", "0s"}, args...)...)
	}
	if !t.Run("cli-applies-within-the-team", func(t *testing.T) {
		if out, code := as("--wait", "--health-timeout", "1m"); code != 0 {
			t.Fatalf("refit apply --as %s: exit %d\n%s", user, code, out)
		}
		if _, err := bed.Client.CoreV1().ConfigMaps(team).Get(context.Background(), apply.InventoryName("shop"), metav1.GetOptions{}); err != nil {
			t.Errorf("inventory of app shop in %s (where the deployer may write it): %v", team, err)
		}
		if _, err := bed.Client.CoreV1().ConfigMaps(apply.DefaultInventoryNamespace).Get(context.Background(), apply.InventoryName("shop"), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("inventory of app shop in %s: %v; want none there", apply.DefaultInventoryNamespace, err)
		}
	}) {
		return
	}
	if !t.Run("cli-image-bump-in-place", func(t *testing.T) {
		before := waitReadyPods(t, team, 3, nil)
		fw := watchFleet(t, team)
		writeManifests(t, dir, identityApp("shop:1.1", "info"))
		out, code := as("--wait", "--health-timeout", "1m")
		if code != 0 {
			t.Fatalf("refit apply --as %s: exit %d\n%s", user, code, out)
		}
		if !strings.Contains(out, "update in place") {
			t.Errorf("want the bump planned in place:\n%s", out)
		}
		waitFor(t, time.Minute, "3 ready pods on shop:1.1", func(ctx context.Context) bool { return allPodsOn(ctx, team, "shop:1.1", 3) })
		maxUnavailable, nUIDs, deleted, _ := fw.summary()
		after := waitReadyPods(t, team, 3, nil)
		if fmt.Sprint(uidsOf(after)) != fmt.Sprint(uidsOf(before)) || nUIDs != 3 || len(deleted) > 0 {
			t.Errorf("pods replaced: %v → %v (%d UIDs seen, deleted %v)", uidsOf(before), uidsOf(after), nUIDs, deleted)
		}
		if maxUnavailable > 1 {
			t.Errorf("most unavailable %d, bound 1", maxUnavailable)
		}
	}) {
		return
	}
	if !t.Run("cli-refuses-a-commit-beyond-the-team", func(t *testing.T) {
		writeManifests(t, dir, identityApp("shop:1.1", "debug")+beyondTeam(other))
		out, code := as()
		if code != 1 {
			t.Fatalf("refit apply of a commit beyond %s: exit %d, want 1\n%s", team, code, out)
		}
		for _, want := range []string{"ConfigMap/" + other + "/stolen", "ClusterRole.rbac.authorization.k8s.io/" + other + "-escalate", "forbidden"} {
			if !strings.Contains(out, want) {
				t.Errorf("want the error to name %q:\n%s", want, out)
			}
		}
		assertIdentityCommitNotApplied(t, team, other)
	}) {
		return
	}
	t.Run("cli-refuses-a-gated-workload-without-refit-inplace", func(t *testing.T) {
		bare := namespace(t)
		user := tenant(t, bare, "edit")
		dir := t.TempDir()
		writeManifests(t, dir, identityApp("shop:1.0", "info"))
		out, code := runRefitCLI(t, bare, "apply", "--dir", dir, "--app", "shop", "--as", user)
		if code != 1 || !strings.Contains(out, "Deployment.apps/"+bare+"/shop") || !strings.Contains(out, "may not patch pods/status") ||
			!strings.Contains(out, "refit-inplace") {
			t.Fatalf("a gated Deployment for a deployer without refit-inplace: exit %d; want 1, naming the Deployment, pods/status and refit-inplace\n%s", code, out)
		}
		if _, err := bed.Client.AppsV1().Deployments(bare).Get(context.Background(), "shop", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("Deployment %s/shop: %v; want it never written", bare, err)
		}
	})
	t.Run("cli-prunes-with-the-inventory-in-the-team", func(t *testing.T) {
		writeManifests(t, dir, strings.SplitN(identityApp("shop:1.1", "info"), "---\n", 2)[0])
		if out, code := as("--prune"); code != 0 {
			t.Fatalf("refit apply --prune --as %s: exit %d\n%s", user, code, out)
		}
		waitFor(t, 30*time.Second, "ConfigMap settings pruned", func(ctx context.Context) bool {
			_, err := bed.Client.CoreV1().ConfigMaps(team).Get(ctx, "settings", metav1.GetOptions{})
			return apierrors.IsNotFound(err)
		})
	})
}

// assertIdentityCommitNotApplied checks that nothing of a refused commit was
// written: the team's ConfigMap keeps level info, the other objects do not
// exist.
func assertIdentityCommitNotApplied(t *testing.T, team, other string) {
	t.Helper()
	ctx := context.Background()
	cm, err := bed.Client.CoreV1().ConfigMaps(team).Get(ctx, "settings", metav1.GetOptions{})
	if err != nil || cm.Data["level"] != "info" {
		t.Errorf("ConfigMap %s/settings: %v %v; want level info, untouched by the refused commit", team, err, cm.Data)
	}
	if _, err := bed.Client.CoreV1().ConfigMaps(other).Get(ctx, "stolen", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("ConfigMap %s/stolen: %v; want it never written", other, err)
	}
	if _, err := bed.Client.RbacV1().ClusterRoles().Get(ctx, other+"-escalate", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("ClusterRole %s-escalate: %v; want it never written", other, err)
	}
}

// testIdentityService runs refit run with the token of a ServiceAccount that
// holds only deploy/locked-down's refit-impersonate: whatever the app does,
// it does as its serviceAccountName. The app has a team of its own (the
// CLI's app owns the objects of the first).
func testIdentityService(t *testing.T, other string) {
	team := namespace(t)
	tenant(t, team)
	kubeconfig := impersonatorKubeconfig(t, team)
	srv := gitserver.New(t, gitserver.DefaultOptions())
	repo := srv.NewRepo(t, "team")
	settings := func(level string) string {
		return "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {level: " + level + "}\n"
	}
	files := map[string]string{"deploy/kustomization.yaml": "resources: [app.yaml]\n", "deploy/app.yaml": settings("info")}
	repo.Commit(files, "team app")
	cfgFile := filepath.Join(t.TempDir(), "config.yaml")
	cfg := fmt.Sprintf(`apiVersion: refit.dev/v1alpha1
kind: Config
apps:
- name: team
  source: {url: %s, usernameFile: %s, passwordFile: %s}
  path: deploy
  interval: 1s
  namespace: %s
  serviceAccountName: deployer
  timeout: 1m
`, repo.HTTPURL(), writeTemp(t, srv.Username()), writeTemp(t, srv.Password()), team)
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	svc := startService(t, nil, "--config", cfgFile, "--grace", "0s", "--kubeconfig", kubeconfig)
	waitFor(t, time.Minute, "the app applied (ConfigMap settings, level info)", func(ctx context.Context) bool {
		cm, err := bed.Client.CoreV1().ConfigMaps(team).Get(ctx, "settings", metav1.GetOptions{})
		return err == nil && cm.Data["level"] == "info"
	})
	if _, err := bed.Client.CoreV1().ConfigMaps(team).Get(context.Background(), apply.InventoryName("team"), metav1.GetOptions{}); err != nil {
		t.Errorf("inventory of app team in %s: %v", team, err)
	}
	if !strings.Contains(svc.out.String(), "system:serviceaccount:"+team+":deployer") {
		t.Errorf("want the log to say the app acts as its ServiceAccount:\n%s", svc.out.String())
	}
	files["deploy/app.yaml"] = settings("debug") + beyondTeam(other)
	repo.Commit(files, "reach beyond the team")
	waitFor(t, 30*time.Second, "the commit refused as a bad commit", func(context.Context) bool {
		return strings.Contains(svc.metrics(t), appSeries("refit_reconciles_total", "team", "bad-commit"))
	})
	if !strings.Contains(svc.out.String(), "forbidden") {
		t.Errorf("want the log to say forbidden:\n%s", svc.out.String())
	}
	assertIdentityCommitNotApplied(t, team, other)
}

// decodeFirst reads the first YAML document of file into obj.
func decodeFirst(file string, obj any) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	for _, doc := range strings.Split(string(data), "\n---\n") {
		if strings.Contains(doc, "kind:") {
			return yaml.UnmarshalStrict([]byte(doc), obj)
		}
	}
	return fmt.Errorf("%s: no object", file)
}

// impersonatorKubeconfig is a kubeconfig with the token of a ServiceAccount
// bound only to refit-impersonate (deploy/locked-down): it may do nothing
// itself but act as a ServiceAccount.
func impersonatorKubeconfig(t *testing.T, ns string) string {
	t.Helper()
	ctx := context.Background()
	if _, err := bed.Client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "refit"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.ClusterRole{}
	if err := decodeFirst(filepath.Join(deployDir, "locked-down", "rbac-impersonate.yaml"), role); err != nil {
		t.Fatal(err)
	}
	role.Name = ns + "-impersonate"
	if _, err := bed.Client.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = bed.Client.RbacV1().ClusterRoles().Delete(context.Background(), role.Name, metav1.DeleteOptions{})
	})
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "refit", Namespace: ns}},
	}
	if _, err := bed.Client.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = bed.Client.RbacV1().ClusterRoleBindings().Delete(context.Background(), crb.Name, metav1.DeleteOptions{})
	})
	return tokenKubeconfig(t, ns, "refit")
}

// testLockedDownInstall checks what deploy/locked-down gives refit's own
// ServiceAccount: cluster-wide only impersonate on serviceaccounts (the
// role the service case runs with), a Role in refit-system only, and a
// Deployment that makes every app act as a ServiceAccount of its own.
func testLockedDownInstall(t *testing.T) {
	manifests, err := kubectl(nil, "kustomize", filepath.Join(deployDir, "locked-down"))
	if err != nil {
		t.Fatal(err)
	}
	var clusterGrants, namespaced []string
	sawDefaultSA := false
	for _, doc := range strings.Split(manifests, "\n---\n") {
		var obj struct {
			Kind     string
			Metadata struct{ Name, Namespace string }
			Rules    []rbacv1.PolicyRule
			RoleRef  rbacv1.RoleRef `json:"roleRef"`
			Spec     struct {
				Template struct {
					Spec corev1.PodSpec
				}
			}
		}
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			t.Fatal(err)
		}
		switch obj.Kind {
		case "ClusterRoleBinding":
			clusterGrants = append(clusterGrants, obj.RoleRef.Name)
		case "RoleBinding":
			namespaced = append(namespaced, obj.Metadata.Namespace+"/"+obj.RoleRef.Name)
		case "ClusterRole":
			if obj.Metadata.Name == "refit-impersonate" && fmt.Sprint(obj.Rules) != fmt.Sprint([]rbacv1.PolicyRule{{Verbs: []string{"impersonate"}, APIGroups: []string{""}, Resources: []string{"serviceaccounts"}}}) {
				t.Errorf("ClusterRole refit-impersonate: %v; want impersonate on serviceaccounts only", obj.Rules)
			}
			// The App controller's role reaches App objects, their Events
			// and the Namespaces' metadata only, never what the apps deploy.
			for _, r := range obj.Rules {
				if obj.Metadata.Name == "refit-apps" && !appControllerRule(r) {
					t.Errorf("ClusterRole refit-apps: rule %v; want App objects, Events (create, patch) and Namespaces (get) only", r)
				}
			}
		case "Deployment":
			for _, arg := range obj.Spec.Template.Spec.Containers[0].Args {
				sawDefaultSA = sawDefaultSA || arg == "--default-service-account=refit-deployer"
			}
		}
	}
	if fmt.Sprint(clusterGrants) != "[refit-apps refit-impersonate]" || fmt.Sprint(namespaced) != "[refit-system/refit]" {
		t.Errorf("locked-down bindings: cluster %v, namespaced %v; want [refit-apps refit-impersonate] and [refit-system/refit]", clusterGrants, namespaced)
	}
	if !sawDefaultSA {
		t.Errorf("locked-down Deployment: want --default-service-account=refit-deployer")
	}
}

// appControllerRule: r grants the App controller rights on App objects, on
// Events (to record them) or on Namespaces (to read one), and nothing else.
func appControllerRule(r rbacv1.PolicyRule) bool {
	switch groups, verbs := fmt.Sprint(r.APIGroups), fmt.Sprint(r.Verbs); {
	case groups == "[refit.dev]":
		return !slices.ContainsFunc(r.Resources, func(res string) bool { return res != "apps" && res != "apps/status" && res != "apps/finalizers" })
	case fmt.Sprint(r.Resources) == "[events]" && (groups == "[]" || groups == "[events.k8s.io]"):
		return verbs == "[create patch]"
	case fmt.Sprint(r.Resources) == "[namespaces]" && groups == "[]":
		return verbs == "[get]"
	}
	return false
}
