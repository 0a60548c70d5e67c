//go:build e2e

package e2e

import (
	"context"
	"errors"
	"strings"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/refit-gitops/refit/apply"
	"github.com/refit-gitops/refit/diff"
)

func configMap(name, value string) string {
	return "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: " + name + "}\ndata: {k: \"" + value + "\"}"
}

// One object, one app: an object another app's inventory lists is refused
// with that app's name and nothing of the commit is written; refit's own
// state is refused from Git; an unreadable inventory of a third app blocks
// nobody.
func TestOwnershipOneObjectOneApp(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	a := newApplier(t)
	appA, appB, appC := ns+"-a", ns+"-b", ns+"-c"
	cmRef := func(name string) diff.Ref {
		return diff.Ref{Version: "v1", Kind: "ConfigMap", Namespace: ns, Name: name}
	}
	mustApply(t, a, ns, appA, parseFile(t, "a.yaml", configMap("shared", "a")), applyOptions(appA))

	// B claims A's object: refused before anything is written.
	b := parseFile(t, "b.yaml", configMap("b-only", "b")+"\n---\n"+configMap("shared", "b"))
	_, err := a.Apply(ctx, planApp(t, a, ns, appB, b), applyOptions(appB))
	var verr *apply.ValidationError
	if !errors.As(err, &verr) || !strings.Contains(err.Error(), "ConfigMap/"+ns+"/shared (b.yaml): belongs to app "+appA) {
		t.Fatalf("apply of app B: %v, want a validation error naming the object, its file and app %s", err, appA)
	}
	if getObject(t, cmRef("b-only")) != nil {
		t.Errorf("b-only was created: part of a refused commit was applied")
	}
	if live := getObject(t, cmRef("shared")); live == nil {
		t.Errorf("shared is gone")
	} else if v, _, _ := unstructured.NestedString(live.Object, "data", "k"); v != "a" {
		t.Errorf("shared holds %q, want app A's value a", v)
	}
	if inv, err := a.Inventory(ctx, appB); err != nil || inv != nil {
		t.Errorf("inventory of app B: %v, %v; want none", inv, err)
	}

	// A commit that holds an inventory (refit's own state) is refused by
	// the plan, and by the applier given a plan made elsewhere.
	forged := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: " + apply.InventoryName(appA) + ", namespace: " + apply.DefaultInventoryNamespace +
		"}\ndata: {app: " + appA + ", entries: \"\"}"
	if _, err := newPlanner(t).Plan(ctx, parseFile(t, "forged.yaml", forged), diff.DefaultOptions()); err == nil ||
		!strings.Contains(err.Error(), "forged.yaml") || !strings.Contains(err.Error(), "refit's state never comes from Git") {
		t.Errorf("plan of a forged inventory: %v, want it refused naming the file", err)
	}
	forgedObj := parseFile(t, "forged.yaml", forged)[0].Object
	handMade := &diff.Plan{Changes: []diff.Change{{Ref: diff.RefOf(forgedObj), Source: "forged.yaml", Action: diff.Update, Desired: forgedObj}}}
	if _, err := a.Apply(ctx, handMade, applyOptions(appB)); !errors.As(err, &verr) {
		t.Errorf("apply of a forged inventory: %v, want a validation error", err)
	}
	if inv, err := a.Inventory(ctx, appA); err != nil || len(inv) != 1 {
		t.Errorf("inventory of app A after the forgery: %v, %v; want its one object", refString(inv), err)
	}

	// A corrupt inventory of another app does not block app C.
	corrupt := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: apply.InventoryName(ns + "-corrupt"), Namespace: ns,
		Labels: map[string]string{apply.InventoryLabel: "true"}}, Data: map[string]string{"app": ns + "-corrupt", "entries": "not an inventory\n"}}
	if _, err := bed.Client.CoreV1().ConfigMaps(ns).Create(ctx, corrupt, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Other tests prune Namespaces: they must not find it.
	t.Cleanup(func() {
		_ = bed.Client.CoreV1().ConfigMaps(ns).Delete(context.Background(), corrupt.Name, metav1.DeleteOptions{})
	})
	mustApply(t, a, ns, appC, parseFile(t, "c.yaml", configMap("c-only", "c")), applyOptions(appC))
	if getObject(t, cmRef("c-only")) == nil {
		t.Errorf("app C not applied next to a corrupt inventory")
	}
}

