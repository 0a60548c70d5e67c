// Command refit is the CLI and service of refit, a GitOps reconciler that
// ships image-only changes to running workloads as in-place Pod updates.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	"k8s.io/klog/v2"
)

// Set at build time by the Makefile (-ldflags -X).
var (
	version = "dev"
	commit  = "unknown"
)

func main() {
	// client-go logs through klog; refit reports errors itself.
	klog.SetLogger(logr.Discard())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCommand().ExecuteContext(ctx)
	stop()
	if err != nil {
		if !errors.Is(err, errChanges) {
			fmt.Fprintln(os.Stderr, "refit:", err)
		}
		os.Exit(exitCode(err))
	}
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "refit",
		Short:         "GitOps reconciler that updates workload images in place",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newVersionCommand())
	root.AddCommand(newRenderCommand())
	root.AddCommand(newPlanCommand())
	root.AddCommand(newApplyCommand())
	root.AddCommand(newRunCommand())
	root.AddCommand(newReconcileCommand())
	return root
}

// exitStatus lets a command choose its exit code (plan exits 2 when there
// are changes) while still returning an error to main.
type exitStatus struct {
	code int
	err  error
}

func (e *exitStatus) Error() string { return e.err.Error() }
func (e *exitStatus) Unwrap() error { return e.err }

func exitCode(err error) int {
	var es *exitStatus
	if errors.As(err, &es) {
		return es.code
	}
	return 1
}
