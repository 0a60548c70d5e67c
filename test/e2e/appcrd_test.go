//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/status"
	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"

	"github.com/refit-gitops/refit/api/v1alpha1"
	"github.com/refit-gitops/refit/config"
)

var appsResource = v1alpha1.GroupVersion.WithResource("apps")

// TestAppCRD installs the App CRD as a user would (kubectl apply
// --server-side -k deploy/crds) and checks, on the real API server, what
// it promises: defaults, each validation rule with its message (and that
// the config file refuses the same App), the status subresource, the
// printer columns, kstatus's reading of the status ComputeStatus writes,
// and kubectl wait --for=condition=Ready.
func TestAppCRD(t *testing.T) {
	installAppCRD(t)
	ns := namespace(t)
	dyn, err := dynamic.NewForConfig(bed.Config)
	if err != nil {
		t.Fatal(err)
	}
	apps := dyn.Resource(appsResource).Namespace(ns)
	t.Run("defaults", func(t *testing.T) { testAppDefaults(t, ns, apps) })
	t.Run("validation", func(t *testing.T) { testAppValidation(t, ns) })
	t.Run("status", func(t *testing.T) { testAppStatus(t, ns, apps) })
}

// appDoc is an App document with the given spec lines (indented by two).
func appDoc(ns, name, spec string) string {
	return fmt.Sprintf("apiVersion: refit.dev/v1alpha1\nkind: App\nmetadata:\n  name: %s\n  namespace: %s\nspec:\n%s", name, ns, spec)
}

func getApp(t *testing.T, apps dynamic.ResourceInterface, name string) *v1alpha1.App {
	t.Helper()
	u, err := apps.Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get app %s: %v", name, err)
	}
	var app v1alpha1.App
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &app); err != nil {
		t.Fatal(err)
	}
	return &app
}

// testAppDefaults: the API server fills the CRD's defaults, and the App it
// stores becomes the same config.App as the document read from a file.
func testAppDefaults(t *testing.T, ns string, apps dynamic.ResourceInterface) {
	doc := appDoc(ns, "minimal", "  source:\n    url: https://git.example.com/shop.git\n")
	if out, err := kubectl([]byte(doc), "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatalf("create: %v\n%s", err, out)
	}
	got := getApp(t, apps, "minimal")
	s := got.Spec
	if s.Path != "." || s.Interval == nil || s.Interval.Duration != time.Minute || s.Timeout == nil || s.Timeout.Duration != 5*time.Minute ||
		s.Prune == nil || !*s.Prune || s.Policy != v1alpha1.InPlaceIfPossible || s.DriftInterval != nil || s.TargetNamespace != "" {
		t.Errorf("spec as the API server defaulted it: %+v", s)
	}
	fromCluster, err := config.FromObject(got, config.DefaultObjectOptions())
	if err != nil {
		t.Fatalf("FromObject: %v", err)
	}
	fromFile, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if d := cmp.Diff(fromFile.Apps[0], fromCluster); d != "" {
		t.Errorf("one schema: (-from the file +from the cluster):\n%s", d)
	}
}

