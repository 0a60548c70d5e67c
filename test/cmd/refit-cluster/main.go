// Command refit-cluster builds, starts and stops refit's local test cluster:
// a real kube-apiserver, etcd, kube-controller-manager and kube-scheduler
// with kwok nodes (and optionally hollow kubelets). `make cluster` and
// `make cluster-down` call it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/refit-gitops/refit/test/cluster"
	"github.com/refit-gitops/refit/test/gitea"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "refit-cluster:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	opts := cluster.DefaultOptions()
	opts.Log = os.Stderr
	fs := flag.NewFlagSet("refit-cluster", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: refit-cluster [flags] up|down|tools  (tools: build the cluster binaries and Gitea)")
		fs.PrintDefaults()
	}
	fs.StringVar(&opts.Name, "name", opts.Name, "cluster name")
	fs.IntVar(&opts.Nodes, "nodes", opts.Nodes, "number of kwok nodes")
	fs.IntVar(&opts.PodsPerNode, "pods-per-node", opts.PodsPerNode, "Pod capacity of each kwok node")
	fs.DurationVar(&opts.StartDelay, "start-delay", opts.StartDelay, "simulated start time of a new container")
	fs.DurationVar(&opts.RestartDelay, "restart-delay", opts.RestartDelay, "simulated time of an in-place container restart")
	fs.DurationVar(&opts.PullDelay, "pull-delay", opts.PullDelay, "simulated pull time of an image a kwok node does not have yet (once per node; a node's annotation kwok.refit.dev/pull-delay overrides it)")
	fs.StringVar(&opts.BadImagePattern, "bad-image", opts.BadImagePattern, "regexp of images that fail to pull")
	hollow := fs.Int("hollow-nodes", 0, "number of hollow kubelet nodes (real kubelet, fake runtime) to add")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return fmt.Errorf("want one command, got %d", fs.NArg())
	}
	switch fs.Arg(0) {
	case "tools":
		dir, err := cluster.CacheDir()
		if err != nil {
			return err
		}
		if _, err = cluster.EnsureTools(ctx, dir, os.Stderr); err != nil {
			return err
		}
		// The e2e tests and the demo also run a real Git host.
		_, err = gitea.EnsureBinary(ctx, dir, os.Stderr)
		return err
	case "up":
		c, err := cluster.Start(ctx, opts)
		if err != nil {
			return err
		}
		for i := 0; i < *hollow; i++ {
			name := fmt.Sprintf("hollow-node-%d", i)
			if err := c.AddHollowNode(ctx, name); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "hollow node %s is Ready\n", name)
		}
		fmt.Printf("KUBECONFIG=%s\n", c.Kubeconfig)
		return nil
	case "down":
		return cluster.Stop(ctx, opts)
	default:
		fs.Usage()
		return fmt.Errorf("unknown command %q", fs.Arg(0))
	}
}
