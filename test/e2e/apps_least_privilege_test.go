//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"

	"github.com/refit-gitops/refit/api/v1alpha1"
	"github.com/refit-gitops/refit/apply"
	"github.com/refit-gitops/refit/test/gitserver"
)

// TestAppsLeastPrivilege runs refit in App mode as deploy/locked-down-apps
// installs it: the CRD, refit's ServiceAccount holding only impersonate on
// ServiceAccounts, refit-apps and its Role in refit-system, and refit run
// with the Deployment's arguments and that ServiceAccount's own token (so
// impersonating an App's ServiceAccount goes through refit's RBAC, not the
// admin's). In a team namespace where refit itself may read no Secret, an
// App whose ServiceAccount may get its Git Secret (a password-protected
// repository) becomes Ready, with refit's Events on it, as does one that
// names none (--default-service-account's refit-deployer, which may); an App
// whose ServiceAccount may not is not Ready, says which Secret, which
// ServiceAccount and the fix, and applies nothing; once the team grants it,
// refit reconcile app makes it Ready. A deleted App is pruned and let go.
func TestAppsLeastPrivilege(t *testing.T) {
	args := installLockedDown(t)
	team := namespace(t)
	ctx := context.Background()

	// refit's own identity: no Secret, no write in the team's namespace;
	// it may act as a ServiceAccount (else the test proves nothing).
	for _, a := range []access{
		{name: "get secrets in the team namespace", verb: "get", resource: "secrets", namespace: team},
		{name: "create configmaps in the team namespace", verb: "create", resource: "configmaps", namespace: team},
		{name: "impersonate serviceaccounts", verb: "impersonate", resource: "serviceaccounts", namespace: team, want: true},
	} {
		if got, err := canI(a); err != nil || got != a.want {
			t.Fatalf("refit's ServiceAccount: %s: allowed=%v (%v), want %v", a.name, got, err, a.want)
		}
	}

	srv := gitserver.New(t, gitserver.DefaultOptions())
	repo := srv.NewRepo(t, "team")
	files := appFiles(team, "shop:1.0", 1)
	files["other/kustomization.yaml"] = "resources: [cm.yaml]\nnamespace: " + team + "\n"
	files["other/cm.yaml"] = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other-settings}\ndata: {mode: slow}\n"
	files["third/kustomization.yaml"] = "resources: [cm.yaml]\nnamespace: " + team + "\n"
	files["third/cm.yaml"] = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: third-settings}\ndata: {mode: fair}\n"
	head := repo.Commit(files, "shop 1.0")
	if _, err := bed.Client.CoreV1().Secrets(team).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "git"},
		StringData: map[string]string{"username": srv.Username(), "password": srv.Password()},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// All may apply in the namespace; only deployer and refit-deployer (the
	// default) may read the Secret.
	teamRole(t, team, "apply", rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"configmaps", "events"},
		Verbs: []string{"get", "list", "watch", "create", "update", "patch", "delete"}},
		// pods: health; namespaces: the inventory's namespace (its own).
		rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods", "namespaces"}, Verbs: []string{"get", "list", "watch"}},
		rbacv1.PolicyRule{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"get", "list", "watch", "create", "update", "patch", "delete"}},
		rbacv1.PolicyRule{APIGroups: []string{"apps"}, Resources: []string{"replicasets"}, Verbs: []string{"get", "list", "watch"}},
		rbacv1.PolicyRule{APIGroups: []string{"events.k8s.io"}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}})
	teamRole(t, team, "read-git", rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{"git"}, Verbs: []string{"get"}})
	for _, sa := range []string{"deployer", "stranger", "refit-deployer"} {
		if _, err := bed.Client.CoreV1().ServiceAccounts(team).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		bindRole(t, team, "apply", sa)
	}
	bindRole(t, team, "read-git", "deployer")
	bindRole(t, team, "read-git", "refit-deployer")

	dyn, err := dynamic.NewForConfig(bed.Config)
	if err != nil {
		t.Fatal(err)
	}
	apps := dyn.Resource(appsResource).Namespace(team)
	t.Cleanup(func() {
		// refit is stopped by then: nothing else removes the finalizers,
		// which would hold the namespace and the CRD.
		for _, name := range []string{"lp-shop", "lp-other", "lp-default"} {
			_, _ = apps.Patch(context.Background(), name, types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{})
		}
	})
	startService(t, nil, append(args, "--kubeconfig", tokenKubeconfig(t, refitNamespace, "refit"), "--watch-namespace", team, "--grace", "0s")...)
	app := func(name, sa, path string) string {
		spec := fmt.Sprintf("  source: {url: %q, secretRef: {name: git}}\n  path: %s\n  interval: 1s\n  timeout: 1m\n", repo.HTTPURL(), path)
		if sa != "" {
			spec += "  serviceAccountName: " + sa + "\n"
		}
		return appDoc(team, name, spec)
	}
	docs := []string{app("lp-shop", "deployer", "deploy"), app("lp-other", "stranger", "other"), app("lp-default", "", "third")}
	if out, err := kubectl([]byte(strings.Join(docs, "\n---\n")), "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatalf("create the Apps: %v\n%s", err, out)
	}
	began := time.Now()

	waitAppReady(t, apps, team, "lp-shop", head)
	t.Logf("lp-shop Ready at %s", time.Since(began).Round(100*time.Millisecond))
	if _, err := bed.Client.AppsV1().Deployments(team).Get(ctx, "shop", metav1.GetOptions{}); err != nil {
		t.Errorf("Deployment %s/shop of lp-shop: %v", team, err)
	}
	// refit records Events on App objects itself (refit-apps lets it).
	waitFor(t, 30*time.Second, "an Event on App lp-shop", func(ctx context.Context) bool {
		evs, err := bed.Client.CoreV1().Events(team).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.kind=App,involvedObject.name=lp-shop"})
		return err == nil && len(evs.Items) > 0
	})
	// No serviceAccountName: --default-service-account's, which may read it.
	waitAppReady(t, apps, team, "lp-default", head)
	if _, err := bed.Client.CoreV1().ConfigMaps(team).Get(ctx, "third-settings", metav1.GetOptions{}); err != nil {
		t.Errorf("ConfigMap %s/third-settings of lp-default: %v", team, err)
	}

	var msg string
	waitFor(t, 30*time.Second, "lp-other not Ready, for its Secret", func(context.Context) bool {
		ready := readyCondition(getApp(t, apps, "lp-other"))
		msg = ready.Message
		return ready.Status == metav1.ConditionFalse && strings.Contains(msg, "secret "+team+"/git")
	})
	for _, want := range []string{"ServiceAccount " + team + "/stranger may not get it",
		"kubectl -n " + team + " create role read-git --verb=get --resource=secrets --resource-name=git",
		"--serviceaccount=" + team + ":stranger"} {
		if !strings.Contains(msg, want) {
			t.Errorf("lp-other's Ready message: want %q in\n%s", want, msg)
		}
	}
	if _, err := bed.Client.CoreV1().ConfigMaps(team).Get(ctx, "other-settings", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("ConfigMap %s/other-settings of lp-other: %v; want it never applied", team, err)
	}
	if _, err := bed.Client.CoreV1().ConfigMaps(team).Get(ctx, apply.InventoryName("lp-other"), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("inventory of lp-other: %v; want none", err)
	}

	// The team grants the read; a reconcile request rewires the App, which
	// reads the Secret again.
	bindRole(t, team, "read-git", "stranger")
	if out, err := exec.Command(refit(t), "reconcile", "app", "lp-other", "-n", team, "--kubeconfig", bed.Kubeconfig, "--timeout", "30s").CombinedOutput(); err != nil {
		t.Fatalf("refit reconcile app lp-other: %v\n%s", err, out)
	}
	waitAppReady(t, apps, team, "lp-other", head)
	t.Logf("lp-other Ready at %s", time.Since(began).Round(100*time.Millisecond))
	if _, err := bed.Client.CoreV1().ConfigMaps(team).Get(ctx, "other-settings", metav1.GetOptions{}); err != nil {
		t.Errorf("ConfigMap %s/other-settings once granted: %v", team, err)
	}

	// Deleted, an App is pruned as its ServiceAccount and refit lets it go.
	if err := apps.Delete(ctx, "lp-shop", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "App lp-shop gone, its Deployment pruned", func(ctx context.Context) bool {
		_, appErr := apps.Get(ctx, "lp-shop", metav1.GetOptions{})
		_, depErr := bed.Client.AppsV1().Deployments(team).Get(ctx, "shop", metav1.GetOptions{})
		return apierrors.IsNotFound(appErr) && apierrors.IsNotFound(depErr)
	})
}

