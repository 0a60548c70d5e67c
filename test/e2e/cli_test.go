//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/refit-gitops/refit/inplace"
)

var (
	buildOnce sync.Once
	refitBin  string
	buildErr  error
)

// refit builds bin/refit once per test binary, into a temporary folder.
func refit(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "refit-e2e-bin")
		if err != nil {
			buildErr = err
			return
		}
		refitBin = filepath.Join(dir, "refit")
		out, err := exec.Command("go", "build", "-o", refitBin, "github.com/refit-gitops/refit/cmd/refit").CombinedOutput()
		if err != nil {
			buildErr = errors.New(string(out))
		}
	})
	if buildErr != nil {
		t.Fatalf("build refit: %v", buildErr)
	}
	return refitBin
}

// runRefitCLI runs the refit binary against the bed and returns its output
// and exit code.
func runRefitCLI(t *testing.T, ns string, args ...string) (string, int) {
	t.Helper()
	return runCmd(t, exec.Command(refit(t), append(args, "--kubeconfig", bed.Kubeconfig, "-n", ns)...))
}

// runCmd runs cmd and returns its combined output and exit code.
func runCmd(t *testing.T, cmd *exec.Cmd) (string, int) {
	t.Helper()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &exit):
		return out.String(), exit.ExitCode()
	}
	t.Fatalf("run %s: %v", cmd.Path, err)
	return "", -1
}

