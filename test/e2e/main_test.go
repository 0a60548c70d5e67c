//go:build e2e

// Package e2e holds refit's end-to-end tests. They run against a real control
// plane (kube-apiserver, etcd, kube-controller-manager, kube-scheduler) with
// kwok nodes and one hollow kubelet, started once for the package by TestMain
// and stopped afterwards, also on SIGINT/SIGTERM. A run killed outright leaves
// its cluster behind; the next run removes it.
package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/refit-gitops/refit/test/cluster"
)

// bed is the cluster shared by the tests of this package; each test works in
// a namespace of its own.
var bed *cluster.Cluster

const hollowNode = "hollow-node-0"

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	// Listing the tests (test/e2e-shards.sh deals them) needs no cluster.
	flag.Parse()
	if f := flag.Lookup("test.list"); f != nil && f.Value.String() != "" {
		return m.Run()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()

	opts := cluster.DefaultOptions()
	opts.Name = cluster.EphemeralName("e2e")
	opts.Ephemeral = true
	opts.Log = os.Stderr
	opts.RestartDelay = 2 * time.Second

	var err error
	bed, err = cluster.Start(ctx, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: start cluster:", err)
		return 1
	}
	stopped := make(chan struct{})
	stop := func() {
		select {
		case <-stopped:
			return
		default:
			close(stopped)
		}
		stopCtx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := bed.Stop(stopCtx); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: stop cluster:", err)
		}
	}
	defer stop()

	// An interrupted run (Ctrl-C, go test -timeout's SIGQUIT is not
	// catchable safely, CI's SIGTERM) still stops every process.
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig := <-signals
		fmt.Fprintf(os.Stderr, "e2e: %s: stopping cluster %s\n", sig, bed.Name)
		stop()
		os.Exit(130)
	}()

	if err := bed.AddHollowNode(ctx, hollowNode); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	return m.Run()
}