// appCases are Apps the API server must refuse, with what it says; the
// config file must refuse each of them too.
var appCases = []struct{ name, spec, want string }{
	{"no url", "  source: {ref: main}\n", `spec.source.url: Required value`},
	{"unknown field", "  source: {url: x}\n  paht: deploy\n", `unknown field "spec.paht"`},
	{"interval under 1s", "  source: {url: x}\n  interval: 500ms\n", "interval: at least 1s"},
	{"interval not a duration", "  source: {url: x}\n  interval: soon\n", `spec.interval: Invalid value: "soon"`},
	{"negative interval", "  source: {url: x}\n  interval: -1m\n", `spec.interval: Invalid value: "-1m"`},
	{"zero drift interval", "  source: {url: x}\n  driftInterval: 0s\n", "driftInterval: want a positive duration"},
	{"zero timeout", "  source: {url: x}\n  timeout: 0s\n", "timeout: want a positive duration"},
	{"absolute path", "  source: {url: x}\n  path: /etc\n", "path: want a path inside the repository"},
	{"path climbing out", "  source: {url: x}\n  path: apps/../../etc\n", "path: want a path inside the repository"},
	{"target namespace", "  source: {url: x}\n  targetNamespace: Web_1\n", `spec.targetNamespace: Invalid value: "Web_1"`},
	{"service account", "  source: {url: x}\n  serviceAccountName: Deployer!\n", `spec.serviceAccountName: Invalid value: "Deployer!"`},
	{"policy", "  source: {url: x}\n  policy: Sometimes\n", `spec.policy: Unsupported value: "Sometimes"`},
	{"ref of no known kind", "  source: {url: x, ref: \"head:main\"}\n", `spec.source.ref: Invalid value: "head:main"`},
	{"short commit", "  source: {url: x, ref: \"commit:abc\"}\n", `spec.source.ref: Invalid value: "commit:abc"`},
	{"secret name", "  source: {url: x, secretRef: {name: Shop_Git}}\n", `spec.source.secretRef.name: Invalid value: "Shop_Git"`},
	{"secret key", "  source: {url: x, secretRef: {name: git, key: a/b}}\n", `spec.source.secretRef.key: Invalid value: "a/b"`},
	{"verify from neither", "  source: {url: x, verify: {}}\n", "verify: set exactly one of secretRef and keysFile"},
	{"verify from both", "  source: {url: x, verify: {keysFile: /k, secretRef: {name: keys}}}\n", "verify: set exactly one of secretRef and keysFile"},
	{"file size not a size", "  source: {url: x, limits: {maxFileSize: big}}\n", "maxFileSize: want a positive size such as 64Mi"},
	{"tree size zero", "  source: {url: x, limits: {maxTreeSize: \"0\"}}\n", "maxTreeSize: want a positive size such as 512Mi"},
	{"negative entries", "  source: {url: x, limits: {maxEntries: -1}}\n", "spec.source.limits.maxEntries: Invalid value: -1"},
	{"status provider", "  source: {url: x}\n  status: {provider: svn, tokenFile: /t}\n", `spec.status.provider: Unsupported value: "svn"`},
	{"status token from both", "  source: {url: x}\n  status: {provider: github, tokenFile: /t, tokenSecretRef: {name: t}}\n", "status: set exactly one of tokenSecretRef and tokenFile"},
	{"status token from neither", "  source: {url: x}\n  status: {provider: github}\n", "status: set exactly one of tokenSecretRef and tokenFile"},
	{"status URL not http", "  source: {url: x}\n  status: {provider: gitea, tokenFile: /t, apiURL: \"ftp://git.example.com\"}\n", "status.apiURL: want an http(s) URL"},
	{"status URL with credentials", "  source: {url: x}\n  status: {provider: gitea, tokenFile: /t, apiURL: \"https://u:pw@git.example.com\"}\n", "status.apiURL: credentials in the URL"},
	{"status over plain http", "  source: {url: x}\n  status: {provider: gitea, tokenFile: /t, apiURL: \"http://git.example.com\"}\n", "status.apiURL: plain http sends the token in clear text"},
	{"webhook provider", "  source: {url: x}\n  webhook: {provider: svn, secretFile: /s}\n", `spec.webhook.provider: Unsupported value: "svn"`},
	{"webhook secret from neither", "  source: {url: x}\n  webhook: {provider: github}\n", "webhook: set exactly one of secretSecretRef and secretFile"},
}