// The bad-commit memory and the inventory share one ConfigMap under two
// field managers: writing one keeps the other.
func TestOwnershipMemoryKeptByInventoryWrites(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	a := newApplier(t, apply.WithInventoryNamespace(ns))
	app := ns + "-m"
	want := apply.Memory{Attempt: "c2", Attempts: 2, Bad: "c1", Reason: "nothing applied: ConfigMap/x: invalid"}
	if err := a.SaveMemory(ctx, app, want); err != nil {
		t.Fatal(err)
	}
	mustApply(t, a, ns, app, parseFile(t, "m.yaml", configMap("m", "1")), applyOptions(app))
	if got, err := a.Memory(ctx, app); err != nil || got != want {
		t.Errorf("memory after an apply: %+v, %v; want %+v", got, err, want)
	}
	if err := a.SaveMemory(ctx, app, apply.Memory{Bad: "c1", Reason: "r"}); err != nil {
		t.Fatal(err)
	}
	inv, err := a.Inventory(ctx, app)
	if err != nil || len(inv) != 1 {
		t.Errorf("inventory after a memory write: %v, %v; want the one object", refString(inv), err)
	}
	if got, _ := a.Memory(ctx, app); got.Attempt != "" || got.Bad != "c1" {
		t.Errorf("memory after clearing the attempt: %+v", got)
	}
	// An inventory that is not refit's own (a hand-made ConfigMap) is
	// never used to prune.
	if err := bed.Client.CoreV1().ConfigMaps(ns).Delete(ctx, apply.InventoryName(app), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	fake := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: apply.InventoryName(app), Namespace: ns},
		Data: map[string]string{"app": app, "entries": "v1 ConfigMap " + ns + " victim\n"}}
	if _, err := bed.Client.CoreV1().ConfigMaps(ns).Create(ctx, fake, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if _, err := a.Inventory(ctx, app); err == nil || !strings.Contains(err.Error(), "not refit's inventory") {
		t.Errorf("inventory of a hand-made ConfigMap: %v, want it refused", err)
	}
}

// Through the CLI as a user runs it: force on an object the app never
// applied is refused and deletes nothing; a forced claim's plan says its
// data goes; an empty render with --prune stops and deletes nothing; two
// folders applied without --app do not see each other's objects.
func TestOwnershipCLI(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	x, y := t.TempDir(), t.TempDir()

	// Force on a Job refit never applied.
	job := func(image string) string {
		return "apiVersion: batch/v1\nkind: Job\nmetadata: {name: migrate, annotations: {refit.dev/force: \"true\"}}\n" +
			"spec: {template: {spec: {restartPolicy: Never, containers: [{name: m, image: \"" + image + "\"}]}}}"
	}
	// Another client made it.
	jobs := bed.Client.BatchV1().Jobs(ns)
	before, err := jobs.Create(ctx, &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "migrate"}, Spec: batchv1.JobSpec{
		Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{Name: "m", Image: "migrate:1"}}}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	writeManifests(t, x, job("migrate:2"))
	out, code := runRefitCLI(t, ns, "plan", "--dir", x)
	if code != 1 || !strings.Contains(out, "Job.batch/"+ns+"/migrate") || !strings.Contains(out, "never applied it") {
		t.Errorf("plan forcing a Job refit never applied: exit %d, want 1 saying so\n%s", code, out)
	}
	out, code = runRefitCLI(t, ns, "apply", "--dir", x)
	if code != 1 || !strings.Contains(out, "never applied it") {
		t.Errorf("apply forcing a Job refit never applied: exit %d, want 1 saying so\n%s", code, out)
	}
	if after, err := jobs.Get(ctx, "migrate", metav1.GetOptions{}); err != nil || after.UID != before.UID {
		t.Errorf("the Job was deleted or replaced: %v", err)
	}

	// A claim this app applied, forced: the plan says its data goes.
	pvc := func(mode, annotations string) string {
		return "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data" + annotations + "}\n" +
			"spec: {accessModes: [" + mode + "], resources: {requests: {storage: 1Gi}}}"
	}
	writeManifests(t, x, pvc("ReadWriteOnce", ""))
	if out, code := runRefitCLI(t, ns, "apply", "--dir", x); code != 0 {
		t.Fatalf("apply of a claim: exit %d\n%s", code, out)
	}
	writeManifests(t, x, pvc("ReadWriteMany", ", annotations: {refit.dev/force: \"true\"}"))
	out, code = runRefitCLI(t, ns, "plan", "--dir", x)
	if code != 2 || !strings.Contains(out, "PersistentVolumeClaim/"+ns+"/data") || !strings.Contains(out, "the claim's data is lost") {
		t.Errorf("plan forcing a claim: exit %d, want 2 saying its data is lost\n%s", code, out)
	}

	// Two folders, no --app: neither sees the other's objects.
	writeManifests(t, x, pvc("ReadWriteOnce", "")+"\n---\n"+configMap("x", "1"))
	writeManifests(t, y, configMap("y", "1"))
	for _, dir := range []string{x, y} {
		if out, code := runRefitCLI(t, ns, "apply", "--dir", dir, "--prune"); code != 0 {
			t.Fatalf("apply --prune of %s: exit %d\n%s", dir, code, out)
		}
	}
	out, code = runRefitCLI(t, ns, "plan", "--dir", x, "--prune")
	if code != 0 || !strings.Contains(out, "0 to delete, 2 unchanged") {
		t.Errorf("plan --prune of folder x after folder y: exit %d, want 0 with no deletion\n%s", code, out)
	}
	if getObject(t, diff.Ref{Version: "v1", Kind: "ConfigMap", Namespace: ns, Name: "y"}) == nil {
		t.Errorf("folder y's ConfigMap is gone")
	}

	// Folder y claims folder x's ConfigMap: the plan refuses it as the
	// apply would, naming the other app.
	writeManifests(t, y, configMap("y", "1")+"\n---\n"+configMap("x", "2"))
	out, code = runRefitCLI(t, ns, "plan", "--dir", y)
	if code != 1 || !strings.Contains(out, "ConfigMap/"+ns+"/x") || !strings.Contains(out, "belongs to app") {
		t.Errorf("plan of folder y claiming folder x's object: exit %d, want 1 naming the other app\n%s", code, out)
	}

	// Folder y renders nothing now: with --prune, nothing is deleted.
	writeManifests(t, y, "# everything moved away\n")
	out, code = runRefitCLI(t, ns, "plan", "--dir", y, "--prune")
	if code != 1 || !strings.Contains(out, "the render is empty") {
		t.Errorf("plan --prune of an empty render: exit %d, want 1 saying the render is empty\n%s", code, out)
	}
	out, code = runRefitCLI(t, ns, "apply", "--dir", y, "--prune")
	if code != 1 || !strings.Contains(out, "the render is empty") {
		t.Errorf("apply --prune of an empty render: exit %d, want 1 saying the render is empty\n%s", code, out)
	}
	if getObject(t, diff.Ref{Version: "v1", Kind: "ConfigMap", Namespace: ns, Name: "y"}) == nil {
		t.Errorf("an empty render pruned folder y's ConfigMap")
	}
}

