package reconcile

import (
	"context"
	"errors"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/refit-gitops/refit/apply"
	"github.com/refit-gitops/refit/diff"
	"github.com/refit-gitops/refit/inplace"
)

// stage is a fake apply: it reports every change of the plan as written,
// and its health wait lasts until the test says how it ends.
type stage struct {
	applyErr error
	// health is called by WaitHealthy with the refs it waits for.
	health func(ctx context.Context, refs []diff.Ref) error

	mu     sync.Mutex
	waited []diff.Ref
}

func (s *stage) Apply(_ context.Context, plan *diff.Plan, opts apply.Options) (*apply.Result, error) {
	if opts.Wait {
		return nil, errors.New("the reconciler must not let Apply wait: it waits for health itself")
	}
	res := &apply.Result{}
	for _, c := range plan.Changes {
		action := apply.Configured
		switch {
		case c.Action == diff.Unchanged:
			action = apply.Unchanged
		case c.Path == diff.PathInPlace:
			action = apply.InPlace
		}
		res.Objects = append(res.Objects, apply.ObjectResult{Ref: c.Ref, Action: action})
	}
	return res, s.applyErr
}

func (s *stage) WaitHealthy(ctx context.Context, _ *diff.Plan, res *apply.Result, _ apply.Options) error {
	var refs []diff.Ref
	for _, o := range res.Objects {
		if o.Action != apply.InPlace {
			refs = append(refs, o.Ref)
		}
	}
	s.mu.Lock()
	s.waited = refs
	s.mu.Unlock()
	err := s.health(ctx, refs)
	res.Health = apply.Healthy
	if err != nil {
		res.Health = apply.Unhealthy
	}
	return err
}

func (s *stage) Inventory(context.Context, string) ([]diff.Ref, error) { return nil, nil }
func (s *stage) Claims(context.Context, *diff.Plan, string) error      { return nil }
func (s *stage) Forget(context.Context, string) error                  { return nil }

// engine is a fake in-place engine: every rollout signals that it started,
// then ends as the test says.
type engine struct {
	started chan diff.Ref
	outcome func(ctx context.Context, c diff.Change) (inplace.Result, error)
}

func (e *engine) Rollout(ctx context.Context, c diff.Change, _ inplace.Options) (inplace.Result, error) {
	e.started <- c.Ref
	return e.outcome(ctx, c)
}

func (e *engine) Precheck(context.Context, diff.Change) (string, error) { return "", nil }
func (e *engine) DropExtras(context.Context, diff.Change) error         { return nil }

func ref(kind, name string) diff.Ref {
	return diff.Ref{Group: "apps", Version: "v1", Kind: kind, Namespace: "shop", Name: name}
}

// A plan with an in-place bump, an unfinished rollout to continue, an
// ordinary update and a ConfigMap.
func adversityPlan() *diff.Plan {
	record := &unstructured.Unstructured{}
	record.SetAnnotations(map[string]string{inplace.RolloutAnnotation: `{"id":"x","revision":"r"}`})
	return &diff.Plan{Changes: []diff.Change{
		{Ref: ref("Deployment", "web"), Action: diff.Update, Class: diff.ImageOnly, Path: diff.PathInPlace},
		{Ref: ref("StatefulSet", "db"), Action: diff.Unchanged, Live: record},
		{Ref: ref("Deployment", "slow"), Action: diff.Update, Class: diff.Structural, Path: diff.PathRecreate},
		{Ref: diff.Ref{Version: "v1", Kind: "ConfigMap", Namespace: "shop", Name: "settings"}, Action: diff.Update},
	}}
}