// installLockedDown installs deploy/locked-down-apps's CRD, ServiceAccount
// and RBAC (not its Deployment: the test runs refit itself), removes them
// when the test ends, and returns the Deployment's arguments for refit run
// (but run and --cache-dir, which the test sets).
func installLockedDown(t *testing.T) []string {
	t.Helper()
	manifests, err := kubectl(nil, "kustomize", filepath.Join(deployDir, "locked-down-apps"))
	if err != nil {
		t.Fatal(err)
	}
	keep := []string{"CustomResourceDefinition", "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
	var docs, args []string
	for _, doc := range strings.Split(manifests, "\n---\n") {
		var obj struct {
			Kind string
			Spec struct{ Template struct{ Spec corev1.PodSpec } }
		}
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			t.Fatal(err)
		}
		if slices.Contains(keep, obj.Kind) {
			docs = append(docs, doc)
		}
		if obj.Kind == "Deployment" {
			args = slices.DeleteFunc(slices.Clone(obj.Spec.Template.Spec.Containers[0].Args), func(a string) bool {
				return a == "run" || strings.HasPrefix(a, "--cache-dir=")
			})
		}
	}
	// App mode: neither --config nor --repo; every App acts as a
	// ServiceAccount.
	if fmt.Sprint(args) != "[--default-service-account=refit-deployer]" {
		t.Fatalf("deploy/locked-down-apps: refit run %v; want only --default-service-account=refit-deployer", args)
	}
	t.Cleanup(func() {
		// Waited for: a later test installs the CRD again, and one still
		// terminating would vanish under it.
		if out, err := kubectl(nil, "delete", "--ignore-not-found", "--timeout=30s", "crd", "apps.refit.dev"); err != nil {
			t.Errorf("uninstall the CRD: %v\n%s", err, out)
		}
	})
	t.Cleanup(func() { uninstallRefit(t) })
	if out, err := kubectl([]byte(strings.Join(docs, "\n---\n")), "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatalf("install deploy/locked-down: %v\n%s", err, out)
	}
	if out, err := kubectl(nil, "wait", "--for=condition=Established", "--timeout=30s", "crd/apps.refit.dev"); err != nil {
		t.Fatalf("CRD not established: %v\n%s", err, out)
	}
	// The broad ClusterRoleBinding of deploy/ (from another test) would
	// hide what locked-down lacks.
	if _, err := bed.Client.RbacV1().ClusterRoleBindings().Get(context.Background(), "refit", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("ClusterRoleBinding refit: %v; want none (locked down)", err)
	}
	return args
}

