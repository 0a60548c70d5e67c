package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/refit-gitops/refit/config"
	"github.com/refit-gitops/refit/reconcile"
	"github.com/refit-gitops/refit/web"
)

type runFlags struct {
	src            sourceFlags
	kube           kubeFlags
	configFile     string
	app            string
	interval       time.Duration
	driftInterval  time.Duration
	prune          bool
	listen         string
	metricsListen  string
	pprof          bool
	viewTokenFile  string
	leaderElect    bool
	leaseNamespace string
	identity       string
	defaultSA      string
	logFormat      string
	verbosity      int
	grace          time.Duration
	healthTimeout  time.Duration
	concurrent     int
	watchNS        string
	allowLocal     bool
	shard          shardFlags
}

func newRunCommand() *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run [--config FILE | --repo URL [--ref REF] [--path PATH] [--interval D] | --watch-namespace NS]",
		Short: "Keep the cluster in sync with Git: the refit service",
		Long: `Run polls each app's Git ref (a cheap ref listing; webhooks at /hook/<app>
poll at once), and on a new commit renders, plans and applies it: image-only
workload changes in place, the rest with server-side apply. It reports every
commit's outcome to the Git host, corrects drift at a slower interval, and
serves /metrics, /healthz and /readyz. With neither --config nor --repo it
runs the App objects (apps.refit.dev) of the cluster and writes their status.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.run(cmd.Context(), cmd.ErrOrStderr())
		},
	}
	fl := cmd.Flags()
	f.src.register(fl)
	f.kube.register(fl)
	fl.StringVar(&f.configFile, "config", "", "config file (apiVersion refit.dev/v1alpha1, kind Config)")
	fl.StringVar(&f.app, "app", "default", "app name, with --repo")
	fl.DurationVar(&f.interval, "interval", time.Minute, "poll interval, with --repo")
	fl.DurationVar(&f.driftInterval, "drift-interval", 0, "how often to correct drift without a new commit (default 10 × interval)")
	fl.BoolVar(&f.prune, "prune", true, "delete objects that left Git, with --repo")
	fl.StringVar(&f.listen, "listen", ":8080", "HTTP address for webhooks, metrics, probes and the live view at / (empty: none)")
	fl.StringVar(&f.viewTokenFile, "view-token-file", "", "file holding the bearer token the live view requires (default: open)")
	fl.StringVar(&f.metricsListen, "metrics-listen", "", "serve /metrics on this address instead of --listen")
	fl.BoolVar(&f.pprof, "pprof", false, "serve Go's CPU and memory profiles at /debug/pprof/ on --listen (for diagnosis; off by default)")
	fl.BoolVar(&f.leaderElect, "leader-elect", false, "act only while holding the leader Lease (for several replicas)")
	fl.StringVar(&f.leaseNamespace, "leader-election-namespace", "", "namespace of the Lease (leader election, or the --shard members' and locks') and of referenced Secrets (default: $POD_NAMESPACE, then refit-system)")
	fl.StringVar(&f.identity, "identity", "", "leader election identity, or this replica's name with --shard (default: $POD_NAME with --shard, then the hostname)")
	fl.StringVar(&f.defaultSA, "default-service-account", "", "ServiceAccount (in the app's namespace) that apps naming no serviceAccountName act as (default: refit's own identity)")
	fl.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fl.IntVarP(&f.verbosity, "v", "v", 0, "log verbosity")
	fl.DurationVar(&f.grace, "grace", 3*time.Second, "default readiness-gate grace before a Pod is patched")
	fl.DurationVar(&f.healthTimeout, "health-timeout", 5*time.Minute, "health wait per reconciliation, with --repo")
	fl.StringVar(&f.watchNS, "watch-namespace", "", "with neither --config nor --repo: watch the App objects of this namespace only (default: all)")
	fl.BoolVar(&f.allowLocal, "allow-local-sources", false, "let App objects name local repositories (file://) and files on refit's filesystem (tests and demos outside a cluster; never in a shared cluster)")
	f.shard.register(fl)
	fl.IntVar(&f.concurrent, "concurrent", reconcile.DefaultConcurrent, "how many apps may plan or apply at once")
	return cmd
}

func (f *runFlags) run(ctx context.Context, stderr io.Writer) error {
	log := newLogger(stderr, f.logFormat, f.verbosity)
	ctx = logr.NewContext(ctx, log)
	// client-go (leader election, the event broadcaster, reflectors) logs
	// through klog: the service shows its trouble in the same records.
	klog.SetLogger(log.WithName("client-go"))
	cfg, ns, err := f.kube.config()
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	homeNS := f.leaseNamespace
	if homeNS == "" {
		if homeNS = os.Getenv("POD_NAMESPACE"); homeNS == "" {
			homeNS = "refit-system"
		}
	}
	// With neither a config file nor a repository, the apps are the
	// cluster's App objects.
	watchApps := f.watchAppsMode()
	var apps []config.App
	if !watchApps {
		if apps, err = f.appConfigs(ns); err != nil {
			return err
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	recorder := broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "refit"})
	r, err := reconcile.New(cfg, reconcile.WithMetrics(reg), reconcile.WithEvents(recorder))
	if err != nil {
		return err
	}
	if err := checkServiceAccountName(f.defaultSA); err != nil {
		return fmt.Errorf("--default-service-account: %w", err)
	}
	ids := &identities{base: r, cfg: cfg, defaultSA: f.defaultSA}
	defer ids.stop()
	if f.concurrent <= 0 {
		return fmt.Errorf("--concurrent %d: must be at least 1", f.concurrent)
	}
	wiring := &appWiring{client: client, secretsNS: homeNS, cacheDir: f.src.cacheDir, grace: f.grace, flags: &f.src, ids: ids,
		secretReaders: newSecretClients(cfg), objects: watchApps}
	built, err := wiring.build(ctx, apps)
	if err != nil {
		return err
	}
	identity := f.identity
	if identity == "" {
		identity, _ = os.Hostname()
	}
	// The live view draws the events the log records (served on --listen).
	vopts := web.DefaultOptions()
	if f.viewTokenFile != "" {
		b, err := os.ReadFile(f.viewTokenFile)
		if err != nil {
			return fmt.Errorf("--view-token-file: %w", err)
		}
		if vopts.Token = strings.TrimSpace(string(b)); vopts.Token == "" {
			return fmt.Errorf("--view-token-file %s: empty", f.viewTokenFile)
		}
	}
	view := web.New(vopts)
	var ctrl reconcile.Controller
	if watchApps {
		ac, err := f.appController(ctx, cfg, client, wiring, r, recorder)
		if err != nil {
			return err
		}
		if ac.member, err = f.newShardMember(client, homeNS); err != nil {
			return err
		}
		if built.hooks, err = ac.serveHooks(f.listen != ""); err != nil {
			return err
		}
		ctrl = ac
	}
	return r.Serve(ctx, built.apps, reconcile.ServiceOptions{
		Listen: f.listen, Hooks: built.hooks, Metrics: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
		HTTP:           reconcile.HTTPOptions{MetricsListen: f.metricsListen, View: view, Profile: f.pprof},
		Story:          view,
		LeaderElection: f.leaderElect, LeaseNamespace: homeNS, LeaseName: "refit-leader", Identity: identity, Client: client,
		AppReconcilers: built.own,
		Sources:        built.sources, Concurrent: f.concurrent, Controller: ctrl,
	})
}

// watchAppsMode: with neither a config file nor a repository, the apps
// are the cluster's App objects.
func (f *runFlags) watchAppsMode() bool {
	return f.configFile == "" && f.src.repo == "" && f.src.dir == ""
}

// appConfigs reads --config, or makes one app of the --repo flags.
func (f *runFlags) appConfigs(namespace string) ([]config.App, error) {
	if f.configFile != "" {
		if f.src.repo != "" || f.src.dir != "" {
			return nil, errors.New("set --config or --repo, not both")
		}
		cfg, err := config.Load(f.configFile)
		if err != nil {
			return nil, err
		}
		return cfg.Apps, nil
	}
	if f.src.repo == "" {
		return nil, errors.New("set --config FILE, or --repo URL for one app")
	}
	prune := f.prune
	app := config.App{
		Name:   f.app,
		Source: config.Source{URL: f.src.repo, Ref: f.src.ref, SSHKeyFile: f.src.sshKey, KnownHostsFile: f.src.knownHosts},
		Path:   f.src.path, Namespace: namespace, Prune: &prune,
		Interval: config.Duration{Duration: f.interval}, DriftInterval: config.Duration{Duration: f.driftInterval},
		Timeout: config.Duration{Duration: f.healthTimeout},
	}
	app.Defaults()
	if err := app.Validate(); err != nil {
		return nil, fmt.Errorf("app %s: %w", app.Name, err)
	}
	return []config.App{app}, nil
}

func newLogger(w io.Writer, format string, verbosity int) logr.Logger {
	opts := &slog.HandlerOptions{Level: slog.Level(-verbosity)}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if format == "json" {
		h = slog.NewJSONHandler(w, opts)
	}
	return logr.FromSlogHandler(h)
}
