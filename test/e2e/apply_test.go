//go:build e2e

package e2e

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/refit-gitops/refit/apply"
	"github.com/refit-gitops/refit/diff"
)

// widgetCRD defines the namespaced kind Widget in group GROUP, with an
// integer spec.size.
const widgetCRD = `
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.GROUP}
spec:
  group: GROUP
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, listKind: WidgetList}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
`

const webDeployment = `
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: main, image: "nginx:1.27"}
`

func fill(s string, kv ...string) string {
	return strings.NewReplacer(kv...).Replace(s)
}

func crdRef(group string) diff.Ref {
	return diff.Ref{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition", Name: "widgets." + group}
}

func nsRef(name string) diff.Ref { return diff.Ref{Version: "v1", Kind: "Namespace", Name: name} }

func TestApplyFirstApplyThenUnchanged(t *testing.T) {
	ns := namespace(t)
	extra, group := ns+"-extra", ns+".refit.test"
	cleanupCluster(t, nsRef(extra), crdRef(group))
	var objs []diff.Desired
	objs = append(objs, parseFile(t, "crds.yaml", fill(widgetCRD, "GROUP", group))...)
	objs = append(objs, parseFile(t, "namespaces.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: "+extra+"}")...)
	objs = append(objs, parseFile(t, "widgets.yaml", fill(`
apiVersion: GROUP/v1
kind: Widget
metadata: {name: w1, namespace: EXTRA}
spec: {size: 1}
---
apiVersion: GROUP/v1
kind: Widget
metadata: {name: w2, namespace: NS}
spec: {size: 2}`, "GROUP", group, "EXTRA", extra, "NS", ns))...)
	objs = append(objs, parseFile(t, "app.yaml", webDeployment+`
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: `+extra+`}
data: {mode: fast}`)...)

	a := newApplier(t)
	var ev events
	opts := applyOptions(ns)
	opts.Wait, opts.Progress = true, ev.add
	res := mustApply(t, a, ns, ns, objs, opts)

	want := map[string]apply.Action{
		crdRef(group).String():                  apply.Created,
		nsRef(extra).String():                   apply.Created,
		"Widget." + group + "/" + extra + "/w1": apply.Created,
		"Widget." + group + "/" + ns + "/w2":    apply.Created,
		"ConfigMap/" + extra + "/settings":      apply.Created,
		"Deployment.apps/" + ns + "/web":        apply.Created,
		"Service/" + ns + "/web":                apply.Created,
	}
	got := map[string]apply.Action{}
	for _, o := range res.Objects {
		got[o.Ref.String()] = o.Action
		if o.Status != "Current" {
			t.Errorf("%s: status %s (%s) after the wait, want Current", o.Ref, o.Status, o.Message)
		}
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("first apply (-want +got):\n%s", d)
	}
	if res.Health != apply.Healthy {
		t.Errorf("health %q, want Healthy", res.Health)
	}
	// Definitions first: the CRD and the Namespace are written before
	// anything that needs them.
	created := ev.find("")
	first := slices.Index(created, "Widget."+group+"/"+extra+"/w1 created")
	for _, def := range []string{crdRef(group).String() + " created", nsRef(extra).String() + " created"} {
		if i := slices.Index(created, def); i < 0 || i > first {
			t.Errorf("event %q at %d, want before the first Widget (%d); events:\n%s", def, i, first, strings.Join(created, "\n"))
		}
	}
	if len(ev.find("Deployment.apps/"+ns+"/web ready")) != 1 {
		t.Errorf("no ready event for the Deployment; events:\n%s", strings.Join(created, "\n"))
	}
	pods, err := bed.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil || len(pods.Items) != 2 {
		t.Fatalf("pods of web after the wait: %d, %v; want 2", len(pods.Items), err)
	}
	for _, p := range pods.Items {
		if !podReady(&p) {
			t.Errorf("pod %s not ready after the wait: %s", p.Name, describePod(&p))
		}
	}

	inv, err := a.Inventory(context.Background(), ns)
	if err != nil {
		t.Fatal(err)
	}
	wantInv := make([]string, 0, len(want))
	for ref := range want {
		wantInv = append(wantInv, ref)
	}
	gotInv := refString(inv)
	slices.Sort(wantInv)
	slices.Sort(gotInv)
	if d := cmp.Diff(wantInv, gotInv); d != "" {
		t.Errorf("inventory (-want +got):\n%s", d)
	}

	t.Run("second plan is all Unchanged and writes nothing", func(t *testing.T) {
		p := planApp(t, a, ns, ns, objs)
		for _, c := range p.Changes {
			if c.Action != diff.Unchanged {
				t.Errorf("%s: %s %v, want Unchanged", c.Ref, c.Action, c.Fields)
			}
		}
		cm, err := bed.Client.CoreV1().ConfigMaps(apply.DefaultInventoryNamespace).Get(context.Background(), apply.InventoryName(ns), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		res, err := a.Apply(context.Background(), p, applyOptions(ns))
		if err != nil {
			t.Fatal(err)
		}
		if n := res.Count(apply.Unchanged); n != len(want) {
			t.Errorf("%d unchanged, want %d: %s", n, len(want), res.Summary())
		}
		after, err := bed.Client.CoreV1().ConfigMaps(apply.DefaultInventoryNamespace).Get(context.Background(), apply.InventoryName(ns), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if after.ResourceVersion != cm.ResourceVersion {
			t.Errorf("inventory rewritten although nothing changed")
		}
	})
}

func TestApplyInvalidObjectWritesNothing(t *testing.T) {
	for _, tc := range []struct {
		name    string
		objects func(ns, extra, group string) []diff.Desired
		// bad is the refused object and what the error must say about it.
		bad, reason string
		// absent must not exist (or be on their way out) afterwards.
		absent func(ns, extra, group string) []diff.Ref
	}{
		{
			name: "invalid-deployment-in-new-namespace",
			objects: func(ns, extra, group string) []diff.Desired {
				objs := parseFile(t, "namespaces.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: "+extra+"}")
				objs = append(objs, parseFile(t, "app.yaml", webDeployment+`
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: `+extra+`}
data: {mode: fast}`)...)
				return append(objs, parseFile(t, "broken.yaml", `
apiVersion: apps/v1
kind: Deployment
metadata: {name: broken, namespace: `+extra+`}
spec:
  selector: {matchLabels: {app: a}}
  template:
    metadata: {labels: {app: b}}
    spec: {containers: [{name: main, image: "nginx:1.27"}]}`)...)
			},
			bad:    "Deployment.apps/EXTRA/broken (broken.yaml)",
			reason: "selector",
			absent: func(ns, extra, group string) []diff.Ref {
				return []diff.Ref{nsRef(extra),
					{Group: "apps", Version: "v1", Kind: "Deployment", Namespace: ns, Name: "web"},
					{Version: "v1", Kind: "ConfigMap", Namespace: extra, Name: "settings"}}
			},
		},
		{
			name: "custom-resource-against-new-crd-schema",
			objects: func(ns, extra, group string) []diff.Desired {
				objs := parseFile(t, "crds.yaml", fill(widgetCRD, "GROUP", group))
				objs = append(objs, parseFile(t, "app.yaml", webDeployment)...)
				return append(objs, parseFile(t, "widgets.yaml", fill(`
apiVersion: GROUP/v1
kind: Widget
metadata: {name: big, namespace: NS}
spec: {size: large}`, "GROUP", group, "NS", ns))...)
			},
			bad:    "Widget.GROUP/NS/big (widgets.yaml)",
			reason: "spec.size",
			absent: func(ns, extra, group string) []diff.Ref {
				return []diff.Ref{crdRef(group), {Group: "apps", Version: "v1", Kind: "Deployment", Namespace: ns, Name: "web"}}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := namespace(t)
			extra, group := ns+"-extra", ns+".refit.test"
			cleanupCluster(t, nsRef(extra), crdRef(group))
			a := newApplier(t)
			p := planApp(t, a, ns, ns, tc.objects(ns, extra, group))
			res, err := a.Apply(context.Background(), p, applyOptions(ns))
			var verr *apply.ValidationError
			if !errors.As(err, &verr) {
				t.Fatalf("apply: %v, want a *apply.ValidationError", err)
			}
			bad := fill(tc.bad, "EXTRA", extra, "GROUP", group, "NS", ns)
			if !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("error %q does not name %q and %q", err, bad, tc.reason)
			}
			if len(verr.Objects) != 1 {
				t.Errorf("%d refused objects, want 1: %v", len(verr.Objects), err)
			}
			t.Logf("error: %v", err)
			for _, ref := range tc.absent(ns, extra, group) {
				if !goneOrGoing(t, ref) {
					t.Errorf("%s exists after a refused apply", ref)
				}
			}
			for _, o := range res.Objects {
				t.Errorf("result lists %s %s after a refused apply", o.Ref, o.Action)
			}
			if inv, err := a.Inventory(context.Background(), ns); err != nil || inv != nil {
				t.Errorf("inventory after a refused first apply: %v, %v; want none", inv, err)
			}
		})
	}
}

func TestApplyPrunes(t *testing.T) {
	ns := namespace(t)
	a := newApplier(t)
	cm := func(name string, annotations string) string {
		return "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: " + name + annotations + "}\ndata: {k: v}"
	}
	ref := func(kind, name string) diff.Ref {
		if kind == "Deployment" {
			return diff.Ref{Group: "apps", Version: "v1", Kind: kind, Namespace: ns, Name: name}
		}
		return diff.Ref{Version: "v1", Kind: kind, Namespace: ns, Name: name}
	}
	appA, appB := ns+"-a", ns+"-b"
	v1 := parseFile(t, "a.yaml", strings.Join([]string{
		cm("keep", ""), cm("gone", ""), cm("protected", ", annotations: {refit.dev/prune: disabled}"), cm("shared", ""), webDeployment,
	}, "\n---\n"))
	mustApply(t, a, ns, appA, v1, applyOptions(appA))
	// One object, one app: B may not claim A's "shared" (see
	// TestOwnershipOneObjectOneApp); it applies only its own.
	mustApply(t, a, ns, appB, parseFile(t, "b.yaml", cm("theirs", "")), applyOptions(appB))
	invB, err := a.Inventory(context.Background(), appB)
	if err != nil {
		t.Fatal(err)
	}

	// Version 2 of app A keeps only "keep". Its plan is also handed B's
	// object "theirs" as if A had once applied it: A must not delete it.
	v2 := parseFile(t, "a.yaml", cm("keep", ""))
	outcome := func(res *apply.Result) map[string]apply.Action {
		out := map[string]apply.Action{}
		for _, o := range res.Objects {
			out[o.Ref.Name+" "+o.Ref.Kind] = o.Action
		}
		return out
	}

	t.Run("pruning-off", func(t *testing.T) {
		opts := applyOptions(appA)
		opts.Prune = false
		res, err := a.Apply(context.Background(), planApp(t, a, ns, appA, v2, ref("ConfigMap", "theirs")), opts)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]apply.Action{"keep ConfigMap": apply.Unchanged, "gone ConfigMap": apply.NotPruned,
			"protected ConfigMap": apply.NotPruned, "web Deployment": apply.NotPruned, "theirs ConfigMap": apply.SkippedNotOwned,
			"shared ConfigMap": apply.NotPruned}
		if d := cmp.Diff(want, outcome(res)); d != "" {
			t.Errorf("(-want +got):\n%s", d)
		}
		for _, name := range []string{"gone", "protected", "theirs", "shared"} {
			if getObject(t, ref("ConfigMap", name)) == nil {
				t.Errorf("ConfigMap %s deleted with pruning off", name)
			}
		}
		if o := res.Object(ref("ConfigMap", "theirs")); o == nil || !strings.Contains(o.Reason, "not in the inventory of app "+appA) {
			t.Errorf("theirs: %+v, want a reason saying app %s never applied it", o, appA)
		}
		// What was not pruned stays listed.
		inv, _ := a.Inventory(context.Background(), appA)
		if len(inv) != 5 || !slices.Contains(inv, ref("ConfigMap", "shared")) {
			t.Errorf("inventory of A: %v, want version 1", refString(inv))
		}
	})

	t.Run("pruning-on", func(t *testing.T) {
		var ev events
		opts := applyOptions(appA)
		opts.Progress = ev.add
		res, err := a.Apply(context.Background(), planApp(t, a, ns, appA, v2, ref("ConfigMap", "theirs")), opts)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]apply.Action{"keep ConfigMap": apply.Unchanged, "gone ConfigMap": apply.Deleted,
			"protected ConfigMap": apply.SkippedProtected, "web Deployment": apply.Deleted,
			"theirs ConfigMap": apply.SkippedNotOwned, "shared ConfigMap": apply.Deleted}
		if d := cmp.Diff(want, outcome(res)); d != "" {
			t.Errorf("(-want +got):\n%s", d)
		}
		// Workloads go before ConfigMaps (reverse apply order).
		lines := ev.find("")
		if i, j := slices.Index(lines, ref("Deployment", "web").String()+" deleted"), slices.Index(lines, ref("ConfigMap", "gone").String()+" deleted"); i < 0 || j < 0 || i > j {
			t.Errorf("deletion order: Deployment at %d, ConfigMap at %d; events:\n%s", i, j, strings.Join(lines, "\n"))
		}
		waitGone(t, ref("ConfigMap", "gone"), 10*time.Second)
		waitGone(t, ref("Deployment", "web"), 10*time.Second)
		for _, name := range []string{"keep", "protected", "theirs"} {
			if getObject(t, ref("ConfigMap", name)) == nil {
				t.Errorf("ConfigMap %s was deleted", name)
			}
		}
		inv, _ := a.Inventory(context.Background(), appA)
		if d := cmp.Diff([]string{ref("ConfigMap", "keep").String()}, refString(inv)); d != "" {
			t.Errorf("inventory of A (-want +got):\n%s", d)
		}
		after, _ := a.Inventory(context.Background(), appB)
		if d := cmp.Diff(refString(invB), refString(after)); d != "" {
			t.Errorf("inventory of B changed (-before +after):\n%s", d)
		}
	})
}