func testAppValidation(t *testing.T, ns string) {
	for _, tc := range appCases {
		t.Run(tc.name, func(t *testing.T) {
			doc := appDoc(ns, "invalid", tc.spec)
			out, err := kubectl([]byte(doc), "create", "-f", "-")
			if err == nil {
				_, _ = kubectl(nil, "delete", "-n", ns, "apps.refit.dev/invalid")
				t.Fatalf("the API server took it:\n%s\n%s", doc, out)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("the API server refused it with %v, want %q", err, tc.want)
			}
			_, msg, _ := strings.Cut(err.Error(), "exit status 1: ")
			t.Logf("refused: %s", strings.TrimSpace(msg))
			if _, err := config.Parse([]byte(doc)); err == nil {
				t.Errorf("the config file takes what the API server refuses:\n%s", doc)
			}
		})
	}
	long := strings.Repeat("a", 53)
	out, err := kubectl([]byte(appDoc(ns, long, "  source: {url: x}\n")), "create", "-f", "-")
	if err == nil || !strings.Contains(err.Error(), "metadata.name: lower-case letters, digits and dashes, at most 52") {
		t.Errorf("a 53-character name: %v %s", err, out)
	}
	// What the rules must let through.
	ok := appDoc(ns, "every-field", `  source:
    url: https://git.example.com/shop.git
    ref: "semver:>=1.0.0 <2.0.0"
    secretRef: {name: shop-git, key: token}
    verify: {secretRef: {name: keys}}
    limits: {maxFileSize: 8Mi, maxTreeSize: 1Gi, maxEntries: 1000}
  path: apps/../overlays/prod/
  interval: 1m30s
  driftInterval: 1h
  timeout: 90s
  targetNamespace: web
  prune: false
  allowEmpty: true
  policy: InPlaceOnly
  serviceAccountName: deployer
  suspend: true
  status: {provider: gitea, apiURL: "http://127.0.0.2:3000", tokenSecretRef: {name: gitea-token}}
  webhook: {provider: gitea, secretSecretRef: {name: hook}}
`)
	ok = strings.Replace(ok, "path: apps/../overlays/prod/", "path: overlays/prod/", 1)
	if out, err := kubectl([]byte(ok), "create", "-f", "-"); err != nil {
		t.Errorf("a valid App refused: %v\n%s", err, out)
	}
	if _, err := config.Parse([]byte(ok)); err != nil {
		t.Errorf("a valid App refused by the config file: %v", err)
	}
}

