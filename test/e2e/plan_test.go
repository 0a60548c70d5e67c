//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/refit-gitops/refit/diff"
)

// workloads omit every defaulted field (imagePullPolicy, strategy,
// terminationMessagePath…): they must plan as Unchanged once applied.
const workloads = `
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: main, image: "nginx:1.27"}
      - {name: log, image: "busybox:1.36"}
      initContainers:
      - {name: migrate, image: "migrate:1"}
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
      containers:
      - {name: main, image: "postgres:16"}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers:
      - {name: agent, image: "agent:1.0"}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {mode: fast}
`

func parseObjects(t *testing.T, docs string) []diff.Desired {
	t.Helper()
	var out []diff.Desired
	for _, doc := range strings.Split(docs, "\n---\n") {
		obj := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(doc), &obj.Object); err != nil {
			t.Fatalf("parse %q: %v", doc, err)
		}
		if len(obj.Object) > 0 {
			out = append(out, diff.Desired{Object: obj, Source: "manifests.yaml"})
		}
	}
	return out
}

// applyForTest writes objects with server-side apply as refit would.
func applyForTest(t *testing.T, ns string, objs []diff.Desired) {
	t.Helper()
	client := dynamic.NewForConfigOrDie(bed.Config)
	for _, d := range objs {
		obj := d.Object.DeepCopy()
		gvr, namespaced := resourceOf(obj.GetKind())
		data, _ := obj.MarshalJSON()
		ri := client.Resource(gvr)
		var err error
		if namespaced {
			_, err = ri.Namespace(ns).Patch(context.Background(), obj.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{FieldManager: diff.FieldManager})
		} else {
			_, err = ri.Patch(context.Background(), obj.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{FieldManager: diff.FieldManager})
		}
		if err != nil {
			t.Fatalf("apply %s/%s: %v", obj.GetKind(), obj.GetName(), err)
		}
	}
}