func writeManifests(t *testing.T, dir, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "app.yaml"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

const cliApp = `apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  replicas: 12
  strategy: {rollingUpdate: {maxUnavailable: 3}}
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers:
      - name: api
        image: "api:1.0"
---
apiVersion: v1
kind: ConfigMap
metadata: {name: api-config}
data: {level: info}
`

func TestCLIPlanExitCodesAndJSON(t *testing.T) {
	ns := namespace(t)
	dir := t.TempDir()
	writeManifests(t, dir, cliApp)
	out, code := runRefitCLI(t, ns, "plan", "--dir", dir, "-o", "json")
	if code != 2 {
		t.Fatalf("plan of a new app: exit %d, want 2\n%s", code, out)
	}
	var plan struct {
		Changes []struct{ Kind, Namespace, Name, Action string }
	}
	if err := json.Unmarshal([]byte(out), &plan); err != nil || len(plan.Changes) != 2 || plan.Changes[0].Action != "Create" || plan.Changes[0].Namespace != ns {
		t.Fatalf("plan -o json: %v\n%s", err, out)
	}
	if out, code := runRefitCLI(t, ns, "apply", "--dir", dir, "--app", ns, "--wait"); code != 0 {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	if out, code := runRefitCLI(t, ns, "plan", "--dir", dir, "--app", ns); code != 0 || !strings.Contains(out, "2 unchanged") {
		t.Fatalf("plan after apply: exit %d, want 0 and all unchanged\n%s", code, out)
	}
	writeManifests(t, dir, strings.Replace(cliApp, `"api:1.0"`, `"api:1.1"`, 1))
	out, code = runRefitCLI(t, ns, "plan", "--dir", dir, "--app", ns)
	if code != 2 || !strings.Contains(out, "update in place (image): api api:1.0 → api:1.1") {
		t.Fatalf("plan of an image bump: exit %d\n%s", code, out)
	}
	writeManifests(t, dir, cliApp+"---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: broken\n")
	if out, code := runRefitCLI(t, ns, "plan", "--dir", dir); code != 1 || !strings.Contains(out, "app.yaml") {
		t.Fatalf("plan of a broken manifest: exit %d, want 1 and the file named\n%s", code, out)
	}
}

// A structural change in the same commit as an image change goes the
// ordinary way: the Deployment controller replaces the Pods.
func TestCLIStructuralChangeFallsBackToRecreation(t *testing.T) {
	ns := namespace(t)
	dir := t.TempDir()
	writeManifests(t, dir, cliApp)
	if out, code := runRefitCLI(t, ns, "apply", "--dir", dir, "--app", ns, "--wait"); code != 0 {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	before := waitReadyPods(t, ns, 12, nil)
	bumped := strings.Replace(cliApp, `        image: "api:1.0"`, "        image: \"api:1.1\"\n        env: [{name: MODE, value: fast}]", 1)
	writeManifests(t, dir, bumped)
	out, code := runRefitCLI(t, ns, "apply", "--dir", dir, "--app", ns, "--wait")
	if code != 0 || !strings.Contains(out, "Pods recreated (structural change)") {
		t.Fatalf("apply: exit %d, want the recreation path\n%s", code, out)
	}
	after := waitReadyPods(t, ns, 12, nil)
	old := uidsOf(before)
	for _, pod := range after {
		if old[pod.Name] == pod.UID {
			t.Errorf("pod %s kept its UID: want it recreated by the Deployment controller", pod.Name)
		}
		if pod.Spec.Containers[0].Image != "api:1.1" || len(pod.Spec.Containers[0].Env) != 1 {
			t.Errorf("pod %s: %s", pod.Name, describePod(&pod))
		}
	}
}

// refit killed with SIGKILL in the middle of an in-place rollout: started
// again, it finishes the rollout, never exceeding maxUnavailable, and no
// Pod is recreated.
func TestCLIKilledMidRolloutResumes(t *testing.T) {
	ns := namespace(t)
	dir := t.TempDir()
	writeManifests(t, dir, cliApp)
	if out, code := runRefitCLI(t, ns, "apply", "--dir", dir, "--app", ns, "--wait"); code != 0 {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	before := waitReadyPods(t, ns, 12, nil)
	fw := watchFleet(t, ns)
	writeManifests(t, dir, strings.Replace(cliApp, `"api:1.0"`, `"api:1.1"`, 1))

	cmd := exec.Command(refit(t), "apply", "--dir", dir, "--app", ns, "--kubeconfig", bed.Kubeconfig, "-n", ns, "--grace", "0s")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill it once the first batch is patched, before the rollout ends.
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		pods, err := bed.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: notPrePull})
		if err != nil {
			return false, nil
		}
		patched := 0
		for _, p := range pods.Items {
			if _, ok := p.Annotations[inplace.StateAnnotation]; ok {
				patched++
			}
		}
		return patched >= 3, nil
	})
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	if err != nil {
		t.Fatalf("no batch patched before the kill: %v\n%s", err, out.String())
	}
	dep, err := bed.Client.AppsV1().Deployments(ns).Get(context.Background(), "api", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := dep.Annotations[inplace.RolloutAnnotation]; !ok {
		t.Fatalf("refit finished before it was killed: the test proves nothing\n%s", out.String())
	}

	again, code := runRefitCLI(t, ns, "apply", "--dir", dir, "--app", ns, "--grace", "0s")
	if code != 0 || !strings.Contains(again, "continuing an unfinished in-place rollout") {
		t.Fatalf("second apply: exit %d\n%s", code, again)
	}
	maxUnavailable, nUIDs, deleted, pending := fw.summary()
	after := waitReadyPods(t, ns, 12, nil)
	if maxUnavailable > 3 {
		t.Errorf("%d pods unavailable at once across the kill, bound 3", maxUnavailable)
	}
	if nUIDs != 12 || len(deleted) > 0 || len(pending) > 0 {
		t.Errorf("pods recreated: %d UIDs, deleted %v, pending %v", nUIDs, deleted, pending)
	}
	old := uidsOf(before)
	for _, pod := range after {
		cs := containerStatus(&pod, "api")
		if old[pod.Name] != pod.UID || cs.Image != "api:1.1" || cs.RestartCount != 1 {
			t.Errorf("pod %s: %s", pod.Name, describePod(&pod))
		}
	}
}

// An immutable field changed in Git: refused with a clear message, or, with
// refit.dev/force, the object is deleted and created again — through plan
// and apply as a user runs them.
func TestCLIForceRecreatesAnImmutableChange(t *testing.T) {
	ns := namespace(t)
	dir := t.TempDir()
	job := func(image, annotations string) string {
		return `apiVersion: batch/v1
kind: Job
metadata:
  name: migrate
` + annotations + `spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: m, image: "` + image + `"}]
`
	}
	writeManifests(t, dir, job("migrate:1", ""))
	if out, code := runRefitCLI(t, ns, "apply", "--dir", dir, "--app", ns); code != 0 {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	before, err := bed.Client.BatchV1().Jobs(ns).Get(context.Background(), "migrate", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	writeManifests(t, dir, job("migrate:2", ""))
	out, code := runRefitCLI(t, ns, "plan", "--dir", dir, "--app", ns)
	if code != 1 || !strings.Contains(out, "Job.batch/"+ns+"/migrate") || !strings.Contains(out, "immutable") {
		t.Fatalf("plan of an immutable change: exit %d, want 1 naming the Job and the field\n%s", code, out)
	}
	writeManifests(t, dir, job("migrate:2", "  annotations: {refit.dev/force: \"true\"}\n"))
	if out, code := runRefitCLI(t, ns, "apply", "--dir", dir, "--app", ns); code != 0 || !strings.Contains(out, "recreated") {
		t.Fatalf("forced apply: exit %d\n%s", code, out)
	}
	after, err := bed.Client.BatchV1().Jobs(ns).Get(context.Background(), "migrate", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if after.UID == before.UID || after.Spec.Template.Spec.Containers[0].Image != "migrate:2" {
		t.Errorf("job not recreated: uid %s → %s, image %s", before.UID, after.UID, after.Spec.Template.Spec.Containers[0].Image)
	}
}