// testAppStatus writes statuses made by ComputeStatus through the status
// subresource and reads them back as kubectl and kstatus do.
func testAppStatus(t *testing.T, ns string, apps dynamic.ResourceInterface) {
	ctx := context.Background()
	doc := appDoc(ns, "shop", "  source:\n    url: https://git.example.com/shop.git\n")
	if out, err := kubectl([]byte(doc), "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatalf("create: %v\n%s", err, out)
	}
	wait := exec.Command(bed.Tools.Kubectl, "--kubeconfig", bed.Kubeconfig, "-n", ns, "wait", "--for=condition=Ready", "--timeout=30s", "apps.refit.dev/shop")
	var waitOut strings.Builder
	wait.Stdout, wait.Stderr = &waitOut, &waitOut
	if err := wait.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- wait.Wait() }()
	t.Cleanup(func() { _ = wait.Process.Kill() })

	const rev = "main@sha1:0123456789abcdef0123456789abcdef01234567"
	writeStatus := func(s v1alpha1.Sync) *v1alpha1.App {
		t.Helper()
		app := getApp(t, apps, "shop")
		s.Generation, s.Now = app.Generation, metav1.Now()
		app.Status = v1alpha1.ComputeStatus(&app.Status, s)
		obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(app)
		if err != nil {
			t.Fatal(err)
		}
		u, err := apps.UpdateStatus(ctx, &unstructured.Unstructured{Object: obj}, metav1.UpdateOptions{})
		if err != nil {
			t.Fatalf("update status (%s): %v", s.Outcome, err)
		}
		var back v1alpha1.App
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &back); err != nil {
			t.Fatal(err)
		}
		return &back
	}
	kstatusOf := func() status.Status {
		t.Helper()
		u, err := apps.Get(ctx, "shop", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		res, err := status.Compute(u)
		if err != nil {
			t.Fatal(err)
		}
		return res.Status
	}

	// Under way: Ready is Unknown, kubectl wait keeps waiting.
	writeStatus(v1alpha1.Sync{Revision: rev, Outcome: v1alpha1.Progressing,
		Rollouts: []v1alpha1.RolloutStatus{{Workload: v1alpha1.ObjectRef{APIVersion: "apps/v1", Kind: "Deployment", Namespace: ns, Name: "web"}, PodsDone: 1, PodsTotal: 3}}})
	if got := kstatusOf(); got != status.InProgressStatus {
		t.Errorf("kstatus while progressing: %s, want InProgress", got)
	}
	consistentlyTrue(t, time.Second, "kubectl wait still waiting while Ready is Unknown", func(context.Context) (bool, string) {
		select {
		case err := <-waited:
			waited <- err
			return false, fmt.Sprintf("it returned: %v: %s", err, waitOut.String())
		default:
			return true, ""
		}
	})

	// Done: kubectl wait returns, kstatus reads Current, the columns show it.
	written := time.Now()
	applied := writeStatus(v1alpha1.Sync{Revision: rev, Outcome: v1alpha1.Succeeded,
		Inventory: &v1alpha1.Inventory{Entries: []v1alpha1.ObjectRef{{APIVersion: "apps/v1", Kind: "Deployment", Namespace: ns, Name: "web"}}}})
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("kubectl wait --for=condition=Ready: %v: %s", err, waitOut.String())
		}
		t.Logf("kubectl wait returned %s after the Ready status was written", time.Since(written).Round(time.Millisecond))
	case <-time.After(20 * time.Second):
		t.Fatalf("kubectl wait --for=condition=Ready did not return within 20s of Ready=True: %s", waitOut.String())
	}
	if applied.Status.LastAppliedRevision != rev || applied.Status.Inventory == nil || len(applied.Status.Rollouts) != 0 {
		t.Errorf("status as stored: %+v", applied.Status)
	}
	if got := kstatusOf(); got != status.CurrentStatus {
		t.Errorf("kstatus once applied: %s, want Current", got)
	}
	out, err := kubectl(nil, "get", "-n", ns, "apps.refit.dev", "shop")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "NAME READY REVISION STATUS AGE" ||
		!strings.HasPrefix(strings.Join(strings.Fields(lines[1]), " "), "shop True "+rev+" Applied revision: "+rev) {
		t.Errorf("kubectl get apps.refit.dev:\n%s", out)
	}

	// The status is a subresource: an update of the App does not write it.
	app := getApp(t, apps, "shop")
	app.Status.LastAppliedRevision = "forged"
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(app)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := apps.Update(ctx, &unstructured.Unstructured{Object: obj}, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := getApp(t, apps, "shop").Status.LastAppliedRevision; got != rev {
		t.Errorf("an update of the App wrote its status: lastAppliedRevision %q", got)
	}

	// A new spec is a new generation: InProgress until refit observes it.
	if out, err := kubectl(nil, "patch", "-n", ns, "apps.refit.dev", "shop", "--type=merge", "-p", `{"spec":{"interval":"2m"}}`); err != nil {
		t.Fatalf("patch: %v\n%s", err, out)
	}
	if got := kstatusOf(); got != status.InProgressStatus {
		t.Errorf("kstatus after a spec change not yet observed: %s, want InProgress", got)
	}

	// A bad commit: Ready False, Stalled, kstatus Failed, the columns say why.
	writeStatus(v1alpha1.Sync{Revision: rev, Outcome: v1alpha1.BadCommit, Reason: "BuildFailed", Message: "kustomization.yaml: no such file"})
	if got := kstatusOf(); got != status.FailedStatus {
		t.Errorf("kstatus after a bad commit: %s, want Failed", got)
	}
	out, err = kubectl(nil, "get", "-n", ns, "apps.refit.dev", "shop", "--no-headers")
	if err != nil {
		t.Fatal(err)
	}
	if f := strings.Join(strings.Fields(out), " "); !strings.HasPrefix(f, "shop False "+rev+" kustomization.yaml: no such file") {
		t.Errorf("kubectl get after a bad commit: %s", out)
	}
}
