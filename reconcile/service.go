package reconcile

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/refit-gitops/refit/source"
	"github.com/refit-gitops/refit/story"
)

// ServiceOptions configure Serve.
type ServiceOptions struct {
	// Listen is the HTTP address for webhooks (Hooks), /metrics, /healthz
	// and /readyz; empty serves nothing.
	Listen  string
	Hooks   http.Handler // mounted at /hook/
	Metrics http.Handler // mounted at /metrics
	// HTTP bounds the server on Listen and can move /metrics to an address
	// of its own; zero fields take DefaultHTTPOptions.
	HTTP HTTPOptions
	// LeaderElection: only the holder of a Lease acts. A new leader simply
	// starts its loops: an interrupted in-place rollout is on the objects
	// and continues.
	LeaderElection bool
	LeaseNamespace string
	LeaseName      string
	Identity       string
	Client         kubernetes.Interface // for the Lease
	// AppReconcilers maps an app's name to the Reconciler of its own
	// identity (see For); the other apps run with the Reconciler Serve is
	// called on.
	AppReconcilers map[string]*Reconciler
	// Story, if set, receives every event of every app (the browser view)
	// besides the log, which records each one.
	Story story.Sink
	// Sources, if set, runs while the apps run (while leading): the shared
	// pollers their Poller fields subscribe to (*source.Hub).
	Sources Runner
	// Concurrent bounds how many apps plan or apply at once (0:
	// DefaultConcurrent).
	Concurrent int
	// Controller, if set, runs while the apps run and starts more apps as
	// it finds them (App objects), each until its own context ends.
	Controller Controller
}

// Runner is something that runs until ctx ends.
type Runner interface {
	Run(ctx context.Context)
}

var _ Runner = (*source.Hub)(nil)

// Serve runs the apps until ctx ends (or, with leader election, until
// leadership is lost: the process should then exit and restart, as
// controllers do, so no two loops ever act at once).
func (r *Reconciler) Serve(ctx context.Context, apps []App, opts ServiceOptions) error {
	log := logr.FromContextOrDiscard(ctx)
	var ready atomic.Bool
	srvErr := make(chan error, 1)
	if opts.Listen != "" {
		srv, addr, err := serveHTTP(opts, &ready, srvErr)
		if err != nil {
			return err
		}
		log.Info("serving", "address", addr)
		defer func() {
			shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(shutdown)
		}()
	}
	slots := newPool(opts.Concurrent)
	runApps := func(ctx context.Context) {
		ready.Store(true)
		var wg sync.WaitGroup
		if opts.Sources != nil {
			wg.Go(func() { opts.Sources.Run(ctx) })
		}
		wg.Go(func() { r.WatchInventories(ctx) })
		for _, rec := range r.keepers(apps, opts.AppReconcilers) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rec.KeepGates(ctx) // one keeper per identity, while leading
			}()
		}
		if opts.Controller != nil {
			wg.Go(func() { r.KeepGates(ctx) })
			wg.Go(func() { opts.Controller.Run(ctx, r.starter(opts, slots)) })
		}
		for _, app := range apps {
			rec := r.of(app.Name, opts.AppReconcilers)
			if opts.Story != nil {
				app.Options.Story = story.Sinks{app.Options.Story, opts.Story}
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				rec.runApp(ctx, app, pooled{pipeline: rec, pool: slots})
			}()
		}
		wg.Wait()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if !opts.LeaderElection {
			runApps(ctx)
			return
		}
		r.lead(ctx, opts, runApps)
	}()
	select {
	case <-done:
		if opts.LeaderElection && ctx.Err() == nil {
			return errors.New("leadership lost")
		}
		return nil
	case err := <-srvErr:
		return err
	}
}

// of is the Reconciler app runs with.
func (r *Reconciler) of(app string, own map[string]*Reconciler) *Reconciler {
	if rec := own[app]; rec != nil {
		return rec
	}
	return r
}

// keepers are the Reconcilers apps run with, each once: each keeps the
// gates of its own apps' workloads, as its identity.
func (r *Reconciler) keepers(apps []App, own map[string]*Reconciler) []*Reconciler {
	var out []*Reconciler
	seen := map[*Reconciler]bool{}
	for _, app := range apps {
		if rec := r.of(app.Name, own); !seen[rec] {
			seen[rec] = true
			out = append(out, rec)
		}
	}
	return out
}

func (r *Reconciler) lead(ctx context.Context, opts ServiceOptions, run func(context.Context)) {
	log := logr.FromContextOrDiscard(ctx)
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1ObjectMeta(opts.LeaseNamespace, opts.LeaseName),
		Client:     opts.Client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: opts.Identity},
	}
	leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
		Lock:            lock,
		ReleaseOnCancel: true,
		LeaseDuration:   15 * time.Second,
		RenewDeadline:   10 * time.Second,
		RetryPeriod:     2 * time.Second,
		Name:            opts.LeaseName,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				log.Info("leading", "identity", opts.Identity)
				run(ctx)
			},
			OnStoppedLeading: func() { log.Info("no longer leading", "identity", opts.Identity) },
			OnNewLeader: func(id string) {
				if id != opts.Identity {
					log.Info("following", "leader", id)
				}
			},
		},
	})
}

func metav1ObjectMeta(namespace, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: namespace, Name: name}
}