// teamRole creates the Role name in ns.
func teamRole(t *testing.T, ns, name string, rules ...rbacv1.PolicyRule) {
	t.Helper()
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}
	if _, err := bed.Client.RbacV1().Roles(ns).Create(context.Background(), role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// bindRole binds the Role role of ns to the ServiceAccount sa of ns.
func bindRole(t *testing.T, ns, role, sa string) {
	t.Helper()
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role + "-" + sa},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: ns}},
	}
	if _, err := bed.Client.RbacV1().RoleBindings(ns).Create(context.Background(), rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// waitAppReady waits until kubectl sees the App Ready and its status has
// applied sha.
func waitAppReady(t *testing.T, apps dynamic.ResourceInterface, ns, name, sha string) {
	t.Helper()
	if out, err := exec.Command(bed.Tools.Kubectl, "--kubeconfig", bed.Kubeconfig, "-n", ns, "wait", "--for=condition=Ready",
		"--timeout=45s", "apps.refit.dev/"+name).CombinedOutput(); err != nil {
		t.Fatalf("App %s: kubectl wait: %v\n%s\nReady: %+v", name, err, out, readyCondition(getApp(t, apps, name)))
	}
	waitFor(t, 30*time.Second, "App "+name+" applied "+sha, func(context.Context) bool {
		return strings.HasSuffix(getApp(t, apps, name).Status.LastAppliedRevision, "@sha1:"+sha)
	})
}

func readyCondition(app *v1alpha1.App) metav1.Condition {
	for _, c := range app.Status.Conditions {
		if c.Type == v1alpha1.ConditionReady {
			return c
		}
	}
	return metav1.Condition{}
}

// tokenKubeconfig writes a kubeconfig for the bed that authenticates with
// a token of the ServiceAccount ns/name: the identity itself, not the admin
// impersonating it.
func tokenKubeconfig(t *testing.T, ns, name string) string {
	t.Helper()
	tok, err := bed.Client.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), name, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token of %s/%s: %v", ns, name, err)
	}
	admin, err := clientcmd.LoadFromFile(bed.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["bed"] = admin.Clusters[admin.Contexts[admin.CurrentContext].Cluster]
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: tok.Status.Token}
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: "bed", AuthInfo: name, Namespace: ns}
	cfg.CurrentContext = name
	path := filepath.Join(t.TempDir(), name+".kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}
