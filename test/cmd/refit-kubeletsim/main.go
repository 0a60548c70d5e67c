// Command refit-kubeletsim acts for the kubelet of the local cluster's kwok
// nodes where one Pod's Stages cannot: image pulls once per node (with
// status.images) and pods/resize. The cluster package builds it from this
// module and starts and stops it with the cluster; see test/cluster/kubeletsim.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"regexp"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/refit-gitops/refit/test/cluster/kubeletsim"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "refit-kubeletsim:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("refit-kubeletsim", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "admin kubeconfig of the cluster")
	badImage := fs.String("bad-image", "", "regexp of images that fail to pull")
	opts := kubeletsim.Options{Workers: 4, Log: os.Stderr}
	fs.DurationVar(&opts.PullDelay, "pull-delay", 0, "pull time of an image a node does not have")
	fs.DurationVar(&opts.ResizeActuation, "resize-actuation", 300*time.Millisecond, "how long a resize that restarts nothing stays in progress")
	if err := fs.Parse(args); err != nil {
		return err
	}
	bad, err := regexp.Compile(*badImage)
	if err != nil || *badImage == "" {
		return fmt.Errorf("--bad-image %q is not a regexp", *badImage)
	}
	opts.BadImage = bad
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return fmt.Errorf("load kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = 500, 1000
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go exitWithCluster(ctx, cancel, *kubeconfig)
	return kubeletsim.Run(ctx, client, opts)
}

// exitWithCluster ends the simulator once its cluster's kubeconfig is gone:
// a cluster removed by anything but this module's Stop (kwokctl delete, an
// older checkout reaping a dead test's cluster) must not leave it behind.
func exitWithCluster(ctx context.Context, cancel context.CancelFunc, kubeconfig string) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
		if _, err := os.Stat(kubeconfig); os.IsNotExist(err) {
			fmt.Fprintln(os.Stderr, "refit-kubeletsim: the cluster is gone:", kubeconfig)
			cancel()
			return
		}
	}
}
