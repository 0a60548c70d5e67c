package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
)

type reconcileAppFlags struct {
	kube    kubeFlags
	timeout time.Duration
}

func newReconcileCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "reconcile", Short: "Ask refit run to reconcile an App now"}
	var f reconcileAppFlags
	app := &cobra.Command{
		Use:   "app NAME [-n NAMESPACE]",
		Short: "Reconcile an App object now and wait until refit has handled the request",
		Long: `Sets the App's refit.dev/reconcile-at annotation to the current time and waits
until refit run has handled it (status.lastHandledReconcileAt), then prints the
App's Ready condition. Fails if it was not handled within --timeout or the App
is not Ready.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.run(cmd.Context(), cmd.OutOrStdout(), args[0])
		},
	}
	f.kube.register(app.Flags())
	app.Flags().DurationVar(&f.timeout, "timeout", 5*time.Minute, "how long to wait for refit to handle the request")
	cmd.AddCommand(app)
	return cmd
}

func (f *reconcileAppFlags) run(ctx context.Context, out io.Writer, name string) error {
	cfg, ns, err := f.kube.config()
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	apps := dyn.Resource(appsGVR).Namespace(ns)
	at := time.Now().UTC().Format(time.RFC3339Nano)
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{reconcileAtAnnotation: at}}})
	if err != nil {
		return err
	}
	if _, err := apps.Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("app %s/%s: %w", ns, name, err)
	}
	fmt.Fprintf(out, "► annotating App %s/%s with %s=%s\n", ns, name, reconcileAtAnnotation, at)
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		u, err := apps.Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			obj, err := appOf(u)
			if err != nil {
				return err
			}
			if obj.Status.LastHandledReconcileAt == at {
				if r := readyOf(obj.Status.Conditions, obj.Generation); r != nil {
					fmt.Fprintf(out, "✔ App %s/%s reconciled: %s\n", ns, name, r.Message)
					return nil
				}
				if c := meta.FindStatusCondition(obj.Status.Conditions, "Stalled"); c != nil && c.Status == metav1.ConditionTrue && c.ObservedGeneration == obj.Generation {
					return fmt.Errorf("app %s/%s: reconciled, not ready: %s: %s", ns, name, c.Reason, c.Message)
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("app %s/%s: reconcile request %s not handled within %s", ns, name, at, f.timeout)
		case <-tick.C:
		}
	}
}

// readyOf is the App's Ready condition once it is True for generation
// (a Stalled App ends the wait with an error; one still progressing is
// waited on until the timeout).
func readyOf(conds []metav1.Condition, gen int64) *metav1.Condition {
	for i, c := range conds {
		if c.Type == "Ready" && c.ObservedGeneration == gen && c.Status == metav1.ConditionTrue {
			return &conds[i]
		}
	}
	return nil
}
