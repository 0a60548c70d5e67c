package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/refit-gitops/refit/apply"
	"github.com/refit-gitops/refit/diff"
	"github.com/refit-gitops/refit/inplace"
	"github.com/refit-gitops/refit/reconcile"
)

type applyFlags struct {
	planFlags
	wait       bool
	allowEmpty bool
	timeout    time.Duration
	grace      time.Duration
}

func newApplyCommand() *cobra.Command {
	var f applyFlags
	cmd := &cobra.Command{
		Use:   "apply (--dir DIR | --repo URL [--ref REF]) [--path PATH]",
		Short: "Apply once: image-only workload changes in place, the rest with server-side apply",
		Long: `Apply renders PATH, plans it, and applies it: every object is validated by the
API server before anything is written; creations and structural changes are
server-side applied (CRDs and Namespaces first); workloads whose only change is
container images have their running Pods updated in place, in batches bounded
by their maxUnavailable, with live progress. Exit status 0 on success, 1 on
any failure.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.run(cmd.Context(), cmd.OutOrStdout())
		},
	}
	f.src.register(cmd.Flags())
	f.kube.register(cmd.Flags())
	cmd.Flags().StringVar(&f.app, "app", "", "app name: the inventory of what it applied, for pruning (default: derived from the folder or repository and the path)")
	cmd.Flags().StringVar(&f.policy, "policy", string(diff.InPlaceIfPossible), "update policy of workloads without the refit.dev/update-policy annotation")
	cmd.Flags().BoolVar(&f.wait, "wait", false, "wait until what was applied is healthy")
	cmd.Flags().BoolVar(&f.allowEmpty, "allow-empty", false, "with --prune, let a render with no object delete everything the app applied")
	cmd.Flags().BoolVar(&f.prune, "prune", false, "delete objects of this app that left Git")
	cmd.Flags().DurationVar(&f.timeout, "health-timeout", 5*time.Minute, "how long --wait waits")
	cmd.Flags().DurationVar(&f.grace, "grace", 3*time.Second, "default readiness-gate grace before a Pod is patched (refit.dev/grace-seconds overrides)")
	return cmd
}

func (f *applyFlags) run(ctx context.Context, out io.Writer) error {
	root, rev, err := f.src.checkout(ctx)
	if err != nil {
		return err
	}
	if rev != nil {
		fmt.Fprintf(out, "revision %s (%s)\n", rev.Commit, rev.URL)
	}
	cfg, ns, err := f.kube.config()
	if err != nil {
		return err
	}
	r, err := reconcile.New(cfg, f.kube.reconcileOptions(cfg, ns)...)
	if err != nil {
		return err
	}
	app, err := f.appName()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "app %s\n", app)
	opts := reconcile.DefaultOptions()
	opts.App, opts.Path, opts.Namespace = app, f.src.path, ns
	opts.DefaultPolicy, opts.AllowRemoteBases = diff.Policy(f.policy), f.src.allowRemoteBases
	opts.Prune, opts.Wait, opts.Timeout, opts.Log = f.prune, f.wait, f.timeout, out
	opts.AllowEmpty = f.allowEmpty
	opts.InPlace.Grace = f.grace
	// Run by hand, apply tries again images that failed and were rolled back.
	opts.InPlace.RetryRolledBack = true
	plan, err := r.Plan(ctx, root, opts)
	if err != nil {
		return err
	}
	// The plan as this apply carries it out; the apply itself gets every
	// deletion, so that what it does not prune stays in the inventory.
	shown, kept := previewed(plan, f.prune)
	writePlanText(out, shown, colours(out))
	writeKept(out, kept)
	// Gates of new Pods (and of Pods left False) are kept open while the
	// command runs, so that what it applies can become Ready.
	gateCtx, stopGates := context.WithCancel(ctx)
	gatesDone := make(chan struct{})
	go func() { defer close(gatesDone); r.KeepGates(gateCtx) }()
	defer func() { stopGates(); <-gatesDone }()
	res, err := r.Apply(ctx, plan, opts)
	if res != nil && res.Apply != nil {
		fmt.Fprintln(out, summary(res))
	}
	if err != nil {
		return err
	}
	if res.Failed() {
		return errors.New("apply failed: see above")
	}
	return nil
}

func summary(res *reconcile.Result) string {
	a := res.Apply
	var inPlace, pods, failed int
	for _, r := range res.Rollouts {
		switch r.Outcome {
		case inplace.Succeeded:
			inPlace++
			pods += r.Updated
		default:
			failed++
		}
	}
	return fmt.Sprintf("applied: %d created, %d configured, %d recreated, %d deleted, %d unchanged; in place: %d workloads (%d Pods), %d failed; health: %s",
		a.Count(apply.Created), a.Count(apply.Configured), a.Count(apply.Recreated), a.Count(apply.Deleted), a.Count(apply.Unchanged),
		inPlace, pods, failed, healthWord(a.Health))
}

func healthWord(h apply.Health) string {
	if h == apply.HealthNotChecked {
		return "not checked (use --wait)"
	}
	return string(h)
}