// afterStart ends a health wait with err once both rollouts have started.
func afterStart(ctx context.Context, started <-chan struct{}, err error) error {
	select {
	case <-started:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func TestApplyStartsRolloutsRightAfterTheWrites(t *testing.T) {
	unhealthy := &apply.HealthError{Objects: []apply.ObjectResult{{Ref: ref("Deployment", "slow"), Status: "InProgress"}}}
	succeed := func(_ context.Context, c diff.Change) (inplace.Result, error) {
		return inplace.Result{Ref: c.Ref, Outcome: inplace.Succeeded}, nil
	}
	for _, tc := range []struct {
		name     string
		wait     bool
		applyErr error
		// health ends the health wait; it may wait for both rollouts to
		// have started, which proves they did not wait for it.
		health   func(ctx context.Context, started <-chan struct{}) error
		outcome  func(ctx context.Context, c diff.Change) (inplace.Result, error)
		wantErr  error
		wantRoll []inplace.Outcome // sorted
		// wantHealth is the apply result's Health.
		wantHealth apply.Health
	}{
		{
			name: "health waits for the rollouts to start, and is healthy",
			wait: true,
			health: func(ctx context.Context, started <-chan struct{}) error {
				return afterStart(ctx, started, nil)
			},
			outcome: succeed, wantRoll: []inplace.Outcome{inplace.Succeeded, inplace.Succeeded}, wantHealth: apply.Healthy,
		},
		{
			name: "unhealthy after the rollouts started: both results, the health error returned",
			wait: true,
			health: func(ctx context.Context, started <-chan struct{}) error {
				return afterStart(ctx, started, unhealthy)
			},
			outcome: succeed, wantErr: unhealthy, wantRoll: []inplace.Outcome{inplace.Succeeded, inplace.Succeeded}, wantHealth: apply.Unhealthy,
		},
		{
			name: "a failed rollout and an unhealthy object are both reported",
			wait: true,
			health: func(ctx context.Context, started <-chan struct{}) error {
				return afterStart(ctx, started, unhealthy)
			},
			outcome: func(_ context.Context, c diff.Change) (inplace.Result, error) {
				if c.Ref.Kind == "StatefulSet" {
					return inplace.Result{Ref: c.Ref, Outcome: inplace.Failed, FailedPod: "db-2"}, nil
				}
				return inplace.Result{Ref: c.Ref, Outcome: inplace.Succeeded}, nil
			},
			wantErr: unhealthy, wantRoll: []inplace.Outcome{inplace.Failed, inplace.Succeeded}, wantHealth: apply.Unhealthy,
		},
		{
			name:   "a rollout still running when health is done is waited for",
			wait:   true,
			health: func(context.Context, <-chan struct{}) error { return nil },
			outcome: func(ctx context.Context, c diff.Change) (inplace.Result, error) {
				time.Sleep(50 * time.Millisecond) // outlives the health wait
				return inplace.Result{Ref: c.Ref, Outcome: inplace.Succeeded}, nil
			},
			wantRoll: []inplace.Outcome{inplace.Succeeded, inplace.Succeeded}, wantHealth: apply.Healthy,
		},
		{
			name:    "without Wait, no health wait",
			health:  func(context.Context, <-chan struct{}) error { return errors.New("health waited for without Wait") },
			outcome: succeed, wantRoll: []inplace.Outcome{inplace.Succeeded, inplace.Succeeded}, wantHealth: apply.HealthNotChecked,
		},
		{
			name:     "a failed write starts no rollout",
			wait:     true,
			applyErr: errors.New("ConfigMap/shop/settings: server-side apply: refused"),
			health: func(context.Context, <-chan struct{}) error {
				return errors.New("health waited for after a failed write")
			},
			outcome: func(context.Context, diff.Change) (inplace.Result, error) {
				return inplace.Result{}, errors.New("rollout started after a failed write")
			},
			wantErr: errors.New("ConfigMap/shop/settings: server-side apply: refused"),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			bothStarted := make(chan struct{})
			eng := &engine{started: make(chan diff.Ref, 2), outcome: tc.outcome}
			go func() {
				for range 2 {
					select {
					case <-eng.started:
					case <-ctx.Done():
						return
					}
				}
				close(bothStarted)
			}()
			st := &stage{applyErr: tc.applyErr, health: func(ctx context.Context, _ []diff.Ref) error { return tc.health(ctx, bothStarted) }}
			r := &Reconciler{applier: st, engine: eng}
			opts := DefaultOptions()
			opts.Wait = tc.wait
			res, err := r.Apply(ctx, adversityPlan(), opts)
			if ctx.Err() != nil {
				t.Fatal("Apply did not end: the health wait and the rollouts wait for each other")
			}
			if (err == nil) != (tc.wantErr == nil) || err != nil && err.Error() != tc.wantErr.Error() {
				t.Fatalf("Apply: error %v, want %v", err, tc.wantErr)
			}
			var got []inplace.Outcome
			for _, ro := range res.Rollouts {
				got = append(got, ro.Outcome)
			}
			sort.Slice(got, func(i, j int) bool { return got[i] < got[j] })
			if d := cmp.Diff(tc.wantRoll, got); d != "" {
				t.Errorf("rollouts (-want +got):\n%s", d)
			}
			if tc.applyErr == nil && res.Apply.Health != tc.wantHealth {
				t.Errorf("health %q, want %q", res.Apply.Health, tc.wantHealth)
			}
			if tc.wait && tc.applyErr == nil {
				// The workload whose rollout is continued is the engine's to
				// judge, not the health wait's.
				want := []diff.Ref{ref("Deployment", "slow"), {Version: "v1", Kind: "ConfigMap", Namespace: "shop", Name: "settings"}}
				if d := cmp.Diff(want, st.waited); d != "" {
					t.Errorf("health waited for (-want +got):\n%s", d)
				}
			}
		})
	}
}

// keeper records what the reconciler hands the gate keeper.
type keeper struct {
	app       string
	workloads []*unstructured.Unstructured
}

func (k *keeper) Set(app string, ws []*unstructured.Unstructured) { k.app, k.workloads = app, ws }
func (k *keeper) Run(context.Context)                             {}

func TestApplyHandsTheGateKeeperTheAppsWorkloads(t *testing.T) {
	web := &unstructured.Unstructured{}
	web.SetAPIVersion("apps/v1")
	web.SetKind("Deployment")
	web.SetName("web") // no namespace in Git: the plan's ref has it
	settings := &unstructured.Unstructured{}
	settings.SetAPIVersion("v1")
	settings.SetKind("ConfigMap")
	settings.SetName("settings")
	plan := &diff.Plan{Changes: []diff.Change{
		{Ref: ref("Deployment", "web"), Action: diff.Unchanged, Desired: web},
		{Ref: diff.Ref{Version: "v1", Kind: "ConfigMap", Namespace: "shop", Name: "settings"}, Action: diff.Update, Desired: settings},
		{Ref: ref("Deployment", "gone"), Action: diff.Delete},
	}}
	k := &keeper{}
	r := &Reconciler{applier: &stage{}, engine: &engine{}, gates: k}
	opts := DefaultOptions()
	opts.App, opts.Wait = "shop", false
	if _, err := r.Apply(t.Context(), plan, opts); err != nil {
		t.Fatal(err)
	}
	if k.app != "shop" || len(k.workloads) != 1 || k.workloads[0].GetName() != "web" || k.workloads[0].GetNamespace() != "shop" {
		t.Errorf("gate keeper got app %q, %d workloads %v; want shop's Deployment web in namespace shop", k.app, len(k.workloads), k.workloads)
	}
	if web.GetNamespace() != "" {
		t.Error("the plan's desired object was changed")
	}
}