// A bare Pod in a Namespace of the same plan is validated once the
// Namespace has its default ServiceAccount, which admission requires.
func TestApplyPodInNewNamespace(t *testing.T) {
	ns := namespace(t)
	fresh := ns + "-fresh"
	cleanupCluster(t, nsRef(fresh))
	a := newApplier(t)
	objs := parseFile(t, "pod.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: "+fresh+"}\n---\n"+
		"apiVersion: v1\nkind: Pod\nmetadata: {name: solo, namespace: "+fresh+"}\nspec: {containers: [{name: main, image: \"nginx:1.27\"}]}")
	opts := applyOptions(ns)
	opts.Wait = true
	res := mustApply(t, a, ns, ns, objs, opts)
	if res.Count(apply.Created) != 2 || res.Health != apply.Healthy {
		t.Errorf("result %s, want 2 created, healthy", res.Summary())
	}
}

// A Namespace that left one app's Git is not deleted while another app's
// inventory lists objects in it: deleting it would delete them.
func TestApplyPruneKeepsNamespaceOfAnotherApp(t *testing.T) {
	ns := namespace(t)
	shared := ns + "-shared"
	cleanupCluster(t, nsRef(shared))
	a := newApplier(t)
	appA, appB := ns+"-a", ns+"-b"
	cm := func(name string) string {
		return "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: " + name + ", namespace: " + shared + "}\ndata: {k: v}"
	}
	mustApply(t, a, ns, appA, parseFile(t, "a.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: "+shared+"}\n---\n"+cm("a")), applyOptions(appA))
	mustApply(t, a, ns, appB, parseFile(t, "b.yaml", cm("b")), applyOptions(appB))

	// Emptying an app is refused unless allowed (see TestOwnershipCLI).
	empty := applyOptions(appA)
	empty.AllowEmpty = true
	res := mustApply(t, a, ns, appA, nil, empty)
	cmA := diff.Ref{Version: "v1", Kind: "ConfigMap", Namespace: shared, Name: "a"}
	if o := res.Object(cmA); o == nil || o.Action != apply.Deleted {
		t.Errorf("ConfigMap a: %+v, want deleted", o)
	}
	o := res.Object(nsRef(shared))
	if o == nil || o.Action != apply.SkippedNotOwned || !strings.Contains(o.Reason, appB) {
		t.Errorf("Namespace: %+v, want skipped for app %s", o, appB)
	}
	if goneOrGoing(t, nsRef(shared)) || getObject(t, diff.Ref{Version: "v1", Kind: "ConfigMap", Namespace: shared, Name: "b"}) == nil {
		t.Errorf("the Namespace of app B's ConfigMap was deleted")
	}
}