func newPlanner(t *testing.T) *diff.Planner {
	t.Helper()
	p, err := diff.NewPlanner(bed.Config)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func plan(t *testing.T, ns string, objs []diff.Desired) *diff.Plan {
	t.Helper()
	opts := diff.DefaultOptions()
	opts.Namespace = ns
	p, err := newPlanner(t).Plan(context.Background(), objs, opts)
	if err != nil {
		t.Fatalf("plan: %v", err)
	}
	return p
}

// edit returns objs with fn applied to a copy of the object of that kind.
func edit(objs []diff.Desired, kind string, fn func(obj map[string]any)) []diff.Desired {
	out := make([]diff.Desired, len(objs))
	for i, d := range objs {
		out[i] = diff.Desired{Object: d.Object.DeepCopy(), Source: d.Source}
		if d.Object.GetKind() == kind {
			fn(out[i].Object.Object)
		}
	}
	return out
}

func containerAt(obj map[string]any, list string, i int) map[string]any {
	spec := obj["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
	return spec[list].([]any)[i].(map[string]any)
}

type changeSummary struct {
	Kind   string
	Action diff.Action
	Class  diff.Class
	Path   diff.Path
	Images []diff.ImageChange
	Fields []string
}

func summarize(p *diff.Plan) []changeSummary {
	var out []changeSummary
	for _, c := range p.Changes {
		out = append(out, changeSummary{Kind: c.Ref.Kind, Action: c.Action, Class: c.Class, Path: c.Path, Images: c.Images, Fields: c.Fields})
	}
	return out
}

func TestPlanClassifiesAgainstTheLiveCluster(t *testing.T) {
	ns := namespace(t)
	base := parseObjects(t, workloads)
	applyForTest(t, ns, base)

	unchanged := []changeSummary{
		{Kind: "Deployment", Action: diff.Unchanged}, {Kind: "StatefulSet", Action: diff.Unchanged},
		{Kind: "DaemonSet", Action: diff.Unchanged}, {Kind: "ConfigMap", Action: diff.Unchanged},
	}
	if d := cmp.Diff(unchanged, summarize(plan(t, ns, base))); d != "" {
		t.Fatalf("right after apply (-want +got):\n%s", d)
	}

	t.Run("image bumps are ImageOnly", func(t *testing.T) {
		objs := edit(base, "Deployment", func(o map[string]any) { containerAt(o, "containers", 1)["image"] = "busybox:1.37" })
		objs = edit(objs, "StatefulSet", func(o map[string]any) { containerAt(o, "containers", 0)["image"] = "postgres:17" })
		objs = edit(objs, "DaemonSet", func(o map[string]any) {
			containerAt(o, "containers", 0)["image"] = "registry.local:5000/agent@sha256:" + strings.Repeat("a", 64)
		})
		want := []changeSummary{
			{Kind: "Deployment", Action: diff.Update, Class: diff.ImageOnly, Path: diff.PathInPlace,
				Images: []diff.ImageChange{{Container: "log", From: "busybox:1.36", To: "busybox:1.37"}}},
			{Kind: "StatefulSet", Action: diff.Update, Class: diff.ImageOnly, Path: diff.PathInPlace,
				Images: []diff.ImageChange{{Container: "main", From: "postgres:16", To: "postgres:17"}}},
			{Kind: "DaemonSet", Action: diff.Update, Class: diff.ImageOnly, Path: diff.PathInPlace,
				Images: []diff.ImageChange{{Container: "agent", From: "agent:1.0", To: "registry.local:5000/agent@sha256:" + strings.Repeat("a", 64)}}},
			{Kind: "ConfigMap", Action: diff.Unchanged},
		}
		if d := cmp.Diff(want, summarize(plan(t, ns, objs))); d != "" {
			t.Errorf("(-want +got):\n%s", d)
		}
	})

	for _, tc := range []struct {
		name  string
		edit  func(o map[string]any)
		field string
	}{
		{"env added", func(o map[string]any) {
			containerAt(o, "containers", 0)["env"] = []any{map[string]any{"name": "MODE", "value": "fast"}}
		}, "spec.template.spec.containers[name=main].env"},
		// A first request on a BestEffort Pod changes its QoS class.
		{"resource request", func(o map[string]any) {
			containerAt(o, "containers", 0)["resources"] = map[string]any{"requests": map[string]any{"cpu": "100m"}}
		}, "spec.template.spec.containers[name=main].resources"},
		{"init container image", func(o map[string]any) {
			containerAt(o, "initContainers", 0)["image"] = "migrate:2"
		}, "spec.template.spec.initContainers[name=migrate].image"},
		{"image and env", func(o map[string]any) {
			containerAt(o, "containers", 0)["image"] = "nginx:1.28"
			containerAt(o, "containers", 0)["env"] = []any{map[string]any{"name": "MODE", "value": "fast"}}
		}, "spec.template.spec.containers[name=main].env"},
	} {
		t.Run(tc.name+" is Structural", func(t *testing.T) {
			got := plan(t, ns, edit(base, "Deployment", tc.edit)).Changes[0]
			if got.Action != diff.Update || got.Class != diff.Structural || got.Path != diff.PathRecreate {
				t.Fatalf("got %s %s %s, want Update Structural Recreate", got.Action, got.Class, got.Path)
			}
			if !containsPrefix(got.Fields, tc.field) {
				t.Errorf("fields %v, want one starting with %s", got.Fields, tc.field)
			}
		})
	}

	t.Run("template label is in place (metadata)", func(t *testing.T) {
		got := plan(t, ns, edit(base, "Deployment", func(o map[string]any) {
			o["spec"].(map[string]any)["template"].(map[string]any)["metadata"].(map[string]any)["labels"].(map[string]any)["tier"] = "front"
		})).Changes[0]
		if got.Class != diff.PodMutable || got.Path != diff.PathInPlace || len(got.InPlace) != 1 || got.InPlace[0] != diff.AspectMetadata ||
			len(got.Metadata) != 1 || got.Metadata[0].Key != "tier" || got.Metadata[0].To != "front" {
			t.Errorf("got %s %s in place %v metadata %+v, want PodMutable InPlace [metadata] with tier=front", got.Class, got.Path, got.InPlace, got.Metadata)
		}
	})

	t.Run("another manager's change is not refit's diff", func(t *testing.T) {
		// Scaled by hand: the manifest does not set replicas, so refit does
		// not own them.
		_, err := bed.Client.AppsV1().Deployments(ns).Patch(context.Background(), "web", types.MergePatchType,
			[]byte(`{"spec":{"replicas":4}}`), metav1.PatchOptions{FieldManager: "kubectl-scale"}, "scale")
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(unchanged, summarize(plan(t, ns, base))); d != "" {
			t.Errorf("(-want +got):\n%s", d)
		}
	})

	t.Run("policy annotations", func(t *testing.T) {
		objs := edit(base, "Deployment", func(o map[string]any) {
			o["metadata"].(map[string]any)["annotations"] = map[string]any{diff.PolicyAnnotation: "Recreate"}
			containerAt(o, "containers", 0)["image"] = "nginx:1.28"
		})
		// The annotation itself is a metadata change: Structural, but no
		// Pod is touched by it alone.
		got := plan(t, ns, objs).Changes[0]
		if got.Path != diff.PathRecreate || got.Policy != diff.Recreate {
			t.Errorf("Recreate workload: got path %s policy %s, want Recreate", got.Path, got.Policy)
		}
		objs = edit(base, "StatefulSet", func(o map[string]any) {
			o["metadata"].(map[string]any)["annotations"] = map[string]any{diff.PolicyAnnotation: "InPlaceOnly"}
			containerAt(o, "containers", 0)["env"] = []any{map[string]any{"name": "A", "value": "1"}}
		})
		got = plan(t, ns, objs).Changes[1]
		if got.Path != diff.PathRefused {
			t.Errorf("InPlaceOnly workload with a structural change: got path %s, want Refused", got.Path)
		}
	})
}

func containsPrefix(list []string, prefix string) bool {
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}

func TestPlanFreshNamespaceIsAllCreate(t *testing.T) {
	ns := "fresh-" + strings.ToLower(time.Now().Format("150405.000"))
	ns = strings.ReplaceAll(ns, ".", "")
	objs := append(parseObjects(t, "apiVersion: v1\nkind: Namespace\nmetadata: {name: "+ns+"}"), parseObjects(t, workloads)...)
	p := plan(t, ns, objs)
	for _, c := range p.Changes {
		if c.Action != diff.Create {
			t.Errorf("%s: %s, want Create", c.Ref, c.Action)
		}
	}
	if len(p.Changes) != 5 {
		t.Errorf("%d changes, want 5", len(p.Changes))
	}
}

func TestPlanBadInputNamesTheObject(t *testing.T) {
	ns := namespace(t)
	for _, tc := range []struct {
		name     string
		manifest string
		want     []string
	}{
		{"unknown kind", "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}",
			[]string{"Widget.example.com", "/w", "manifests.yaml", "not known to the cluster"}},
		{"invalid object", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: broken}\nspec:\n  selector: {matchLabels: {app: a}}\n  template:\n    metadata: {labels: {app: b}}\n    spec: {containers: [{name: c, image: x}]}",
			[]string{"Deployment.apps/" + ns + "/broken", "manifests.yaml", "selector"}},
		{"missing namespace", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: nowhere-at-all}",
			[]string{"ConfigMap/nowhere-at-all/c", "does not exist"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := diff.DefaultOptions()
			opts.Namespace = ns
			_, err := newPlanner(t).Plan(context.Background(), parseObjects(t, tc.manifest), opts)
			if err == nil {
				t.Fatal("plan succeeded, want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}

	t.Run("no cluster", func(t *testing.T) {
		p, err := diff.NewPlanner(&rest.Config{Host: "https://127.0.0.1:1", Timeout: 2 * time.Second})
		if err == nil {
			_, err = p.Plan(context.Background(), parseObjects(t, workloads), diff.DefaultOptions())
		}
		if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
			t.Errorf("plan against no cluster: %v, want an error naming the address", err)
		}
	})
}

// A custom resource whose CRD arrives in the same plan takes its scope from
// the CRD: a namespaced one without a namespace goes to the default one.
func TestPlanCustomResourceOfANewCRDGetsTheNamespace(t *testing.T) {
	ns := namespace(t)
	group := strings.ReplaceAll(ns, "-", "") + ".example.com"
	objs := parseObjects(t, `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.`+group+`}
spec:
  group: `+group+`
  scope: Namespaced
  names: {kind: Widget, plural: widgets, singular: widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
---
apiVersion: `+group+`/v1
kind: Widget
metadata: {name: w}`)
	p := plan(t, ns, objs)
	if got := p.Changes[1].Ref; got.Namespace != ns || p.Changes[1].Action != diff.Create {
		t.Errorf("widget planned as %s %s, want Create in namespace %s", p.Changes[1].Action, got, ns)
	}
}

// refit plan --diff shows a Deployment's env change against the live
// cluster: the old value and the new, without what the server keeps
// (managedFields, status, uid…); -o json carries the same diff.
func TestPlanDiffShowsValues(t *testing.T) {
	ns := namespace(t)
	dir := t.TempDir()
	app := `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: main
        image: "nginx:1.27"
        env:
        - {name: LOG_LEVEL, value: info}
        - {name: WORKERS, value: "4"}
`
	writeManifests(t, dir, app)
	if out, code := runRefitCLI(t, ns, "apply", "--dir", dir, "--app", ns, "--wait"); code != 0 {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	writeManifests(t, dir, strings.Replace(app, "value: info", "value: debug", 1))
	out, code := runRefitCLI(t, ns, "plan", "--dir", dir, "--app", ns, "--diff")
	if code != 2 {
		t.Fatalf("plan --diff: exit %d, want 2\n%s", code, out)
	}
	t.Logf("refit plan --diff:\n%s", out)
	for _, want := range []string{"--- live/Deployment.apps/" + ns + "/web\n", "+++ git/Deployment.apps/" + ns + "/web\n",
		"\n-          value: info\n", "\n+          value: debug\n", "\n           value: \"4\"\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("plan --diff lacks %q:\n%s", want, out)
		}
	}
	for _, noise := range []string{"managedFields", "status:", "uid:", "resourceVersion:", "observedGeneration"} {
		if strings.Contains(out, noise) {
			t.Errorf("plan --diff shows %q:\n%s", noise, out)
		}
	}
	out, code = runRefitCLI(t, ns, "plan", "--dir", dir, "--app", ns, "--diff", "-o", "json")
	var plan struct{ Changes []struct{ Name, Diff string } }
	if err := json.Unmarshal([]byte(out), &plan); err != nil || code != 2 || len(plan.Changes) != 1 ||
		!strings.Contains(plan.Changes[0].Diff, "\n-          value: info\n+          value: debug\n") {
		t.Fatalf("plan --diff -o json: exit %d, %v\n%s", code, err, out)
	}
}
