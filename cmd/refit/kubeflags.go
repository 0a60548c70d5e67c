package main

import (
	"fmt"
	"strings"

	"github.com/spf13/pflag"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/rest"

	"github.com/refit-gitops/refit/reconcile"
)

// kubeFlags are kubectl's connection flags (cli-runtime's ConfigFlags:
// --kubeconfig, --context, --cluster, --user, -n, --server, TLS files,
// --as, --as-group, --as-uid, --as-user-extra, --request-timeout …) and
// refit's client rate limit.
type kubeFlags struct {
	cf    *genericclioptions.ConfigFlags
	qps   float32
	burst int
}

func (f *kubeFlags) register(fl *pflag.FlagSet) {
	f.cf = genericclioptions.NewConfigFlags(false)
	// --token and --cache-dir are the Git source's (sourceFlags): the API
	// server's token is --kube-token, and refit keeps no discovery cache
	// on disk.
	token := f.cf.BearerToken
	f.cf.BearerToken, f.cf.CacheDir = nil, nil
	f.cf.AddFlags(fl)
	f.cf.BearerToken = token
	fl.StringVar(token, "kube-token", "", "bearer token for the API server (--token is the Git host's)")
	// The API server's priority and fairness protects it; a low client-side
	// limit only makes a large plan slow (1,000 dry-runs at 100/s: 10 s).
	fl.Float32Var(&f.qps, "qps", 500, "API requests per second refit may send")
	fl.IntVar(&f.burst, "burst", 1000, "API request burst")
}

// config loads the client configuration and the default namespace. With
// --as, every request made through the config is made as that identity.
func (f *kubeFlags) config() (*rest.Config, string, error) {
	imp, err := f.impersonation()
	if err != nil {
		return nil, "", err
	}
	// The loader is asked without the impersonation: with it, the merged
	// config never equals the default one, so in a Pod the in-cluster
	// config would be passed over (and that one ignores --as anyway).
	as, uid, groups, extra := f.cf.Impersonate, f.cf.ImpersonateUID, f.cf.ImpersonateGroup, f.cf.ImpersonateUserExtra
	f.cf.Impersonate, f.cf.ImpersonateUID, f.cf.ImpersonateGroup, f.cf.ImpersonateUserExtra = nil, nil, nil, nil
	cc := f.cf.ToRawKubeConfigLoader()
	f.cf.Impersonate, f.cf.ImpersonateUID, f.cf.ImpersonateGroup, f.cf.ImpersonateUserExtra = as, uid, groups, extra
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = f.qps, f.burst
	if impersonates(imp) {
		cfg.Impersonate = imp // else the kubeconfig's own, if it names one
	}
	ns, _, err := cc.Namespace()
	if err != nil || ns == "" {
		ns = "default"
	}
	return cfg, ns, nil
}

// impersonation is what --as, --as-uid, --as-group and --as-user-extra ask.
func (f *kubeFlags) impersonation() (rest.ImpersonationConfig, error) {
	var imp rest.ImpersonationConfig
	if f.cf.Impersonate != nil {
		imp.UserName = *f.cf.Impersonate
	}
	if f.cf.ImpersonateUID != nil {
		imp.UID = *f.cf.ImpersonateUID
	}
	if f.cf.ImpersonateGroup != nil {
		imp.Groups = append(imp.Groups, *f.cf.ImpersonateGroup...)
	}
	if f.cf.ImpersonateUserExtra != nil {
		for _, kv := range *f.cf.ImpersonateUserExtra {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return imp, fmt.Errorf("--as-user-extra %q: want KEY=VALUE", kv)
			}
			if imp.Extra == nil {
				imp.Extra = map[string][]string{}
			}
			imp.Extra[k] = append(imp.Extra[k], v)
		}
	}
	if imp.UserName == "" && (imp.UID != "" || len(imp.Groups) > 0 || len(imp.Extra) > 0) {
		// The API server refuses such a request; say so before any.
		return imp, fmt.Errorf("--as-group, --as-uid and --as-user-extra need --as")
	}
	return imp, nil
}

// reconcileOptions place the app's own state where its identity may write
// it: with --as, the inventory lives in the app's namespace ns (a tenant
// that may write only there can still prune); without, in refit-system.
func (f *kubeFlags) reconcileOptions(cfg *rest.Config, ns string) []reconcile.Option {
	if !impersonates(cfg.Impersonate) {
		return nil
	}
	return []reconcile.Option{reconcile.WithInventoryNamespace(ns)}
}

func impersonates(imp rest.ImpersonationConfig) bool {
	return imp.UserName != ""
}