// A refused commit changes no definition it did not need to validate the
// rest: the label it adds to an existing Namespace and a new Namespace
// nothing of the commit lives in are never written; the new Namespace the
// refused object lives in was created to validate it and is deleted again.
func TestOwnershipRefusedCommitLeavesDefinitions(t *testing.T) {
	ns := namespace(t)
	extra, spare := ns+"-extra", ns+"-spare"
	cleanupCluster(t, nsRef(extra), nsRef(spare))
	a := newApplier(t)
	objs := parseFile(t, "namespaces.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: "+ns+", labels: {team: shop}}\n---\n"+
		"apiVersion: v1\nkind: Namespace\nmetadata: {name: "+extra+"}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: "+spare+"}")
	objs = append(objs, parseFile(t, "broken.yaml", `apiVersion: apps/v1
kind: Deployment
metadata: {name: broken, namespace: `+extra+`}
spec:
  selector: {matchLabels: {app: a}}
  template:
    metadata: {labels: {app: b}}
    spec: {containers: [{name: main, image: "nginx:1.27"}]}`)...)
	_, err := a.Apply(context.Background(), planApp(t, a, ns, ns, objs), applyOptions(ns))
	var verr *apply.ValidationError
	if !errors.As(err, &verr) || !strings.Contains(err.Error(), "broken.yaml") {
		t.Fatalf("apply: %v, want a validation error naming broken.yaml", err)
	}
	if len(verr.Kept) > 0 {
		t.Errorf("left changed: %v", refString(verr.Kept))
	}
	if live := getObject(t, nsRef(ns)); live == nil || live.GetLabels()["team"] != "" {
		t.Errorf("Namespace %s labelled by a refused commit: %v", ns, live.GetLabels())
	}
	if getObject(t, nsRef(spare)) != nil {
		t.Errorf("Namespace %s created by a refused commit", spare)
	}
	if !goneOrGoing(t, nsRef(extra)) {
		t.Errorf("Namespace %s, created to validate the refused object, is still there", extra)
	}
}
