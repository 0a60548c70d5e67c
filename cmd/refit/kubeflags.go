package main

import (
	"fmt"

	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// kubeFlags are kubectl's connection flags.
type kubeFlags struct {
	kubeconfig, context, namespace string
	qps                            float32
	burst                          int
}

func (f *kubeFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
	fl.StringVar(&f.context, "context", "", "kubeconfig context to use")
	fl.StringVarP(&f.namespace, "namespace", "n", "", "namespace for objects that name none (default: the context's)")
	// The API server's priority and fairness protects it; a low client-side
	// limit only makes a large plan slow (1,000 dry-runs at 100/s: 10 s).
	fl.Float32Var(&f.qps, "qps", 500, "API requests per second refit may send")
	fl.IntVar(&f.burst, "burst", 1000, "API request burst")
}

// config loads the client configuration and the default namespace.
func (f *kubeFlags) config() (*rest.Config, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if f.kubeconfig != "" {
		rules.ExplicitPath = f.kubeconfig
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: f.context})
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = f.qps, f.burst
	ns := f.namespace
	if ns == "" {
		if ns, _, err = cc.Namespace(); err != nil || ns == "" {
			ns = "default"
		}
	}
	return cfg, ns, nil
}