// podLedger records the Pods of a namespace seen by a watch.
type podLedger struct {
	w      watch.Interface
	done   chan struct{}
	seen   map[string]bool // UIDs
	active map[string]bool // UIDs not deleted yet
}

func recordPods(t *testing.T, ns string) *podLedger {
	t.Helper()
	w, err := bed.Client.CoreV1().Pods(ns).Watch(context.Background(), metav1.ListOptions{LabelSelector: notPrePull})
	if err != nil {
		t.Fatal(err)
	}
	pw := &podLedger{w: w, done: make(chan struct{}), seen: map[string]bool{}, active: map[string]bool{}}
	go func() {
		defer close(pw.done)
		for e := range w.ResultChan() {
			pod, ok := e.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			uid := string(pod.UID)
			pw.seen[uid] = true
			if e.Type == watch.Deleted {
				delete(pw.active, uid)
			} else {
				pw.active[uid] = true
			}
		}
	}()
	return pw
}

func (pw *podLedger) stop() (seen, active int) {
	pw.w.Stop()
	<-pw.done
	return len(pw.seen), len(pw.active)
}

func TestApplyRolloutWaitsUntilDone(t *testing.T) {
	ns := namespace(t)
	a := newApplier(t)
	base := parseFile(t, "app.yaml", fill(webDeployment, "replicas: 2", "replicas: 3"))
	opts := applyOptions(ns)
	opts.Wait = true
	mustApply(t, a, ns, ns, base, opts)
	ctx := context.Background()
	before, err := bed.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: notPrePull})
	if err != nil || len(before.Items) != 3 {
		t.Fatalf("pods before: %d, %v", len(before.Items), err)
	}
	old := map[string]bool{}
	for _, p := range before.Items {
		old[string(p.UID)] = true
	}
	deployment := func() string {
		d, err := bed.Client.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s := d.Status
		return strings.Join([]string{itoa(d.Generation), itoa(s.ObservedGeneration), itoa(int64(s.Replicas)), itoa(int64(s.UpdatedReplicas)), itoa(int64(s.AvailableReplicas))}, " ")
	}

	t.Run("image-only change is left to the in-place engine", func(t *testing.T) {
		objs := edit(base, "Deployment", func(o map[string]any) { containerAt(o, "containers", 0)["image"] = "nginx:1.28" })
		gen := deployment()
		res, err := a.Apply(ctx, planApp(t, a, ns, ns, objs), opts)
		if err != nil {
			t.Fatal(err)
		}
		if o := res.Objects[0]; o.Action != apply.InPlace {
			t.Errorf("%s: %s, want in-place", o.Ref, o.Action)
		}
		if now := deployment(); now != gen {
			t.Errorf("Deployment written: generation/status %q, was %q", now, gen)
		}
	})

	t.Run("structural change is rolled out and waited for", func(t *testing.T) {
		objs := edit(base, "Deployment", func(o map[string]any) {
			containerAt(o, "containers", 0)["env"] = []any{map[string]any{"name": "MODE", "value": "fast"}}
		})
		p := planApp(t, a, ns, ns, objs)
		if c := p.Changes[0]; c.Path != diff.PathRecreate {
			t.Fatalf("plan: %s %s, want a Recreate update", c.Action, c.Path)
		}
		pw := recordPods(t, ns)
		var ev events
		opts := opts
		opts.Progress = ev.add
		res, err := a.Apply(ctx, p, opts)
		seen, _ := pw.stop()
		if err != nil {
			t.Fatal(err)
		}
		if res.Objects[0].Action != apply.Configured || res.Health != apply.Healthy {
			t.Errorf("result: %s, health %s", res.Objects[0].Action, res.Health)
		}
		// Done when Apply returns: every replica updated and available.
		if now := deployment(); !strings.HasSuffix(now, " 3 3 3") || strings.Fields(now)[0] != strings.Fields(now)[1] {
			t.Errorf("Deployment generation observedGeneration replicas updated available = %q when Apply returned", now)
		}
		pods, err := bed.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: notPrePull})
		if err != nil {
			t.Fatal(err)
		}
		running := 0
		for _, p := range pods.Items {
			if p.DeletionTimestamp != nil {
				continue
			}
			running++
			if old[string(p.UID)] {
				t.Errorf("old pod %s still running when Apply returned", p.Name)
			}
			if env := p.Spec.Containers[0].Env; len(env) != 1 || env[0].Value != "fast" {
				t.Errorf("pod %s runs the old template: env %v", p.Name, env)
			}
			if !podReady(&p) {
				t.Errorf("pod %s not ready when Apply returned: %s", p.Name, describePod(&p))
			}
		}
		if running != 3 || seen < 6 {
			t.Errorf("%d pods running, %d seen by the watch; want 3 new ones after the 3 old", running, seen)
		}
		if len(ev.find("waiting for Deployment.apps/"+ns+"/web: ")) == 0 {
			t.Errorf("no progress while waiting; events:\n%s", strings.Join(ev.find(""), "\n"))
		}
		t.Logf("progress:\n%s", strings.Join(ev.find(""), "\n"))
		err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			pods, err := bed.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: notPrePull})
			if err != nil {
				return false, nil
			}
			for _, p := range pods.Items {
				if old[string(p.UID)] {
					return false, nil
				}
			}
			return true, nil
		})
		if err != nil {
			t.Errorf("old pods not gone 30s after the rollout")
		}
	})

	t.Run("InPlaceAsRecreate applies an image-only change", func(t *testing.T) {
		objs := edit(base, "Deployment", func(o map[string]any) {
			containerAt(o, "containers", 0)["env"] = []any{map[string]any{"name": "MODE", "value": "fast"}}
			containerAt(o, "containers", 0)["image"] = "nginx:1.28"
		})
		p := planApp(t, a, ns, ns, objs)
		if c := p.Changes[0]; c.Path != diff.PathInPlace {
			t.Fatalf("plan: %s %s, want an in-place update", c.Action, c.Path)
		}
		opts := opts
		opts.InPlaceAsRecreate = true
		res, err := a.Apply(ctx, p, opts)
		if err != nil {
			t.Fatal(err)
		}
		if res.Objects[0].Action != apply.Configured {
			t.Errorf("result %s, want configured", res.Objects[0].Action)
		}
		d, err := bed.Client.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil || d.Spec.Template.Spec.Containers[0].Image != "nginx:1.28" || d.Status.UpdatedReplicas != 3 {
			t.Errorf("Deployment after apply: image %s, updated %d, %v", d.Spec.Template.Spec.Containers[0].Image, d.Status.UpdatedReplicas, err)
		}
	})
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestApplyHealthTimeoutNamesTheStuckObject(t *testing.T) {
	ns := namespace(t)
	a := newApplier(t)
	objs := parseFile(t, "app.yaml", fill(webDeployment, "name: web", "name: stuck", "app: web", "app: stuck", "nginx:1.27", "registry.example.com/x:does-not-exist")+`
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {mode: fast}`)
	opts := applyOptions(ns)
	opts.Wait, opts.Timeout = true, 5*time.Second
	start := time.Now()
	res, err := a.Apply(context.Background(), planApp(t, a, ns, ns, objs), opts)
	elapsed := time.Since(start)
	var herr *apply.HealthError
	if !errors.As(err, &herr) {
		t.Fatalf("apply: %v, want a *apply.HealthError", err)
	}
	t.Logf("error: %v", err)
	if !herr.TimedOut || elapsed < 5*time.Second || elapsed > 20*time.Second {
		t.Errorf("timed out %v after %s, want after about 5s", herr.TimedOut, elapsed)
	}
	if len(herr.Objects) != 1 || herr.Objects[0].Ref.Name != "stuck" {
		t.Fatalf("unhealthy objects %+v, want only the Deployment stuck", herr.Objects)
	}
	for _, want := range []string{"Deployment.apps/" + ns + "/stuck", "InProgress", "ImagePull"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if res.Health != apply.Unhealthy || res.Count(apply.Created) != 2 {
		t.Errorf("result %s, want 2 created and unhealthy", res.Summary())
	}
	// The apply itself succeeded: the inventory records it.
	if inv, err := a.Inventory(context.Background(), ns); err != nil || len(inv) != 2 {
		t.Errorf("inventory %v, %v; want both objects", inv, err)
	}
}

func TestApplyImmutableChange(t *testing.T) {
	for _, tc := range []struct {
		name     string
		v1       string
		edit     func(o map[string]any)
		kind     string
		check    func(o map[string]any) bool
		byOption bool
	}{
		{
			name: "job-template",
			v1: `
apiVersion: batch/v1
kind: Job
metadata: {name: migrate}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: main, image: "migrate:1"}]`,
			kind: "Job",
			edit: func(o map[string]any) { containerAt(o, "containers", 0)["image"] = "migrate:2" },
			check: func(o map[string]any) bool {
				return containerAt(o, "containers", 0)["image"] == "migrate:2"
			},
		},
		{
			name: "service-headless",
			v1: `
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  selector: {app: db}
  ports: [{port: 5432}]`,
			kind: "Service",
			edit: func(o map[string]any) { o["spec"].(map[string]any)["clusterIP"] = "None" },
			check: func(o map[string]any) bool {
				return o["spec"].(map[string]any)["clusterIP"] == "None"
			},
		},
		{
			name: "service-headless-options-force",
			v1: `
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  selector: {app: db}
  ports: [{port: 5432}]`,
			kind:     "Service",
			edit:     func(o map[string]any) { o["spec"].(map[string]any)["clusterIP"] = "None" },
			check:    func(o map[string]any) bool { return o["spec"].(map[string]any)["clusterIP"] == "None" },
			byOption: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := namespace(t)
			a := newApplier(t)
			v1 := parseFile(t, "db.yaml", tc.v1)
			mustApply(t, a, ns, ns, v1, applyOptions(ns))
			ref := diff.RefOf(v1[0].Object)
			ref.Namespace = ns
			live := getObject(t, ref)

			// The change is refused by the API server: the planner's dry-run
			// cannot compute it, so the applier sees an Update it must
			// validate itself.
			v2 := edit(v1, tc.kind, tc.edit)
			_, err := a.Apply(context.Background(), handPlan(t, ns, v2), applyOptions(ns))
			if !errors.Is(err, apply.ErrImmutable) {
				t.Fatalf("apply: %v, want apply.ErrImmutable", err)
			}
			t.Logf("error: %v", err)
			for _, want := range []string{ref.String(), "db.yaml", "immutable", apply.ForceAnnotation} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
			if now := getObject(t, ref); now.GetUID() != live.GetUID() || now.GetGeneration() != live.GetGeneration() {
				t.Errorf("refused object was changed")
			}

			opts := applyOptions(ns)
			if tc.byOption {
				opts.Force = true
			} else {
				v2 = edit(v2, tc.kind, func(o map[string]any) {
					o["metadata"].(map[string]any)["annotations"] = map[string]any{apply.ForceAnnotation: "true"}
				})
			}
			var ev events
			opts.Progress = ev.add
			res, err := a.Apply(context.Background(), handPlan(t, ns, v2), opts)
			if err != nil {
				t.Fatalf("forced apply: %v", err)
			}
			if res.Objects[0].Action != apply.Recreated {
				t.Errorf("result %s, want recreated", res.Objects[0].Action)
			}
			now := getObject(t, ref)
			if now.GetUID() == live.GetUID() {
				t.Errorf("same UID %s: not recreated", now.GetUID())
			}
			if !tc.check(now.Object) {
				t.Errorf("recreated object does not have the new value")
			}
			if len(ev.find(ref.String()+" recreated")) != 1 {
				t.Errorf("no recreated event; events: %v", ev.find(""))
			}
		})
	}
}
