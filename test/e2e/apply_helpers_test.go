//go:build e2e

package e2e

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/yaml"

	"github.com/refit-gitops/refit/apply"
	"github.com/refit-gitops/refit/diff"
)

// parseFile reads the documents of one manifest file named file.
func parseFile(t *testing.T, file, docs string) []diff.Desired {
	t.Helper()
	var out []diff.Desired
	for _, doc := range strings.Split(docs, "\n---\n") {
		obj := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(doc), &obj.Object); err != nil {
			t.Fatalf("parse %s: %q: %v", file, doc, err)
		}
		if len(obj.Object) > 0 {
			out = append(out, diff.Desired{Object: obj, Source: file})
		}
	}
	return out
}

func newApplier(t *testing.T, opts ...apply.Option) *apply.Applier {
	t.Helper()
	a, err := apply.New(bed.Config, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// planApp plans objs for app the way refit does: the app's inventory is
// the previous state.
func planApp(t *testing.T, a *apply.Applier, ns, app string, objs []diff.Desired, extraPrevious ...diff.Ref) *diff.Plan {
	t.Helper()
	ctx := context.Background()
	opts := diff.DefaultOptions()
	opts.Namespace = ns
	prev, err := a.Inventory(ctx, app)
	if err != nil {
		t.Fatalf("inventory of %s: %v", app, err)
	}
	opts.Previous = append(prev, extraPrevious...)
	p, err := newPlanner(t).Plan(ctx, objs, opts)
	if err != nil {
		t.Fatalf("plan: %v", err)
	}
	return p
}

func applyOptions(app string) apply.Options {
	opts := apply.DefaultOptions()
	opts.App = app
	opts.Timeout = time.Minute
	opts.Interval = 200 * time.Millisecond
	return opts
}

// mustApply plans and applies objs for app and fails the test on an error.
func mustApply(t *testing.T, a *apply.Applier, ns, app string, objs []diff.Desired, opts apply.Options) *apply.Result {
	t.Helper()
	res, err := a.Apply(context.Background(), planApp(t, a, ns, app, objs), opts)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	return res
}

// handPlan plans every object of objs as an Update of the live object that
// the plan could not dry-run (Merged nil): what a planner hands over for a
// change the API server refuses as immutable, and what a stale plan looks
// like to the applier.
func handPlan(t *testing.T, ns string, objs []diff.Desired) *diff.Plan {
	t.Helper()
	p := &diff.Plan{}
	for _, d := range objs {
		desired := d.Object.DeepCopy()
		if desired.GetNamespace() == "" {
			desired.SetNamespace(ns)
		}
		ref := diff.RefOf(desired)
		live := getObject(t, ref)
		if live == nil {
			t.Fatalf("hand plan: %s does not exist", ref)
		}
		p.Changes = append(p.Changes, diff.Change{Ref: ref, Source: d.Source, Action: diff.Update, Desired: desired, Live: live})
	}
	return p
}

var (
	testClientOnce sync.Once
	testClient     client.Client
	testClientErr  error
)

// kube is a controller-runtime client with a discovery-backed mapper, so
// the tests can read any kind, custom ones included.
func kube(t *testing.T) client.Client {
	t.Helper()
	testClientOnce.Do(func() {
		httpClient, err := rest.HTTPClientFor(bed.Config)
		if err != nil {
			testClientErr = err
			return
		}
		mapper, err := apiutil.NewDynamicRESTMapper(bed.Config, httpClient)
		if err != nil {
			testClientErr = err
			return
		}
		testClient, testClientErr = client.New(bed.Config, client.Options{HTTPClient: httpClient, Mapper: mapper})
	})
	if testClientErr != nil {
		t.Fatal(testClientErr)
	}
	return testClient
}

// getObject returns the live object, nil if it does not exist, and the
// object even while it is being deleted.
func getObject(t *testing.T, ref diff.Ref) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(ref.GroupKind().WithVersion(ref.Version))
	err := kube(t).Get(context.Background(), client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}, u)
	switch {
	case err == nil:
		return u
	case apierrors.IsNotFound(err), meta.IsNoMatchError(err):
		return nil
	}
	t.Fatalf("get %s: %v", ref, err)
	return nil
}

// goneOrGoing reports whether ref does not exist or is being deleted.
func goneOrGoing(t *testing.T, ref diff.Ref) bool {
	t.Helper()
	u := getObject(t, ref)
	return u == nil || u.GetDeletionTimestamp() != nil
}

// waitGone waits until ref no longer exists.
func waitGone(t *testing.T, ref diff.Ref, timeout time.Duration) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		return getObject(t, ref) == nil, nil
	})
	if err != nil {
		t.Fatalf("%s still exists after %s", ref, timeout)
	}
}

// cleanupCluster deletes cluster-scoped objects (CRDs, extra Namespaces) a
// test's plan creates.
func cleanupCluster(t *testing.T, refs ...diff.Ref) {
	t.Cleanup(func() {
		for _, ref := range refs {
			u := &unstructured.Unstructured{}
			u.SetGroupVersionKind(ref.GroupKind().WithVersion(ref.Version))
			u.SetName(ref.Name)
			_ = kube(t).Delete(context.Background(), u, client.PropagationPolicy(metav1.DeletePropagationBackground))
		}
	})
}

// events collects progress events.
type events struct {
	mu    sync.Mutex
	lines []string
}

func (e *events) add(ev apply.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.lines = append(e.lines, ev.String())
}

func (e *events) find(prefix string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, l := range e.lines {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return out
}

func refString(refs []diff.Ref) []string {
	out := make([]string, len(refs))
	for i, r := range refs {
		out[i] = r.String()
	}
	return out
}
